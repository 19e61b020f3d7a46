package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/outbound/outboundtest"
)

var readyLine = regexp.MustCompile(`^Ready\. Forwarding events to (\S+) \(secret (whsec_\S+), endpoint (wep_\S+)\)$`)

type received struct {
	header http.Header
	body   []byte
}

// eventsListener is a running `tally events listen` and what it printed.
type eventsListener struct {
	cmd                *exec.Cmd
	lines              chan string
	stderr             *bytes.Buffer
	secret, endpointID string
}

func startListener(t *testing.T, dir string, env []string, args ...string) *eventsListener {
	t.Helper()
	l := &eventsListener{
		cmd:    tally(t, dir, env, append([]string{"events", "listen"}, args...)...),
		lines:  make(chan string, 100),
		stderr: &bytes.Buffer{},
	}
	l.cmd.Stderr = l.stderr
	out, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.cmd.Process.Kill() })
	go func() {
		defer close(l.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
	}()
	m := readyLine.FindStringSubmatch(l.nextLine(t))
	if m == nil || m[1] != args[1] {
		t.Fatalf("the first line is not the Ready line forwarding to %s", args[1])
	}
	l.secret, l.endpointID = m[2], m[3]
	return l
}

func (l *eventsListener) nextLine(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-l.lines:
		if !ok {
			l.cmd.Wait()
			t.Fatalf("the listener closed its stdout; stderr:\n%s", l.stderr.String())
		}
		return line
	case <-time.After(30 * time.Second):
		t.Fatal("no line from the listener in 30s")
	}
	return ""
}

// interrupt sends SIGINT and requires a clean exit 0 with nothing on stderr.
func (l *eventsListener) interrupt(t *testing.T) {
	t.Helper()
	if err := l.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range l.lines { // the pipe must be drained before Wait
	}
	if err := l.cmd.Wait(); err != nil || l.stderr.Len() > 0 {
		t.Fatalf("after SIGINT: %v, stderr:\n%s", err, l.stderr.String())
	}
}

// gql posts a GraphQL operation as token and returns its data, failing on
// errors (graphql, decoded into a map).
func gql(t *testing.T, base, token, query string, vars map[string]any) map[string]any {
	t.Helper()
	var data map[string]any
	graphql(t, base, token, query, vars, &data)
	return data
}

// endpoints are the server's webhook endpoints by id.
func endpoints(t *testing.T, base, admin string) map[string]map[string]any {
	t.Helper()
	data := gql(t, base, admin, `{ webhookEndpoints { totalCount edges { node { id url eventTypes enabled } } } }`, nil)
	conn := data["webhookEndpoints"].(map[string]any)
	out := map[string]map[string]any{}
	for _, e := range conn["edges"].([]any) {
		node := e.(map[string]any)["node"].(map[string]any)
		out[node["id"].(string)] = node
	}
	if n := int(conn["totalCount"].(float64)); n != len(out) {
		t.Fatalf("totalCount %d, %d edges", n, len(out))
	}
	return out
}

