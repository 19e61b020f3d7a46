package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestWebhookEndpointsAreAdminsAndAudited: admins manage endpoints (the
// secret is shown on creation and rotation only, and during a rotation
// both secrets sign), every change is audited, others are refused, and
// bad input is refused with INVALID_ARGUMENT changing nothing.
func TestWebhookEndpointsAreAdminsAndAudited(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, nil)
		user, service := token(t, "alice", auth.RoleUser), token(t, "backend", auth.RoleService)
		for _, tok := range []string{user, service, ""} {
			code := "FORBIDDEN"
			if tok == "" {
				code = "UNAUTHENTICATED"
			}
			a.refused(tok, createEndpoint, map[string]any{"url": "https://example.com/hook"}, code)
			a.refused(tok, `{ webhookEndpoints { totalCount } }`, nil, code)
		}
		list := a.ok(admin, `{ webhookEndpoints { totalCount edges { node { id url enabled } } } }`, nil)
		id := list.get(t, "webhookEndpoints", "edges", "0", "node", "id")
		if list.get(t, "webhookEndpoints", "totalCount") != float64(1) {
			t.Fatalf("endpoints: %s", list.Data)
		}
		if strings.Contains(string(list.Data), "whsec_") {
			t.Fatalf("a listing shows a secret: %s", list.Data)
		}
		for name, vars := range map[string]map[string]any{
			"relative url":   {"url": "/hook"},
			"ftp url":        {"url": "ftp://example.com/hook"},
			"user info":      {"url": "https://a:b@example.com/hook"},
			"unknown type":   {"url": "https://example.com/hook", "types": []string{"balance.low", "money.printed"}},
			"duplicate type": {"url": "https://example.com/hook", "types": []string{"balance.low", "balance.low"}},
			"long url":       {"url": "https://example.com/" + strings.Repeat("a", 3000)},
		} {
			t.Run(name, func(t *testing.T) { a.refused(admin, createEndpoint, vars, "INVALID_ARGUMENT") })
		}

		rotated := a.ok(admin, `mutation($id: ID!) { rotateWebhookEndpointSecret(input: {id: $id}) { secret endpoint { previousSecretExpiresAt } } }`,
			map[string]any{"id": id})
		newSecret := fmt.Sprint(rotated.get(t, "rotateWebhookEndpointSecret", "secret"))
		rcv.Trust(newSecret)
		a.ok(admin, grantMutationTo, map[string]any{"u": "bob", "n": 50, "k": "g1"}) // 50 < 100: low
		a.runJobs()
		got := rcv.WaitAccepted(1, 20*time.Second)
		if len(got[0].VerifiedBy) != 2 || len(got[0].Signatures) != 2 {
			t.Fatalf("during the rotation a delivery has signatures %v verified by %v, want both secrets", got[0].Signatures, got[0].VerifiedBy)
		}

		a.ok(admin, `mutation($id: ID!) { updateWebhookEndpoint(input: {id: $id, eventTypes: ["payment.succeeded"]}) { endpoint { eventTypes } } }`,
			map[string]any{"id": id})
		a.ok(admin, `mutation($id: ID!) { deleteWebhookEndpoint(input: {id: $id}) { deletedId } }`, map[string]any{"id": id})
		a.refused(admin, `mutation($id: ID!) { deleteWebhookEndpoint(input: {id: $id}) { deletedId } }`, map[string]any{"id": id}, "NOT_FOUND")
		audit := a.ok(admin, `{ adminActions(first: 20) { edges { node { action targetId } } } }`, nil)
		for _, action := range []string{"create_webhook_endpoint", "rotate_webhook_endpoint_secret", "update_webhook_endpoint", "delete_webhook_endpoint"} {
			if !strings.Contains(string(audit.Data), action) {
				t.Errorf("no %s in the audit: %s", action, audit.Data)
			}
		}
	})
}

