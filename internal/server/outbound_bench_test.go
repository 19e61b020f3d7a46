package server_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

// outboundBenchEvents is how many crossings each iteration delivers.
const outboundBenchEvents = 1000

// BenchmarkOutboundDelivery measures how many events a second one server
// delivers to one local endpoint: N users each cross the low-balance
// threshold (granted 150, then spend 60 under a threshold of 100: one
// balance.low each) while the job workers are stopped, then the workers
// start and the clock runs until the receiver has accepted all N. The
// backlog is the worst case a burst of crossings makes; the server's
// production settings are used (workers, job polling), except that plain
// HTTP to loopback is allowed.
//
//	go test -run '^$' -bench OutboundDelivery -benchtime 1x ./internal/server
func BenchmarkOutboundDelivery(b *testing.B) {
	for _, kind := range testdb.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				srv, ts, rcv := outboundBenchServer(b, kind)
				makeCrossings(b, ts.URL, outboundBenchEvents)
				ctx, stop := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				started := time.Now()
				go func() { done <- srv.RunJobs(ctx, 5*time.Second) }()
				got := rcv.WaitAccepted(outboundBenchEvents, 10*time.Minute)
				elapsed := time.Since(started)
				b.StopTimer()
				stop()
				if err := <-done; err != nil {
					b.Fatalf("job workers: %v", err)
				}
				if len(got) != outboundBenchEvents || len(rcv.All()) != outboundBenchEvents {
					b.Fatalf("accepted %d of %d requests, want %d once each", len(got), len(rcv.All()), outboundBenchEvents)
				}
				for _, d := range got {
					if d.Type != "balance.low" || len(d.VerifiedBy) != 1 {
						b.Fatalf("delivered %s verified by %v, want balance.low signed with the endpoint's secret", d.Type, d.VerifiedBy)
					}
				}
				b.ReportMetric(float64(outboundBenchEvents)/elapsed.Seconds(), "events/s")
				b.StartTimer()
			}
		})
	}
}

// outboundBenchServer is a server on a fresh database with a threshold of
// 100 for everyone and one endpoint at a receiver; its jobs do not run.
func outboundBenchServer(b *testing.B, kind testdb.Kind) (*server.Server, *httptest.Server, *outboundtest.Receiver) {
	b.Helper()
	db := testdb.New(b, kind)
	vars := map[string]string{
		"TALLY_JWT_SECRET": testSecret, "DATABASE_URL": db.URL, "TALLY_RATE_LIMIT": "0",
		"TALLY_LOW_BALANCE_THRESHOLD": "100", "TALLY_CHECK_INTERVAL": "1h",
		"TALLY_WEBHOOK_ALLOW_HTTP": "true", "TALLY_WEBHOOK_ALLOW_PRIVATE": "true",
	}
	// The delivery workers may be tried at other counts (32 by default).
	if w := os.Getenv("TALLY_WEBHOOK_WORKERS"); w != "" {
		vars["TALLY_WEBHOOK_WORKERS"] = w
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, db, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(func() { ts.Close(); srv.Close() })
	rcv := outboundtest.New(b)
	out, err := benchGraphQL(ts.URL, token(b, "root", auth.RoleAdmin), createEndpoint, map[string]any{"url": rcv.URL})
	if err != nil {
		b.Fatal(err)
	}
	var created struct {
		CreateWebhookEndpoint struct{ Secret string } `json:"createWebhookEndpoint"`
	}
	if err := json.Unmarshal(out, &created); err != nil || created.CreateWebhookEndpoint.Secret == "" {
		b.Fatalf("creating the endpoint: %s (%v)", out, err)
	}
	rcv.Trust(created.CreateWebhookEndpoint.Secret)
	return srv, ts, rcv
}

// makeCrossings makes n users cross the threshold down, 8 at a time.
func makeCrossings(b *testing.B, url string, n int) {
	b.Helper()
	admin, service := token(b, "root", auth.RoleAdmin), token(b, "backend", auth.RoleService)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				u := "bench-" + strconv.Itoa(i)
				_, err := benchGraphQL(url, admin, grantMutationTo, map[string]any{"u": u, "n": 150, "k": "g-" + u})
				if err == nil {
					_, err = benchGraphQL(url, service, spendFrom, map[string]any{"u": u, "n": 60, "k": "s-" + u})
				}
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		b.Fatalf("making crossings: %v", first)
	}
}

// benchGraphQL posts an operation and returns its data, or an error for a
// failed request or a GraphQL error.
func benchGraphQL(url, tok, query string, vars map[string]any) (json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return nil, err
	}
	raw, err := benchPost(http.DefaultClient, url, tok, body)
	if err != nil {
		return nil, fmt.Errorf("%.60s: %w", query, err)
	}
	var r result
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", raw, err)
	}
	if len(r.Errors) > 0 {
		return nil, fmt.Errorf("%.60s: %+v", query, r.Errors)
	}
	return r.Data, nil
}
