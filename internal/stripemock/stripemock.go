// Package stripemock runs stripe-mock (github.com/stripe/stripe-mock, a tool
// of this module) for tests, so that code calling Stripe is exercised against
// Stripe's OpenAPI description without ever reaching the real API.
//
// One stripe-mock serves a whole test binary: the first Start builds it with
// `go tool -n stripe-mock` (the first build takes a while; later ones hit the
// build cache) and runs it on ports the operating system picks, so packages
// that `go test` runs in parallel never share or fight over a port.
//
// A package that uses it should stop it when its tests end:
//
//	func TestMain(m *testing.M) { os.Exit(stripemock.Run(m)) }
//
// On Linux the process is also killed by the kernel when the test binary
// dies (even by SIGKILL or a test timeout), so none is left behind either way.
//
// stripe-mock answers with fixtures: ids are random but most other fields are
// fixed whatever the request says. Assert on what the code under test stores
// and sends, not on the mock's echo.
package stripemock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds on starting stripe-mock. A build on a cold cache compiles the
// standard library too, hence the generous build bound.
const (
	buildTimeout = 5 * time.Minute
	readyTimeout = 30 * time.Second
)

var (
	once    sync.Once
	mu      sync.Mutex
	proc    *exec.Cmd
	exited  chan struct{} // closed when proc has been waited for
	baseURL string
	failure error
)

// Start returns the base URL (http://127.0.0.1:port) of this test binary's
// stripe-mock, starting it on first use. It fails the test if stripe-mock
// cannot be started, and keeps failing later callers with the same error.
// Once Stop has run, Start does not start it again.
func Start(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		url, err := start()
		mu.Lock()
		defer mu.Unlock()
		baseURL, failure = url, err
	})
	mu.Lock()
	defer mu.Unlock()
	if failure != nil {
		t.Fatalf("stripemock: %v", failure)
	}
	return baseURL
}

// Stop kills stripe-mock if it runs and waits for it to exit. It is safe to
// call any number of times, whether or not Start ran.
func Stop() {
	mu.Lock()
	cmd, done := proc, exited
	proc = nil
	mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Run runs the tests and then stops stripe-mock; its result is the exit code
// for os.Exit in TestMain.
func Run(m *testing.M) int {
	defer Stop()
	return m.Run()
}

// listening is the line in which stripe-mock reports its HTTP address.
var listening = regexp.MustCompile(`Listening for HTTP at address: (\S+)`)

func start() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin, err := build(root)
	if err != nil {
		return "", err
	}

	// Port 0 on the loopback interface for both listeners: the operating
	// system picks free ports, and the HTTPS listener, which the tests do not
	// use, would otherwise take a fixed default port.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	cmd.Dir = root
	cmd.SysProcAttr = sysProcAttr()
	pr, pw, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("creating a pipe for stripe-mock's output: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return "", fmt.Errorf("starting %s: %w", bin, err)
	}
	pw.Close() // the child holds its own copy; EOF on pr now means it exited
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	mu.Lock()
	proc, exited = cmd, done
	mu.Unlock()

	addr, output, err := waitForAddress(pr, done)
	if err != nil {
		Stop()
		return "", fmt.Errorf("stripe-mock did not start: %w; its output:\n%s", err, output)
	}
	url := "http://" + addr
	if err := waitForAnswer(url, done); err != nil {
		Stop()
		return "", fmt.Errorf("stripe-mock at %s: %w", url, err)
	}
	return url, nil
}

// waitForAddress reads stripe-mock's output until it names its HTTP address,
// then keeps draining the output so that the process never blocks on a full
// pipe.
func waitForAddress(r io.ReadCloser, exited <-chan struct{}) (addr, output string, err error) {
	found := make(chan string, 1)
	var (
		outMu sync.Mutex
		out   strings.Builder
	)
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			outMu.Lock()
			if out.Len() < 8<<10 {
				out.WriteString(line + "\n")
			}
			outMu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	snapshot := func() string {
		outMu.Lock()
		defer outMu.Unlock()
		return out.String()
	}
	select {
	case addr := <-found:
		return addr, "", nil
	case <-exited:
		return "", snapshot(), errors.New("it exited")
	case <-time.After(readyTimeout):
		return "", snapshot(), fmt.Errorf("no address reported within %s", readyTimeout)
	}
}

// waitForAnswer polls until stripe-mock answers HTTP at all (an
// unauthenticated request gets 401, which is enough).
func waitForAnswer(url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url + "/v1/customers")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %s: %w", readyTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("it exited before answering")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// build returns the path of the stripe-mock executable, building it (into
// Go's build cache) if needed, at the version go.mod pins.
func build(root string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", "stripe-mock")
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return "", fmt.Errorf("building stripe-mock took longer than %s", buildTimeout)
	}
	if err != nil {
		return "", fmt.Errorf("building stripe-mock (go tool -n stripe-mock in %s): %w\n%s", root, err, stderr.String())
	}
	bin := strings.TrimSpace(string(out))
	if bin == "" || strings.ContainsAny(bin, "\n ") {
		return "", fmt.Errorf("go tool -n stripe-mock printed %q, not the path of an executable", bin)
	}
	return bin, nil
}

// moduleRoot is the nearest directory at or above the working directory
// (a test's package directory) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}
