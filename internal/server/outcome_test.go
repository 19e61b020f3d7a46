package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

// retryable fails the test unless r's only error is UNAVAILABLE with
// extensions.retryable.
func retryable(t *testing.T, what string, r result) {
	t.Helper()
	if r.code() != "UNAVAILABLE" || r.Errors[0].Extensions["retryable"] != true {
		t.Fatalf("%s: status %d, errors %+v; want UNAVAILABLE with retryable", what, r.status, r.Errors)
	}
}

// logLevels are the levels of the server's log lines whose message is msg
// and that contain every one of the strings in with.
func logLevels(t *testing.T, logs *syncBuffer, msg string, with ...string) []string {
	t.Helper()
	var levels []string
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
			continue
		}
		all := true
		for _, w := range with {
			all = all && strings.Contains(line, w)
		}
		if all {
			levels = append(levels, rec["level"].(string))
		}
	}
	return levels
}

// onlyWarnings fails the test unless there is at least one such line and
// every one is a warning.
func onlyWarnings(t *testing.T, logs *syncBuffer, msg string, with ...string) {
	t.Helper()
	levels := logLevels(t, logs, msg, with...)
	if len(levels) == 0 {
		t.Fatalf("no %q log line with %q in:\n%s", msg, with, logs.String())
	}
	for _, l := range levels {
		if l != "WARN" {
			t.Fatalf("%q logged at %s, want WARN:\n%s", msg, l, logs.String())
		}
	}
}

// TestLostCommitAnswerOverHTTP: with the connection cut after COMMIT
// reached PostgreSQL and before its answer came back, a spend over GraphQL
// is answered UNAVAILABLE with extensions.retryable (not INTERNAL), and
// the Stripe webhook 503 (not 500), both logged as warnings naming the
// unknown outcome. Both did commit: the spend's retry with its key answers
// replayed: true, the event's redelivery is a duplicate, and the balance
// moved once each.
func TestLostCommitAnswerOverHTTP(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite runs in the process: no connection can drop between its COMMIT and the answer")
		}
		ctx := context.Background()
		alice, _, body := pendingPurchase(t, db)
		proxied, proxy := testdb.Proxied(t, db)
		a := newAPI(t, proxied, nil)
		admin, bob := token(t, "root", auth.RoleAdmin), token(t, "bob", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "bob", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		a.ok(bob, viewerQuery, nil)
		spend := map[string]any{"input": map[string]any{"amount": 42, "reason": "report", "idempotencyKey": "s1"}}
		balance := func(externalID string) int64 {
			t.Helper()
			var b int64
			if err := db.SQL.QueryRow(db.Rebind(`SELECT credits_balance FROM users WHERE external_id = ?`), externalID).Scan(&b); err != nil {
				t.Fatal(err)
			}
			return b
		}

		proxy.CutAtCommit()
		retryable(t, "a spend whose COMMIT lost its answer", a.gql(bob, spendMutation, spend))
		if got := balance("bob"); got != 58 {
			t.Fatalf("bob's balance %d after the cut spend, want 58 (it committed)", got)
		}
		onlyWarnings(t, a.logs, "GraphQL: unavailable, the client may retry", "outcome unknown")
		signed := webhook.Sign(body, config.DevWebhookSecret, time.Now())
		if code, out := a.webhook(body, signed); code != 503 {
			t.Fatalf("a webhook whose COMMIT lost its answer: %d %v, want 503", code, out)
		}
		onlyWarnings(t, a.logs, "stripe webhook", `"status":503`, "outcome unknown")
		onlyWarnings(t, a.logs, "request", `"status":503`)
		if got := balance("alice"); got != 250 {
			t.Fatalf("alice's balance %d after the cut webhook, want 250 (it committed)", got)
		}

		proxy.Pass()
		r := a.ok(bob, spendMutation, spend)
		if r.get(t, "spendCredits", "replayed") != true || r.get(t, "spendCredits", "user", "creditsBalance") != float64(58) {
			t.Fatalf("the spend retried with its key: %s; want replayed with balance 58", r.Data)
		}
		if code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now())); code != 200 || out["outcome"] != "duplicate" {
			t.Fatalf("the redelivery: %d %v, want 200 duplicate", code, out)
		}
		if balance("bob") != 58 || balance("alice") != 250 {
			t.Fatalf("balances %d and %d after the retries, want 58 and 250", balance("bob"), balance("alice"))
		}
		if p := db.Ent.Payment.Query().OnlyX(ctx); p.Status != payment.StatusSucceeded || p.UserID != alice.ID {
			t.Fatalf("payment %s of %s", p.Status, p.UserID)
		}
	})
}

// TestUnreachableDatabaseOverHTTP: while the database cannot be reached, a
// spend over GraphQL is UNAVAILABLE with extensions.retryable and the
// Stripe webhook answers 503 (warnings, not errors), and nothing is
// written; once the database is back, the same requests are applied. On
// PostgreSQL the fault proxy refuses connections (and cut the open ones);
// on SQLite, whose file cannot become unreachable, the server's pool is
// closed.
func TestUnreachableDatabaseOverHTTP(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		_, _, body := pendingPurchase(t, db)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		var (
			a       *api
			outage  func()
			restore func() *api
		)
		if db.Dialect == dialect.Postgres {
			proxied, proxy := testdb.Proxied(t, db)
			a = newAPI(t, proxied, nil)
			outage, restore = proxy.Refuse, func() *api { proxy.Pass(); return a }
		} else {
			other := testdb.Open(t, db.URL)
			a = newAPI(t, other, nil)
			outage = func() { other.Close() }
			restore = func() *api { return newAPI(t, db, nil) }
		}
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 100, "reason": "welcome", "idempotencyKey": "g1",
		}})
		spend := map[string]any{"input": map[string]any{"amount": 42, "reason": "report", "idempotencyKey": "s1"}}
		before := moneyDigest(t, db)

		outage()
		retryable(t, "a spend with the database unreachable", a.gql(alice, spendMutation, spend))
		onlyWarnings(t, a.logs, "GraphQL: unavailable, the client may retry")
		if code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now())); code != 503 {
			t.Fatalf("a webhook with the database unreachable: %d %v, want 503", code, out)
		}
		onlyWarnings(t, a.logs, "stripe webhook", `"status":503`)
		if moneyDigest(t, db) != before || db.Ent.ProcessedEvent.Query().CountX(ctx) != 0 {
			t.Fatal("something was written while the database was unreachable")
		}

		a = restore()
		r := a.ok(alice, spendMutation, spend)
		if r.get(t, "spendCredits", "replayed") != false || r.get(t, "spendCredits", "user", "creditsBalance") != float64(58) {
			t.Fatalf("the spend once the database is back: %s; want applied with balance 58", r.Data)
		}
		if code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now())); code != 200 || out["outcome"] != "applied" {
			t.Fatalf("the webhook once the database is back: %d %v, want 200 applied", code, out)
		}
	})
}
