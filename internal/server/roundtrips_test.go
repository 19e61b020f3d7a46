package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

// TestRoundTripsPerRequest: how many times a request waits for
// PostgreSQL, counted by a proxy between the server and the database
// (simple queries and extended-protocol Syncs, so a pipeline would count
// once). On a managed database a millisecond away, each is a millisecond;
// most are made while the account is locked. The budgets are today's
// counts: a change that adds a round trip fails here.
func TestRoundTripsPerRequest(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("SQLite runs in the process: it has no round trips")
		}
		proxied, proxy := testdb.Proxied(t, db)
		// Jobs are not polled during the test: their queries would be
		// counted with the requests'.
		a := newAPI(t, proxied, nil, server.WithJobPolling(time.Hour))
		admin, svc := token(t, "root", auth.RoleAdmin), token(t, "backend", auth.RoleService)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "alice", "amount": 1_000_000, "reason": "seed", "idempotencyKey": "seed",
		}})
		ctx := context.Background()
		pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(10).SetPriceAmount(100).SetCurrency("usd").SaveX(ctx)
		aliceID := db.Ent.User.Query().Where(user.ExternalID("alice")).OnlyIDX(ctx)
		const reserve = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { reservation { id } } }`
		const capture = `mutation($input: CaptureReservationInput!) { captureReservation(input: $input) { transaction { id } } }`
		var reservation string
		var delivery []byte
		for _, op := range []struct {
			name   string
			budget int64
			// setup, if any, runs before each request, uncounted.
			setup func(i int)
			do    func(i int)
		}{
			{"spendCredits", 4, nil, func(i int) {
				a.ok(svc, `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { transaction { id } } }`,
					map[string]any{"input": map[string]any{"externalUserId": "alice", "amount": 1, "idempotencyKey": fmt.Sprint("spend-", i)}})
			}},
			{"viewer { creditsBalance }", 1, nil, func(int) {
				a.ok(alice, `{ viewer { creditsBalance } }`, nil)
			}},
			{"history page of 50", 2, nil, func(int) {
				a.ok(alice, historyPage, nil)
			}},
			{"grantCredits", 8, nil, func(i int) {
				a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
					"externalUserId": "alice", "amount": 1, "reason": "more", "idempotencyKey": fmt.Sprint("grant-", i),
				}})
			}},
			{"reserveCredits", 6, nil, func(i int) {
				r := a.ok(svc, reserve, map[string]any{"input": map[string]any{
					"externalUserId": "alice", "amount": 1, "idempotencyKey": fmt.Sprint("reserve-", i),
				}})
				reservation, _ = r.get(t, "reserveCredits", "reservation", "id").(string)
			}},
			{"captureReservation", 8, func(i int) {
				r := a.ok(svc, reserve, map[string]any{"input": map[string]any{
					"externalUserId": "alice", "amount": 1, "idempotencyKey": fmt.Sprint("to-capture-", i),
				}})
				reservation, _ = r.get(t, "reserveCredits", "reservation", "id").(string)
			}, func(i int) {
				a.ok(svc, capture, map[string]any{"input": map[string]any{"reservationId": reservation, "idempotencyKey": fmt.Sprint("capture-", i)}})
			}},
			{"purchase webhook", 5, func(i int) {
				p := db.Ent.Payment.Create().SetUserID(aliceID).SetPackageID(pkg.ID).SetAmount(100).SetCurrency("usd").
					SetCredits(10).SetStripeCheckoutSessionID(fmt.Sprint("cs_rt_", i)).SaveX(ctx)
				var err error
				if delivery, err = payments.SimulatedCheckoutCompleted(p); err != nil {
					t.Fatal(err)
				}
			}, func(int) {
				if code, out := a.webhook(delivery, webhook.Sign(delivery, config.DevWebhookSecret, time.Now())); code != 200 || out["outcome"] != "applied" {
					t.Fatalf("delivery: %d %v", code, out)
				}
			}},
		} {
			counts := make([]int64, 0, roundTripRuns)
			for i := range roundTripRuns + roundTripWarmup {
				if op.setup != nil {
					op.setup(i)
				}
				before := proxy.RoundTrips()
				op.do(i)
				if i >= roundTripWarmup {
					counts = append(counts, proxy.RoundTrips()-before)
				}
			}
			slices.Sort(counts)
			median := counts[len(counts)/2]
			t.Logf("%s: %d round trips (each run: %v)", op.name, median, counts)
			if median == 0 {
				t.Fatalf("%s: no round trip counted; the proxy is not between the server and the database", op.name)
			}
			if median > op.budget {
				t.Errorf("%s: %d round trips, budget %d", op.name, median, op.budget)
			}
		}
	})
}

// Each operation runs roundTripWarmup times uncounted (each connection
// prepares a statement once, a round trip of its own), then roundTripRuns
// times; the median is asserted (a readiness probe's ping may fall into
// one of them).
const (
	roundTripWarmup = 3
	roundTripRuns   = 7
)
