package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/webhookdelivery"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/outbound"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/testdb"
)

// These tests kill `tally serve` with SIGKILL, which no deferred function
// or shutdown hook survives, and check that what the outbound events
// promise rests on the database alone: an event committed with its
// movement is sent by the next process, and a send cut mid-flight is sent
// again with the same webhook-id.

// served is one `tally serve` process.
type served struct {
	cmd  *exec.Cmd
	base string
	logs string // its stdout and stderr
}

// startServe runs `tally serve` in dir on a free port and waits until it is
// ready; it is killed when the test ends if still running.
func startServe(t *testing.T, dir string, env []string) *served {
	t.Helper()
	addr := freeAddr(t)
	logs, err := os.CreateTemp(t.TempDir(), "serve-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	s := &served{cmd: tally(t, dir, env, "serve", "--addr", addr), base: "http://" + addr, logs: logs.Name()}
	// A file rather than a buffer: it can be read while the process writes.
	s.cmd.Stdout, s.cmd.Stderr = logs, logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		if t.Failed() {
			out, _ := os.ReadFile(s.logs)
			t.Logf("log of the server at %s:\n%s", s.base, out)
		}
	})
	waitReady(t, s.base)
	return s
}

// kill ends the process with SIGKILL and checks that is what ended it.
func (s *served) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.cmd.Wait()
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the server was not killed by SIGKILL: %v", s.cmd.ProcessState)
	}
}

