package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// The tests run the real command: the test binary re-executes itself as
// `tally` when this variable is set.
const runMainEnv = "TALLY_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Args = append([]string{"tally"}, strings.Fields(os.Getenv("TALLY_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(stripemock.Run(m))
}

// tally prepares `tally args...` run in dir with only the given environment.
func tally(t *testing.T, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A command that should have exited but serves instead fails the test
	// rather than hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, exe)
	cmd.Dir = dir
	// Tests never bind a fixed port: a server the README started on the
	// default address must not fail them. A case's own TALLY_ADDR (later in
	// the list) wins.
	cmd.Env = append([]string{runMainEnv + "=1", "TALLY_TEST_ARGS=" + strings.Join(args, " "), "PATH=" + os.Getenv("PATH"), "TALLY_ADDR=127.0.0.1:0"}, env...)
	return cmd
}

func run(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := tally(t, dir, env, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code = 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

func TestBadConfigurationIsOneLineAndNonZeroExit(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Not defer: the parallel subtests run after this function returns.
	t.Cleanup(func() { taken.Close() })
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"bad database url", []string{"DATABASE_URL=mysql://x"}, []string{"serve"}, 1, "DATABASE_URL"},
		{"missing sqlite directory", []string{"DATABASE_URL=/no/such/dir/t.db"}, []string{"serve"}, 1, "DATABASE_URL"},
		{"unreachable postgres", []string{"DATABASE_URL=postgres://u@127.0.0.1:1/db"}, []string{"serve", "--addr", "127.0.0.1:0"}, 1, "cannot reach the database"},
		{"unknown log level", []string{"TALLY_LOG_LEVEL=loud"}, []string{"serve"}, 1, "TALLY_LOG_LEVEL"},
		{"bad address", []string{"TALLY_ADDR=nope"}, []string{"serve"}, 1, "TALLY_ADDR"},
		{"port in use", nil, []string{"serve", "--addr", taken.Addr().String()}, 1, "address already in use (is another tally serve running? choose another address with --addr or TALLY_ADDR)"},
		{"port in use, named by the flag", nil, []string{"serve", "--addr", taken.Addr().String()}, 1, "tally: --addr: cannot listen"},
		{"port in use, named by the variable", []string{"TALLY_ADDR=" + taken.Addr().String()}, []string{"serve"}, 1, "tally: TALLY_ADDR: cannot listen"},
		{"bad --addr is named as the flag", nil, []string{"serve", "--addr", "8081"}, 2, `--addr: "8081" is not host:port`},
		{"bad --addr wins over a good variable", []string{"TALLY_ADDR=127.0.0.1:0"}, []string{"serve", "--addr", "8081"}, 2, "--addr"},
		{"bad --log-level", nil, []string{"serve", "--log-level", "loud"}, 2, "--log-level: unknown level"},
		{"bad --env", nil, []string{"token", "--sub", "a", "--env", "prod"}, 2, "--env: unknown value"},
		{"bad --database-url", nil, []string{"migrate", "status", "--database-url", "mysql://x"}, 2, "--database-url"},
		{"production without secrets", []string{"TALLY_ENV=production"}, []string{"serve"}, 1, "TALLY_JWT_SECRET"},
		{"unknown flag", nil, []string{"serve", "--nope"}, 2, "unknown flag"},
		{"bad down count", nil, []string{"migrate", "down", "x"}, 2, "whole number"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate" for "tally"`},
		{"unknown command near a known one", nil, []string{"serv"}, 2, `did you mean "serve"?`},
		{"unknown migrate subcommand", nil, []string{"migrate", "frob"}, 2, `unknown command "frob" for "tally migrate"`},
		{"unknown simulate subcommand", nil, []string{"simulate", "buy"}, 2, `unknown command "buy" for "tally simulate"`},
		{"migrate without a subcommand", nil, []string{"migrate"}, 2, "tally migrate needs a subcommand: down, new, status, up"},
		{"simulate without a subcommand", nil, []string{"simulate"}, 2, "tally simulate needs a subcommand"},
		{"bad flag value", nil, []string{"token", "--sub", "a", "--ttl", "soon"}, 2, "--ttl"},
		{"extra argument", nil, []string{"serve", "now"}, 2, "unknown command"},
		{"health of a bad address", nil, []string{"health", "--addr", "8081"}, 2, "--addr"},
		{"health of a bad TALLY_ADDR", []string{"TALLY_ADDR=nope"}, []string{"health"}, 2, "TALLY_ADDR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, stderr, code := run(t, t.TempDir(), c.env, c.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != c.code || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d (want %d), stderr:\n%s\nwant one line mentioning %q", code, c.code, stderr, c.want)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the server did not become ready in 30s")
}

// TestServeLifecycle starts the real server as a new user would, checks it
// answers, and stops it with SIGTERM: it must exit cleanly.
func TestServeLifecycle(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var env []string
			if kind == testdb.Postgres {
				env = append(env, "DATABASE_URL="+testdb.NewEmpty(t, kind).URL)
			}
			addr := freeAddr(t)
			cmd := tally(t, dir, env, "serve", "--addr", addr)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			base := "http://" + addr
			waitReady(t, base)
			// The container's health check: ready while serving.
			if out, stderr, code := run(t, dir, nil, "health", "--addr", addr); code != 0 || strings.TrimSpace(out) != "ready" {
				t.Errorf("tally health on a ready server: exit %d, %q %q", code, out, stderr)
			}

			resp, err := http.Post(base+"/graphql", "application/json", strings.NewReader(`{"query":"{ creditPackages { name } }"}`))
			if err != nil {
				t.Fatal(err)
			}
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if !strings.Contains(body.String(), `"Starter"`) {
				t.Fatalf("demo packs not served: %s", body.String())
			}
			if kind == testdb.SQLite {
				if _, err := os.Stat(filepath.Join(dir, "tally.db")); err != nil {
					t.Errorf("no tally.db in the working directory: %v", err)
				}
			}

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no exit within 30s of SIGTERM")
			}
			// Nothing listens any more: not ready, exit 1, one line.
			if _, stderr, code := run(t, dir, nil, "health", "--addr", addr); code != 1 || !strings.HasPrefix(stderr, "tally: not ready") {
				t.Errorf("tally health after shutdown: exit %d, %q", code, stderr)
			}
			// The output buffers are complete (and safe to read) once Wait returned.
			if !strings.Contains(stderr.String(), "playground: "+base+"/") {
				t.Errorf("the playground address is not printed:\n%s", stderr.String())
			}
			if !strings.Contains(stdout.String(), `"msg":"shutting down"`) {
				t.Errorf("no shutdown log line:\n%s", stdout.String())
			}
		})
	}
}