// TestPrivateEndpointsRefusedInProduction: with private addresses not
// allowed, an endpoint on loopback is refused when made, and plain http
// too.
func TestPrivateEndpointsRefused(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_WEBHOOK_ALLOW_PRIVATE": "false", "TALLY_WEBHOOK_ALLOW_HTTP": "false"})
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, `{ webhookEventTypes viewer { id } }`, nil)
		for _, url := range []string{"https://127.0.0.1/hook", "https://[::1]/hook", "https://169.254.169.254/latest", "https://10.1.2.3/",
			"https://localhost/hook", "http://example.com/hook"} {
			a.refused(admin, createEndpoint, map[string]any{"url": url}, "INVALID_ARGUMENT")
		}
		a.ok(admin, createEndpoint, map[string]any{"url": "https://hooks.example.com/tally"})
	})
}

// TestGoneDisablesTheEndpoint: a 410 answer fails the delivery and
// disables the endpoint, which then gets nothing until re-enabled.
func TestGoneDisablesTheEndpoint(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, nil)
		rcv.AnswerWith(func(outboundtest.Delivery, int) int { return http.StatusGone })
		a.ok(admin, grantMutationTo, map[string]any{"u": "bob", "n": 50, "k": "g1"})
		a.runJobs()
		waitFor(t, func() bool {
			r := a.ok(admin, `{ webhookEndpoints { edges { node { enabled disabledReason } } } }`, nil)
			return r.get(t, "webhookEndpoints", "edges", "0", "node", "enabled") == false
		})
		r := a.ok(admin, `{ webhookDeliveries { edges { node { id status attempts lastResponseStatus } } } }`, nil)
		if r.get(t, "webhookDeliveries", "edges", "0", "node", "status") != "FAILED" ||
			r.get(t, "webhookDeliveries", "edges", "0", "node", "lastResponseStatus") != float64(410) {
			t.Fatalf("deliveries: %s", r.Data)
		}
		a.ok(admin, grantMutationTo, map[string]any{"u": "carol", "n": 50, "k": "g2"})
		time.Sleep(300 * time.Millisecond)
		if n := len(rcv.All()); n != 1 {
			t.Fatalf("a disabled endpoint got %d requests", n)
		}
		// Redelivered once enabled again, with the same id.
		rcv.AnswerWith(nil)
		a.ok(admin, `mutation($id: ID!) { updateWebhookEndpoint(input: {id: $id, enabled: true}) { endpoint { enabled disabledReason } } }`,
			map[string]any{"id": endpointID(t, a, admin)})
		a.ok(admin, `mutation($id: ID!) { redeliverWebhookEvent(input: {deliveryId: $id}) { delivery { status attempts } } }`,
			map[string]any{"id": r.get(t, "webhookDeliveries", "edges", "0", "node", "id")})
		got := rcv.WaitAccepted(1, 20*time.Second)
		if got[0].ID != rcv.All()[0].ID {
			t.Fatalf("redelivered with id %s, first sent with %s", got[0].ID, rcv.All()[0].ID)
		}
	})
}

func endpointID(t *testing.T, a *api, admin string) any {
	t.Helper()
	return a.ok(admin, `{ webhookEndpoints { edges { node { id } } } }`, nil).get(t, "webhookEndpoints", "edges", "0", "node", "id")
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spendOnBoth spends 1 credit of the user n times at once, half through
// each server, as the application backend would.
func spendOnBoth(t *testing.T, a, b *api, externalID string, n int) {
	t.Helper()
	service := token(t, "backend", auth.RoleService)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv := a
			if i%2 == 1 {
				srv = b
			}
			srv.ok(service, spendFrom, map[string]any{"u": externalID, "n": 1, "k": fmt.Sprintf("s%d", i)})
		}()
	}
	wg.Wait()
}