// graphql posts a query with token and decodes its data into out; any
// error fails the test.
func graphql(t *testing.T, base, token, query string, vars map[string]any, out any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, base+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var answer struct {
		Data   json.RawMessage `json:"data"`
		Errors []any           `json:"errors"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil || resp.StatusCode != http.StatusOK || len(answer.Errors) > 0 {
		t.Fatalf("%s: HTTP %d %s", query, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(answer.Data, out); err != nil {
			t.Fatalf("%s: decoding %s: %v", query, answer.Data, err)
		}
	}
}

// lowBalance registers the receiver as an endpoint (trusting its secret),
// grants alice 150 credits and spends 60 of them, crossing the threshold
// of 100 the servers are given: one balance.low.
func lowBalance(t *testing.T, base, dir string, env []string, rcv *outboundtest.Receiver) (admin string) {
	t.Helper()
	admin = mint(t, dir, env, "--sub", "root", "--role", "admin")
	service := mint(t, dir, env, "--sub", "backend", "--role", "service")
	var created struct {
		CreateWebhookEndpoint struct{ Secret string } `json:"createWebhookEndpoint"`
	}
	graphql(t, base, admin, `mutation($url: String!) { createWebhookEndpoint(input: {url: $url}) { secret } }`,
		map[string]any{"url": rcv.URL}, &created)
	rcv.Trust(created.CreateWebhookEndpoint.Secret)
	graphql(t, base, admin, `mutation { grantCredits(input: {externalUserId: "alice", amount: 150, reason: "test", idempotencyKey: "g1"}) { transaction { id } } }`, nil, nil)
	graphql(t, base, service, `mutation { spendCredits(input: {externalUserId: "alice", amount: 60, idempotencyKey: "s1"}) { transaction { id } } }`, nil, nil)
	return admin
}

type delivery struct {
	Status   string
	Attempts int
	Event    struct{ Type string }
}

// deliveries is every delivery, as an admin sees them.
func deliveries(t *testing.T, base, admin string) []delivery {
	t.Helper()
	var got struct {
		WebhookDeliveries struct{ Edges []struct{ Node delivery } } `json:"webhookDeliveries"`
	}
	graphql(t, base, admin, `{ webhookDeliveries { edges { node { status attempts event { type } } } } }`, nil, &got)
	var out []delivery
	for _, e := range got.WebhookDeliveries.Edges {
		out = append(out, e.Node)
	}
	return out
}

// waitDelivered waits until the only delivery has left PENDING, and
// returns it.
func waitDelivered(t *testing.T, base, admin string) delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := deliveries(t, base, admin)
		if len(got) != 1 {
			t.Fatalf("deliveries %+v, want one", got)
		}
		if got[0].Status != "PENDING" || time.Now().After(deadline) {
			return got[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkBalanceLow: d is the balance.low of alice at 90 credits, signed with
// the endpoint's secret.
func checkBalanceLow(t *testing.T, d outboundtest.Delivery) {
	t.Helper()
	user, _ := d.Data["user"].(map[string]any)
	if d.Type != "balance.low" || user["externalId"] != "alice" || d.Data["availableCredits"] != float64(90) {
		t.Errorf("request %s: %s %v, want balance.low of alice at 90", d.ID, d.Type, d.Data)
	}
	if len(d.VerifiedBy) != 1 {
		t.Errorf("request %s: signatures %v do not verify with the endpoint's secret", d.ID, d.Signatures)
	}
}

// TestOutboundEventSurvivesKillBeforeDelivery: a server without workers
// commits a balance.low with its spend and sends nothing; killed, it
// leaves the event to the next server on the database, which delivers it
// once, and nothing else.
func TestOutboundEventSurvivesKillBeforeDelivery(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir, url := t.TempDir(), testdb.NewEmpty(t, kind).URL
			env := []string{"DATABASE_URL=" + url, "TALLY_LOW_BALANCE_THRESHOLD=100"}
			rcv := outboundtest.New(t)
			webOnly := startServe(t, dir, append(env, "TALLY_WORKERS=0"))
			admin := lowBalance(t, webOnly.base, dir, env, rcv)
			if got := deliveries(t, webOnly.base, admin); len(got) != 1 || got[0].Status != "PENDING" || got[0].Event.Type != "balance.low" {
				t.Fatalf("deliveries before the kill %+v, want one PENDING balance.low", got)
			}
			webOnly.kill(t)
			if n := len(rcv.All()); n != 0 {
				t.Fatalf("a server without workers sent %d requests", n)
			}

			start := time.Now()
			workers := startServe(t, dir, append(env, "TALLY_WORKERS=2"))
			got := rcv.WaitAccepted(1, 20*time.Second)
			t.Logf("delivered %s after the restart began", time.Since(start).Round(time.Millisecond))
			checkBalanceLow(t, got[0])
			if d := waitDelivered(t, workers.base, admin); d.Status != "DELIVERED" || d.Attempts != 1 {
				t.Fatalf("delivery %+v, want DELIVERED in 1 attempt", d)
			}
			// A second job for the event would run at once on the idle
			// workers; give it a poll interval to show.
			time.Sleep(1500 * time.Millisecond)
			if all := rcv.All(); len(all) != 1 {
				t.Fatalf("the receiver got %d requests, want 1: %+v", len(all), all)
			}
		})
	}
}

// TestOutboundDeliveryInFlightKilledIsDeliveredAgain: the server dies
// while its request is at the receiver, unanswered; the delivery and its
// job are left as the process had them (PENDING, running), and the next
// server's River rescues the job once it has been running longer than
// TALLY_JOB_RESCUE_AFTER and sends the same webhook-id again.
func TestOutboundDeliveryInFlightKilledIsDeliveredAgain(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir, db := t.TempDir(), testdb.NewEmpty(t, kind)
			env := []string{"DATABASE_URL=" + db.URL, "TALLY_LOW_BALANCE_THRESHOLD=100", "TALLY_WORKERS=2",
				"TALLY_WEBHOOK_TIMEOUT=500ms", "TALLY_JOB_TIMEOUT=1s", "TALLY_JOB_RESCUE_AFTER=2s"}
			rcv := outboundtest.New(t)
			rcv.HangFirst()
			first := startServe(t, dir, env)
			lowBalance(t, first.base, dir, env, rcv)
			held := rcv.WaitRequests(1, 10*time.Second)[0]
			first.kill(t)
			checkInFlight(t, db)

			start := time.Now()
			second := startServe(t, dir, env)
			got := rcv.WaitAccepted(1, 40*time.Second)
			t.Logf("sent again %s after the restart began", time.Since(start).Round(time.Millisecond))
			checkBalanceLow(t, held)
			checkBalanceLow(t, got[0])
			if got[0].ID != held.ID {
				t.Fatalf("sent again as %s, first as %s: a receiver cannot deduplicate", got[0].ID, held.ID)
			}
			admin := mint(t, dir, env, "--sub", "root", "--role", "admin")
			if d := waitDelivered(t, second.base, admin); d.Status != "DELIVERED" || d.Attempts < 1 {
				t.Fatalf("delivery %+v, want DELIVERED after at least 1 attempt", d)
			}
		})
	}
}

// checkInFlight: the killed process had recorded nothing of its attempt,
// so that it is the rescue of the job, not the delivery's retry schedule,
// that sends it again.
func checkInFlight(t *testing.T, db *database.DB) {
	t.Helper()
	ctx := context.Background()
	dels, err := db.Ent.WebhookDelivery.Query().All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dels) != 1 || dels[0].Status != webhookdelivery.StatusPending || dels[0].Attempts != 0 {
		t.Fatalf("deliveries after the kill %+v, want one PENDING with no attempt recorded (was the kill later than TALLY_WEBHOOK_TIMEOUT?)", dels)
	}
	var state string
	if err := db.SQL.QueryRowContext(ctx, "SELECT state FROM river_job WHERE kind = '"+outbound.DeliverArgs{}.Kind()+"'").Scan(&state); err != nil {
		t.Fatalf("reading the delivery's job: %v", err)
	}
	if state != "running" {
		t.Fatalf("the delivery's job is %s after the kill, want running", state)
	}
}
