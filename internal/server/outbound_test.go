package server_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

const (
	createEndpoint = `mutation($url: String!, $types: [String!]) {
		createWebhookEndpoint(input: {url: $url, eventTypes: $types, description: "app"}) { secret endpoint { id url enabled eventTypes } } }`
	grantMutationTo = `mutation($u: String!, $n: Int!, $k: String!) {
		grantCredits(input: {externalUserId: $u, amount: $n, reason: "test", idempotencyKey: $k}) { transaction { id } } }`
	spendFrom = `mutation($u: String!, $n: Int!, $k: String!) {
		spendCredits(input: {externalUserId: $u, amount: $n, idempotencyKey: $k}) { transaction { id } } }`
)

// outboundAPI is a server whose users are low below 100 credits, which
// retries failed deliveries after 50 ms, with an endpoint at a receiver.
func outboundAPI(t *testing.T, db *database.DB, env map[string]string) (*api, *outboundtest.Receiver, string) {
	t.Helper()
	vars := map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "100", "TALLY_CHECK_INTERVAL": "1h"}
	for k, v := range env {
		vars[k] = v
	}
	a := newAPI(t, db, vars, server.WithWebhookRetries(50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond))
	rcv := outboundtest.New(t)
	admin := token(t, "root", auth.RoleAdmin)
	r := a.ok(admin, createEndpoint, map[string]any{"url": rcv.URL})
	secret := fmt.Sprint(r.get(t, "createWebhookEndpoint", "secret"))
	rcv.Trust(secret)
	return a, rcv, admin
}

// TestOutboundEventsAreSignedOrderedAndRetried: crossing the threshold
// down, reaching 0 and coming back each send one event, signed as the
// specification says (checked by an implementation of its own), in commit
// order even though the first is refused twice before it is accepted,
// with the same webhook-id on every attempt.
func TestOutboundEventsAreSignedOrderedAndRetried(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, nil)
		rcv.AnswerWith(func(d outboundtest.Delivery, attempt int) int {
			if d.Type == "balance.low" && attempt <= 2 {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		service := token(t, "backend", auth.RoleService)
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 150, "k": "g1"})
		a.ok(service, spendFrom, map[string]any{"u": "alice", "n": 60, "k": "s1"})      // 90: low
		a.ok(service, spendFrom, map[string]any{"u": "alice", "n": 10, "k": "s2"})      // 80: still low, no event
		a.ok(service, spendFrom, map[string]any{"u": "alice", "n": 80, "k": "s3"})      // 0: depleted
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 500, "k": "g2"}) // 500: recovered
		a.runJobs()

		got := rcv.WaitAccepted(3, 20*time.Second)
		var types []string
		for _, d := range got {
			types = append(types, d.Type)
			if len(d.VerifiedBy) != 1 {
				t.Errorf("%s %s: signatures %v verify with secrets %v", d.Type, d.ID, d.Signatures, d.VerifiedBy)
			}
			user, _ := d.Data["user"].(map[string]any)
			if user["externalId"] != "alice" {
				t.Errorf("%s: data %v", d.Type, d.Data)
			}
		}
		if want := []string{"balance.low", "balance.depleted", "balance.recovered"}; !slices.Equal(types, want) {
			t.Fatalf("accepted %v, want %v (all: %+v)", types, want, rcv.All())
		}
		if got[0].Data["availableCredits"] != float64(90) || got[1].Data["availableCredits"] != float64(0) ||
			got[2].Data["availableCredits"] != float64(500) || got[0].Data["threshold"] != float64(100) {
			t.Errorf("balances in the events: %v / %v / %v", got[0].Data, got[1].Data, got[2].Data)
		}
		var lowAttempts []string
		for _, d := range rcv.All() {
			if d.Type == "balance.low" {
				lowAttempts = append(lowAttempts, d.ID)
			}
		}
		if len(lowAttempts) != 3 || lowAttempts[0] != lowAttempts[2] || lowAttempts[0][:4] != "whe_" {
			t.Errorf("balance.low attempts had ids %v, want one whe_ id three times", lowAttempts)
		}
		all := rcv.All()
		if len(all) != 5 {
			t.Errorf("the receiver got %d requests, want 5 (two refused, three accepted): %+v", len(all), all)
		}
		r := a.ok(admin, `{ webhookDeliveries(first: 10) { totalCount edges { node { status attempts lastResponseStatus lastError event { type } } } } }`, nil)
		if r.get(t, "webhookDeliveries", "totalCount") != float64(3) {
			t.Errorf("deliveries: %s", r.Data)
		}
	})
}