// TestThresholdCrossedOnceUnderConcurrency: 64 concurrent spends on two
// servers over one database take a user across the threshold; one
// balance.low event is written, not one per spend below it.
func TestThresholdCrossedOnceUnderConcurrency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, _, admin := outboundAPI(t, db, nil)
		b := newAPI(t, db, map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "100", "TALLY_CHECK_INTERVAL": "1h"})
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 130, "k": "g1"})
		spendOnBoth(t, a, b, "alice", 64)
		var low, seq int
		if err := db.SQL.QueryRow(`SELECT COUNT(*) FROM webhook_events WHERE type = 'balance.low'`).Scan(&low); err != nil {
			t.Fatal(err)
		}
		if err := db.SQL.QueryRow(`SELECT event_seq FROM users WHERE external_id = 'alice'`).Scan(&seq); err != nil {
			t.Fatal(err)
		}
		if low != 1 || seq != 1 {
			t.Fatalf("64 spends across the threshold wrote %d balance.low events (user's event number %d), want 1", low, seq)
		}
	})
}

// TestSetLowBalanceThreshold: users set their own, services and admins
// anyone's (admins audited); null is the default; a negative threshold
// is refused.
func TestSetLowBalanceThreshold(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, _, admin := outboundAPI(t, db, nil)
		const set = `mutation($u: String, $n: Int) { setLowBalanceThreshold(input: {externalUserId: $u, threshold: $n}) {
			effectiveThreshold user { lowBalanceThreshold } } }`
		alice := token(t, "alice", auth.RoleUser)
		r := a.ok(alice, set, map[string]any{"n": 40})
		if r.get(t, "setLowBalanceThreshold", "effectiveThreshold") != float64(40) {
			t.Fatalf("own threshold: %s", r.Data)
		}
		a.refused(alice, set, map[string]any{"u": "bob", "n": 40}, "FORBIDDEN")
		a.refused(alice, set, map[string]any{"n": -1}, "INVALID_ARGUMENT")
		r = a.ok(token(t, "backend", auth.RoleService), set, map[string]any{"u": "alice", "n": nil})
		if r.get(t, "setLowBalanceThreshold", "effectiveThreshold") != float64(100) || r.get(t, "setLowBalanceThreshold", "user", "lowBalanceThreshold") != nil {
			t.Fatalf("back to the default: %s", r.Data)
		}
		a.ok(admin, set, map[string]any{"u": "alice", "n": 0})
		audit := a.ok(admin, `{ adminActions(first: 5) { edges { node { action amount } } } }`, nil)
		if !strings.Contains(string(audit.Data), "set_low_balance_threshold") {
			t.Fatalf("an admin's change is not audited: %s", audit.Data)
		}
		// 0: no balance events for alice.
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 5, "k": "g1"})
		var n int
		if err := db.SQL.QueryRow(`SELECT COUNT(*) FROM webhook_events`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d events with the threshold off (%v)", n, err)
		}
	})
}

// TestBackgroundJobsVisibleToAdmins: admins see the queue's jobs (here a
// delivery that completed), others do not, and bad arguments are refused.
func TestBackgroundJobsVisibleToAdmins(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, nil)
		a.ok(admin, grantMutationTo, map[string]any{"u": "bob", "n": 50, "k": "g1"})
		a.runJobs()
		rcv.WaitAccepted(1, 20*time.Second)
		const list = `query($s: [String!], $k: [String!], $n: Int) { backgroundJobs(states: $s, kinds: $k, first: $n) {
			id kind queue state attempt maxAttempts args scheduledAt finalizedAt lastError } }`
		waitFor(t, func() bool {
			r := a.gql(admin, list, map[string]any{"s": []string{"completed"}, "k": []string{"webhook_delivery"}, "n": 10})
			if len(r.Errors) > 0 {
				t.Fatalf("%+v\n%s", r.Errors, a.logs.String())
			}
			jobs, _ := r.get(t, "backgroundJobs").([]any)
			return len(jobs) == 1 && strings.Contains(fmt.Sprint(jobs[0]), "whd_")
		})
		a.refused(token(t, "alice", auth.RoleUser), list, map[string]any{"n": 10}, "FORBIDDEN")
		for name, vars := range map[string]map[string]any{
			"unknown state": {"s": []string{"lost"}, "n": 10},
			"none":          {"n": 0},
			"too many":      {"n": 101},
		} {
			t.Run(name, func(t *testing.T) { a.refused(admin, list, vars, "INVALID_ARGUMENT") })
		}
	})
}
