package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tallyServer is the Tally server under test, a child process of its own,
// so that its memory and CPU are measured apart from the load generator's.
type tallyServer struct {
	cmd     *exec.Cmd
	pid     int
	baseURL string
	exited  chan struct{}
	waitErr error
	output  *cappedWriter
}

// buildTally compiles cmd/tally from the module the harness runs in, into
// dir. The build is the one a deployment would run (no race detector, no
// coverage), so that what is measured is what ships.
func buildTally(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module (go env GOMOD): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the Tally module: run tallybench from the repository, or pass --tally")
	}
	bin := filepath.Join(dir, "tally")
	started := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tally")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building cmd/tally: %w\n%s", err, out)
	}
	logf("built %s in %.1fs", bin, time.Since(started).Seconds())
	return bin, nil
}

// freePort asks the kernel for a loopback port that is free now. Another
// process could take it before the server does; the server then fails to
// start and the harness says so, which is good enough for a benchmark.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// startTally runs `tally serve` with env on top of the harness's own
// environment and waits until /readyz answers 200.
func startTally(ctx context.Context, bin string, env map[string]string) (*tallyServer, error) {
	addr, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("finding a free port: %w", err)
	}
	env["TALLY_ADDR"] = addr
	cmd := exec.Command(bin, "serve")
	cmd.Env = mergeEnv(os.Environ(), env)
	s := &tallyServer{cmd: cmd, baseURL: "http://" + addr, exited: make(chan struct{}), output: &cappedWriter{limit: 30}}
	// The server's log (errors only, at the level the harness sets) goes to
	// stderr, capped, and is counted: errors logged under load are a
	// finding of their own.
	cmd.Stdout, cmd.Stderr = s.output, s.output
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s serve: %w", bin, err)
	}
	s.pid = cmd.Process.Pid
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// mergeEnv overrides base's variables with env's.
func mergeEnv(base []string, env map[string]string) []string {
	out := make([]string, 0, len(base)+len(env))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := env[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// waitReady polls /readyz: the server migrates the database (nothing to
// do, the harness did it) and opens its pool before it is ready.
func (s *tallyServer) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.baseURL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("the server exited before it was ready: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server was not ready within %s", limit)
		}
	}
}

// alive reports an error if the server has exited.
func (s *tallyServer) alive() error {
	select {
	case <-s.exited:
		return fmt.Errorf("the server exited during the benchmark: %v", s.waitErr)
	default:
		return nil
	}
}

// Stop asks the server to shut down gracefully (SIGTERM), and kills it if
// it has not exited within its shutdown timeout and a margin.
func (s *tallyServer) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		logf("the server did not stop within 30s of SIGTERM; killing it")
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	if n := s.output.errorLines(); n > 0 {
		logf("the server logged %d error line(s); its first %d lines of output are shown above", n, s.output.limit)
	}
}

// cappedWriter passes the first limit lines of the server's output to
// stderr (its start-up banner, errors it logs, a crash's trace) and counts
// the JSON log lines, which the harness's TALLY_LOG_LEVEL makes errors.
type cappedWriter struct {
	mu            sync.Mutex
	limit         int
	shown, logged int
	partial       bytes.Buffer
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial.Write(p)
	for {
		line, err := w.partial.ReadBytes('\n')
		if err == io.EOF {
			// Keep the unfinished line for the next write.
			rest := append([]byte(nil), line...)
			w.partial.Reset()
			w.partial.Write(rest)
			break
		}
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 {
			continue
		}
		if trimmed[0] == '{' {
			// A JSON log line: at TALLY_LOG_LEVEL=error, an error.
			w.logged++
		}
		w.shown++
		if w.shown <= w.limit {
			fmt.Fprintf(os.Stderr, "tally| %s", line)
		}
	}
	return len(p), nil
}

func (w *cappedWriter) errorLines() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logged
}
