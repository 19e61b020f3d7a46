package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tally-billing/tally/internal/auth"
)

// parseThreshold reads --low-balance-threshold: "" or "0" is none, "seed"
// the balance every benchmark account is seeded with (so that each
// account's first spend crosses it), else a number of credits.
func parseThreshold(flag, s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "", "0":
		return 0, nil
	case "seed":
		return seedBalance, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	// The server's own limit (config's maxThreshold): a larger value
	// would only make it refuse to start.
	if err != nil || n < 0 || n > 1<<53-1 {
		return 0, fmt.Errorf("%s: %q is not seed or a number from 0 to 2^53-1", flag, s)
	}
	return n, nil
}

// outboundEnv is what a threshold adds to the server's environment: the
// threshold itself, and plain HTTP to loopback, which production refuses
// but the harness's receiver needs.
func outboundEnv(threshold int64) map[string]string {
	if threshold <= 0 {
		return nil
	}
	return map[string]string{
		"TALLY_LOW_BALANCE_THRESHOLD": strconv.FormatInt(threshold, 10),
		"TALLY_WEBHOOK_ALLOW_HTTP":    "true",
		"TALLY_WEBHOOK_ALLOW_PRIVATE": "true",
	}
}

// eventReceiver is the application's end of the outbound events: a
// loopback HTTP server that accepts every delivery (204) and counts them
// by type. It does not verify signatures (the tests do); it is here so
// that a run with a threshold pays for delivering its events, not only
// for writing them.
type eventReceiver struct {
	srv  *http.Server
	url  string
	mu   sync.Mutex
	seen map[string]int // by event type
	last time.Time
}

func startReceiver() (*eventReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for outbound events: %w", err)
	}
	r := &eventReceiver{url: "http://" + ln.Addr().String() + "/events", seen: map[string]int{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *eventReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Type string `json:"type"`
	}
	raw, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil || json.Unmarshal(raw, &body) != nil || body.Type == "" {
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.seen[body.Type]++
	r.last = time.Now()
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// received is how many deliveries were accepted, and by type ("balance.low
// 9998, balance.depleted 0").
func (r *eventReceiver) received() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	types := make([]string, 0, len(r.seen))
	total := 0
	for t, n := range r.seen {
		types = append(types, fmt.Sprintf("%s %d", t, n))
		total += n
	}
	sort.Strings(types)
	return total, strings.Join(types, ", ")
}

func (r *eventReceiver) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

const createEndpointQuery = `mutation($url: String!) { createWebhookEndpoint(input: {url: $url, description: "tallybench"}) { endpoint { id } } }`

// setUpOutbound starts the receiver and registers it as an endpoint for
// every event type, as an admin would.
func (e *env) setUpOutbound(ctx context.Context) error {
	r, err := startReceiver()
	if err != nil {
		return err
	}
	e.receiver = r
	e.cleanup = append(e.cleanup, r.Close)
	admin, err := auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: "tallybench-admin", Role: auth.RoleAdmin}, 24*time.Hour)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"query": createEndpointQuery, "variables": map[string]any{"url": r.url}})
	if err != nil {
		return err
	}
	if err := e.api.post(ctx, admin, body, nil); err != nil {
		return fmt.Errorf("registering the event receiver: %w", err)
	}
	logf("outbound: low-balance threshold %d, events delivered to %s", e.o.lowBalance, r.url)
	return nil
}

// reportOutbound waits up to a minute for the receiver to get every event
// the runs wrote (deliveries trail the load), then logs both counts.
func (e *env) reportOutbound(ctx context.Context) error {
	if e.receiver == nil {
		return nil
	}
	written, err := e.db.Ent.WebhookEvent.Query().Count(ctx)
	if err != nil {
		return fmt.Errorf("counting outbound events: %w", err)
	}
	started := time.Now()
	got, _ := e.receiver.received()
	for got < written && time.Since(started) < time.Minute && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		got, _ = e.receiver.received()
	}
	got, types := e.receiver.received()
	logf("outbound: %d events written, %d received (%s), the last %.1fs after the runs ended",
		written, got, types, max(0, e.receiver.lastAt().Sub(started).Seconds()))
	if got < written {
		logf("outbound: %d events were not delivered within a minute of the runs", written-got)
	}
	return nil
}

func (r *eventReceiver) lastAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}