// TestMigrateCommands drives `tally migrate` on each database.
func TestMigrateCommands(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			url := filepath.Join(dir, "m.db")
			if kind == testdb.Postgres {
				url = testdb.NewEmpty(t, kind).URL
			}
			env := []string{"DATABASE_URL=" + url}
			step := func(args ...string) string {
				t.Helper()
				out, stderr, code := run(t, dir, env, args...)
				if code != 0 {
					t.Fatalf("tally %s: exit %d: %s", strings.Join(args, " "), code, stderr)
				}
				return out
			}
			out := step("migrate", "status")
			total := strings.Count(out, "pending ")
			if total < 2 || !strings.Contains(out, fmt.Sprintf("0 applied, %d pending", total)) {
				t.Fatalf("status on an empty database:\n%s", out)
			}
			if out = step("migrate", "up"); strings.Count(out, "applied ") != total {
				t.Fatalf("up:\n%s", out)
			}
			if out = step("migrate", "up"); !strings.Contains(out, "nothing to do") {
				t.Fatalf("second up:\n%s", out)
			}
			if out = step("migrate", "down"); strings.Count(out, "reverted ") != 1 {
				t.Fatalf("down:\n%s", out)
			}
			if out = step("migrate", "status"); !strings.Contains(out, fmt.Sprintf("%d applied, 1 pending", total-1)) {
				t.Fatalf("status after down:\n%s", out)
			}
			if out = step("migrate", "down", "--all"); strings.Count(out, "reverted ") != total-1 {
				t.Fatalf("down --all:\n%s", out)
			}
			if out = step("migrate", "up"); strings.Count(out, "applied ") != total {
				t.Fatalf("up after down --all:\n%s", out)
			}
			if out = step("migrate", "status"); !strings.Contains(out, fmt.Sprintf("%d applied, 0 pending", total)) {
				t.Fatalf("final status:\n%s", out)
			}
		})
	}
}
