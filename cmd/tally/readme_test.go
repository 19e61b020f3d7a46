package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/testdb"
)

// walkthroughBlocks are the README's shell blocks marked `walkthrough`, in
// order: what a new user pastes, line by line, into a shell.
func walkthroughBlocks(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh walkthrough\n(.*?)```\n").FindAllStringSubmatch(string(readme), -1)
	var out []string
	for _, b := range blocks {
		out = append(out, b[1])
	}
	if len(out) < 2 {
		t.Fatalf("the README has %d walkthrough blocks; want the API's and the purchase's", len(out))
	}
	return out
}

// TestREADMEWalkthrough runs the README's walkthrough as written against a
// real server on an address of its own (TALLY_ADDR, which the walkthrough
// reads), in one shell with errexit, and checks what it printed. The only
// substitution: `go run ./cmd/tally` is this test binary running as tally
// (building the command again for every line would take minutes).
func TestREADMEWalkthrough(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "grep", "cut", "head", "uniq"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed to run the README: %v", tool, err)
			}
			t.Skipf("%s is needed to run the README: %v", tool, err)
		}
	}
	script := strings.Join(walkthroughBlocks(t), "\n")
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var env []string
			if kind == testdb.Postgres {
				env = append(env, "DATABASE_URL="+testdb.NewEmpty(t, kind).URL)
			}
			addr := freeAddr(t)
			env = append(env, "TALLY_ADDR="+addr)
			server := tally(t, dir, env, "serve")
			var serverOut bytes.Buffer
			server.Stdout, server.Stderr = &serverOut, &serverOut
			if err := server.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { server.Process.Kill(); server.Wait() })
			waitReady(t, "http://"+addr)

			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			// Only `go run ./cmd/tally ARGS` is redirected; no README
			// argument holds a space, which TALLY_TEST_ARGS could not carry.
			prelude := `go() {
  if [ "$1" != run ] || [ "$2" != ./cmd/tally ]; then echo "README runs go $*" >&2; return 2; fi
  shift 2
  ` + runMainEnv + `=1 TALLY_TEST_ARGS="$*" "$TALLY_TEST_EXE"
}
set -euo pipefail
`
			sh := exec.Command("bash", "-c", prelude+script)
			sh.Dir = dir
			sh.Env = append([]string{"PATH=" + os.Getenv("PATH"), "TALLY_TEST_EXE=" + exe}, env...)
			var out, stderr bytes.Buffer
			sh.Stdout, sh.Stderr = &out, &stderr
			if err := sh.Run(); err != nil {
				t.Fatalf("the walkthrough stopped: %v\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", err, out.String(), stderr.String(), serverOut.String())
			}
			got := out.String()
			if strings.Contains(got, `"errors"`) || stderr.Len() > 0 {
				t.Fatalf("the walkthrough printed an error:\nstdout:\n%s\nstderr:\n%s", got, stderr.String())
			}
			for _, want := range []string{
				`{"status":"ok"}`, // healthz
				`"creditsBalance":500`, `"action":"grant_credits"`,
				`"creditsBalance":458`,
				"outcome applied", // each simulated event
				`"status":"CHARGED_BACK"`, `"amountRefunded":250`,
				// auto-recharge
				"card saved: visa 4242", `"status":"ACTIVE","thresholdCredits":400,"paymentMethod":{"brand":"visa","last4":"4242"}`,
				`"creditsBalance":358,"payments":{"edges":[{"node":{"kind":"RECHARGE","status":"PENDING"}}]}`,
				`"creditsBalance":358,"autoRecharge":{"status":"ACTION_REQUIRED"`,
				`"creditsBalance":358,"autoRecharge":{"status":"FAILING","lastError":"the card was declined: Your card was declined.","chargedThisMonthAmount":1000}`,
				// plans and subscriptions: bob's month going by
				`"creditsBalance":1000,"subscriptions":{"edges":[{"node":{"status":"ACTIVE"`,
				`"plan":{"name":"Starter monthly"}`, `"creditsBalance":700`,
				`"creditsBalance":1500,"subscriptions":{"edges":[{"node":{"status":"ACTIVE"`,
				`"creditsBalance":1500,"subscriptions":{"edges":[{"node":{"status":"PAST_DUE"`,
				`"creditsBalance":1500,"subscriptions":{"edges":[{"node":{"status":"CANCELED"`,
			} {
				if !strings.Contains(got, want) {
					t.Errorf("the walkthrough's output lacks %s:\n%s", want, got)
				}
			}
			// simulate subscribe's two lines are taken into $SUB.
			if n := strings.Count(got, "outcome applied"); n != 11 {
				t.Errorf("%d events applied, want the refund, both dispute events, four recharge outcomes, a renewal's two events, a failed renewal and a cancellation:\n%s", n, got)
			}
		})
	}
}