// TestEventsListenForwardsSignedDeliveries runs tally serve, a receiver
// standing for the developer's app and `tally events listen` as processes:
// a real balance.low crossing reaches the app signed with the secret the
// listener printed, the app's answer goes back to Tally, an unreachable app
// is a 502 Tally records, and Ctrl-C deletes the endpoints.
func TestEventsListenForwardsSignedDeliveries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	base := "http://" + addr
	env := []string{"TALLY_ADDR=" + addr, "TALLY_LOW_BALANCE_THRESHOLD=100", "TALLY_WEBHOOK_TIMEOUT=1s", "TALLY_JOB_TIMEOUT=5s"}
	srv := tally(t, dir, env, "serve")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitReady(t, base)

	got := make(chan received, 10)
	var answer atomic.Int32
	answer.Store(http.StatusOK)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Clone(), body}
		w.WriteHeader(int(answer.Load()))
		io.WriteString(w, "seen by the app")
	}))
	t.Cleanup(app.Close)

	appURL := app.URL + "/hooks/tally"
	l := startListener(t, dir, env, "--forward-to", appURL, "--events", "balance.low,balance.depleted")
	admin := mint(t, dir, nil, "--sub", "root", "--role", "admin")
	ep := endpoints(t, base, admin)[l.endpointID]
	types := fmt.Sprint(ep["eventTypes"])
	listenURL, _ := ep["url"].(string)
	if !strings.HasPrefix(listenURL, "http://127.0.0.1:") || types != "[balance.low balance.depleted]" || ep["enabled"] != true {
		t.Fatalf("registered endpoint %v", ep)
	}

	// What reaches the listener other than a delivery is not forwarded.
	direct := func(method string, body []byte, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, listenURL, bytes.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := direct(http.MethodGet, nil, nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET answered %d, want 405", resp.StatusCode)
	}
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	if resp := direct(http.MethodPost, big, map[string]string{"Webhook-Id": "whe_big"}); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over 1 MiB answered %d, want 413", resp.StatusCode)
	}
	if line := l.nextLine(t); !strings.Contains(line, " ? whe_big -> error: reading the delivery") {
		t.Errorf("oversized body line %q", line)
	}
	// The app's status, whatever it is, is what Tally is told.
	answer.Store(http.StatusServiceUnavailable)
	if resp := direct(http.MethodPost, []byte(`{"type":"balance.low"}`), map[string]string{"Webhook-Id": "whe_probe"}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("the app answered 503, the listener %d", resp.StatusCode)
	}
	if r := <-got; r.header.Get("Webhook-Id") != "whe_probe" || len(got) > 0 {
		t.Fatalf("forwarded %v %q; then %d more (GET or oversized forwarded)", r.header, r.body, len(got))
	}
	if line := l.nextLine(t); !regexp.MustCompile(`^\S+ balance\.low whe_probe -> 503$`).MatchString(line) {
		t.Errorf("probe line %q", line)
	}
	answer.Store(http.StatusOK)

	// A second listener whose app is down answers 502, which Tally records.
	down := startListener(t, dir, env, "--forward-to", "http://"+freeAddr(t)+"/", "--events", "balance.recovered")

	gql(t, base, admin, `mutation { grantCredits(input: {externalUserId: "alice", amount: 150, reason: "test", idempotencyKey: "g1"}) { replayed } }`, nil)
	gql(t, base, admin, `mutation { spendCredits(input: {externalUserId: "alice", amount: 60, idempotencyKey: "s1"}) { replayed } }`, nil)
	var r received
	select {
	case r = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery reached the app in 30s")
	}
	id, tsHeader := r.header.Get("Webhook-Id"), r.header.Get("Webhook-Timestamp")
	ts, err := strconv.ParseInt(tsHeader, 10, 64)
	var event struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	json.Unmarshal(r.body, &event)
	if err != nil || event.Type != "balance.low" || event.Data["availableCredits"] != float64(90) || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("the app got %v %s", r.header, r.body)
	}
	if !outboundtest.Verify(l.secret, id, ts, r.body, strings.Fields(r.header.Get("Webhook-Signature"))) {
		t.Fatalf("the signature %q does not verify with the printed secret", r.header.Get("Webhook-Signature"))
	}
	if outboundtest.Verify(down.secret, id, ts, r.body, strings.Fields(r.header.Get("Webhook-Signature"))) {
		t.Fatal("the signature verifies with another endpoint's secret too: Verify proves nothing")
	}
	if line := l.nextLine(t); !regexp.MustCompile(`^\S+ balance\.low ` + regexp.QuoteMeta(id) + ` -> 200$`).MatchString(line) {
		t.Errorf("delivery line %q", line)
	}

	gql(t, base, admin, `mutation { grantCredits(input: {externalUserId: "alice", amount: 500, reason: "test", idempotencyKey: "g2"}) { replayed } }`, nil)
	if line := down.nextLine(t); !regexp.MustCompile(`^\S+ balance\.recovered whe_\S+ -> error: `).MatchString(line) {
		t.Errorf("failed forward line %q", line)
	}
	waitDeliveryStatus(t, base, admin, down.endpointID, http.StatusBadGateway)

	// A server that refuses the registration is one line and exit 1.
	stdout, stderr, code := run(t, dir, env, "events", "listen", "--forward-to", appURL, "--events", "no.such.type")
	if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "tally: createWebhookEndpoint: ") {
		t.Errorf("unknown event type: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	l.interrupt(t)
	down.interrupt(t)
	if left := endpoints(t, base, admin); len(left) != 0 {
		t.Fatalf("endpoints left after the listeners stopped: %v", left)
	}
}

// waitDeliveryStatus waits until Tally recorded status as the last answer
// of a delivery to the endpoint.
func waitDeliveryStatus(t *testing.T, base, admin, endpointID string, status int) {
	t.Helper()
	var seen []any
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		data := gql(t, base, admin, `{ webhookDeliveries(first: 20) { edges { node { endpointId lastResponseStatus } } } }`, nil)
		seen = data["webhookDeliveries"].(map[string]any)["edges"].([]any)
		if slices.ContainsFunc(seen, func(e any) bool {
			n := e.(map[string]any)["node"].(map[string]any)
			return n["endpointId"] == endpointID && n["lastResponseStatus"] == float64(status)
		}) {
			return
		}
	}
	t.Fatalf("no delivery to %s answered %d in 30s: %v", endpointID, status, seen)
}

func TestEventsListenCommandLineMistakes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no --forward-to", nil, nil, 2, "--forward-to is required"},
		{"forward-to not http", nil, []string{"--forward-to", "ftp://app/hook"}, 2, "is not an http(s) URL"},
		{"forward-to without a host", nil, []string{"--forward-to", "http:///hook"}, 2, "is not an http(s) URL"},
		{"empty event type", nil, []string{"--forward-to", "http://127.0.0.1:1/", "--events", "balance.low,"}, 2, "--events has an empty type"},
		{"extra argument", nil, []string{"--forward-to", "http://127.0.0.1:1/", "now"}, 2, "unknown command"},
		{"bad --server", nil, []string{"--forward-to", "http://127.0.0.1:1/", "--server", "ftp://x"}, 2, "--server"},
		{"server unreachable", nil, []string{"--forward-to", "http://127.0.0.1:1/", "--server", "127.0.0.1:1"}, 1, "is tally serve running there?"},
		{"production", []string{"TALLY_ENV=production", "TALLY_JWT_SECRET=kR7vQ2xN9pLm4tWz8cYb3sHf6jDg1aEu5oVi0qTn"},
			[]string{"--forward-to", "http://127.0.0.1:1/", "--server", "127.0.0.1:1"}, 1, "for development"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := run(t, t.TempDir(), c.env, append([]string{"events", "listen"}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != c.code || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr:\n%s\nwant one line mentioning %q", code, c.code, stdout, stderr, c.want)
			}
		})
	}
}
