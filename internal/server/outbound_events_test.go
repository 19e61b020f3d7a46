package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

// typesOf are the types of deliveries, in the order they came.
func typesOf(ds []outboundtest.Delivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Type)
	}
	return out
}

// TestPaymentEventsFollowTheStateMachine: a purchase paid, refunded in
// part and disputed and lost tells the application each move, in that
// order, with the payment's state after it; an event Stripe redelivers
// tells nothing twice.
func TestPaymentEventsFollowTheStateMachine(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, _ := outboundAPI(t, db, map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "0"})
		_, p, _ := pendingPurchase(t, db)
		steps := []struct {
			id, typ string
			object  map[string]any
		}{
			{"evt_paid", "checkout.session.completed", paidSession(p)},
			{"evt_paid", "checkout.session.completed", paidSession(p)}, // redelivered
			{"evt_refund", "charge.refunded", refundedCharge(p, 300)},
			{"evt_dispute", "charge.dispute.created", map[string]any{"id": "dp_1", "object": "dispute", "charge": "ch_" + p.ID,
				"payment_intent": "pi_" + p.ID, "amount": 600, "currency": "usd", "status": "needs_response"}},
			{"evt_lost", "charge.dispute.closed", map[string]any{"id": "dp_1", "object": "dispute", "charge": "ch_" + p.ID,
				"payment_intent": "pi_" + p.ID, "amount": 600, "currency": "usd", "status": "lost"}},
		}
		for _, s := range steps {
			if code, outcome := a.stripeEvent(s.id, s.typ, false, s.object); code != 200 {
				t.Fatalf("%s: %d %s", s.typ, code, outcome)
			}
		}
		a.runJobs()
		got := rcv.WaitAccepted(4, 20*time.Second)
		want := []string{"payment.succeeded", "payment.refunded", "payment.disputed", "payment.dispute_closed"}
		if !slices.Equal(typesOf(got), want) {
			t.Fatalf("events %v, want %v", typesOf(got), want)
		}
		status := func(d outboundtest.Delivery) any { return d.Data["payment"].(map[string]any)["status"] }
		if status(got[0]) != "SUCCEEDED" || status(got[1]) != "PARTIALLY_REFUNDED" || status(got[3]) != "CHARGED_BACK" ||
			got[0].Data["creditsBalance"] != float64(250) || got[1].Data["payment"].(map[string]any)["amountRefunded"] != float64(300) {
			t.Fatalf("payment states in the events: %+v", got)
		}
		for _, d := range got {
			if len(d.VerifiedBy) != 1 || d.Data["user"].(map[string]any)["externalId"] != "alice" {
				t.Fatalf("%s: signature verified by %v, data %v", d.Type, d.VerifiedBy, d.Data)
			}
		}
	})
}

// TestPurchaseTellsTheEnabledEndpointsSubscribed: a purchase's
// payment.succeeded goes to each enabled endpoint subscribed to it and to
// no other. (On PostgreSQL a batch of purchases reads the endpoints with
// the statement that locks its users, not on its own before the commit.)
func TestPurchaseTellsTheEnabledEndpointsSubscribed(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "0"})
		endpoint := func(types []string) string {
			r := a.ok(admin, createEndpoint, map[string]any{"url": rcv.URL, "types": types})
			return fmt.Sprint(r.get(t, "createWebhookEndpoint", "endpoint", "id"))
		}
		everything := db.Ent.WebhookEndpoint.Query().OnlyIDX(context.Background()) // outboundAPI's, of every type
		subscribed := endpoint([]string{"payment.succeeded"})
		endpoint([]string{"balance.low"})
		disabled := endpoint([]string{"payment.succeeded"})
		a.ok(admin, `mutation($id: ID!) { updateWebhookEndpoint(input: {id: $id, enabled: false}) { endpoint { enabled } } }`,
			map[string]any{"id": disabled})
		_, p, _ := pendingPurchase(t, db)
		if code, outcome := a.stripeEvent("evt_paid", "checkout.session.completed", false, paidSession(p)); code != 200 {
			t.Fatalf("purchase: %d %s", code, outcome)
		}
		var got []string
		for _, d := range db.Ent.WebhookDelivery.Query().WithEvent().AllX(context.Background()) {
			if d.Edges.Event.Type != "payment.succeeded" {
				t.Fatalf("a %s delivery", d.Edges.Event.Type)
			}
			got = append(got, d.EndpointID)
		}
		slices.Sort(got)
		if want := []string{subscribed, everything}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Fatalf("payment.succeeded delivered to %v, want %v (subscribed) and %v (every type)", got, subscribed, everything)
		}
	})
}

// TestCreditsExpiringAndExpired: a lot with credits left is told of once
// as it nears its expiry (however many sweeps run), and a lot that expires
// once as it does.
func TestCreditsExpiringAndExpired(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, map[string]string{
			"TALLY_LOW_BALANCE_THRESHOLD": "0", "TALLY_EXPIRY_NOTICE": "1h", "TALLY_SWEEP_INTERVAL": "50ms",
		})
		const grant = `mutation($u: String!, $at: Time!) { grantCredits(input: {externalUserId: $u, amount: 40, reason: "trial",
			expiresAt: $at, idempotencyKey: $u}) { transaction { id } } }`
		a.ok(admin, grant, map[string]any{"u": "bob", "at": time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339Nano)})
		a.ok(admin, grant, map[string]any{"u": "alice", "at": time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano)})
		a.runJobs()
		byUser := func() map[string][]string {
			out := map[string][]string{}
			for _, d := range rcv.Accepted() {
				u := d.Data["user"].(map[string]any)["externalId"].(string)
				out[u] = append(out[u], d.Type)
			}
			return out
		}
		waitFor(t, func() bool {
			got := byUser()
			return len(got["bob"]) > 0 && slices.Contains(got["alice"], "credits.expired")
		})
		time.Sleep(300 * time.Millisecond) // several more sweeps
		got := byUser()
		if !slices.Equal(got["bob"], []string{"credits.expiring"}) {
			t.Fatalf("bob's lot, 30 minutes from expiring: %v", got["bob"])
		}
		// Alice's lot may be told of before it expires, if a sweep comes in
		// its last second; it expires once.
		if a := got["alice"]; a[len(a)-1] != "credits.expired" || len(a) > 2 || (len(a) == 2 && a[0] != "credits.expiring") {
			t.Fatalf("alice's lot, expiring in a second: %v", a)
		}
		for _, d := range rcv.Accepted() {
			if d.Data["lot"].(map[string]any)["credits"] != float64(40) {
				t.Fatalf("lot in the event: %v", d.Data)
			}
		}
	})
}

// TestSlowEndpointDoesNotDelayAnother: an endpoint that never answers
// holds at most a few of a process's workers; another endpoint gets every
// event at once.
func TestSlowEndpointDoesNotDelayAnother(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, fast, admin := outboundAPI(t, db, map[string]string{"TALLY_WEBHOOK_TIMEOUT": "5s", "TALLY_WEBHOOK_WORKERS": "8"})
		slow := outboundtest.New(t)
		slow.Hang()
		a.ok(admin, createEndpoint, map[string]any{"url": slow.URL})
		a.runJobs()
		const users = 12
		for i := range users {
			a.ok(admin, grantMutationTo, map[string]any{"u": fmt.Sprintf("user%d", i), "n": 50, "k": fmt.Sprintf("g%d", i)})
		}
		start := time.Now()
		fast.WaitAccepted(users, 4*time.Second)
		if took := time.Since(start); took > 4*time.Second {
			t.Fatalf("the fast endpoint waited %s", took)
		}
		if n := len(slow.All()); n > 4 {
			t.Fatalf("the slow endpoint holds %d requests at once, want at most 4", n)
		}
	})
}

// TestTwoReplicasDeliverOnce: two servers working the queue of one
// database send each event once per endpoint.
func TestTwoReplicasDeliverOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, nil)
		b := newAPI(t, db, map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "100", "TALLY_CHECK_INTERVAL": "1h"},
			server.WithWebhookRetries(50*time.Millisecond))
		const users = 20
		for i := range users {
			srv := a
			if i%2 == 1 {
				srv = b
			}
			srv.ok(admin, grantMutationTo, map[string]any{"u": fmt.Sprintf("user%d", i), "n": 50, "k": fmt.Sprintf("g%d", i)})
		}
		a.runJobs()
		b.runJobs()
		rcv.WaitAccepted(users, 20*time.Second)
		time.Sleep(300 * time.Millisecond)
		seen := map[string]int{}
		for _, d := range rcv.All() {
			seen[d.ID]++
		}
		if len(seen) != users || len(rcv.All()) != users {
			t.Fatalf("%d requests for %d events, want %d each once: %v", len(rcv.All()), len(seen), users, seen)
		}
		// The receiver answers before the worker records it: wait for that.
		waitFor(t, func() bool {
			var pending int
			err := db.SQL.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'DELIVERED'`).Scan(&pending)
			if err != nil {
				t.Fatal(err)
			}
			return pending == 0
		})
	})
}

// TestEventsInCommitOrderUnderConcurrency: many concurrent movements of
// one user, on two servers, cross the threshold up and down many times;
// the receiver, which refuses the first attempt of every third event,
// accepts them all in the order of their commits.
func TestEventsInCommitOrderUnderConcurrency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a, rcv, admin := outboundAPI(t, db, nil)
		b := newAPI(t, db, map[string]string{"TALLY_LOW_BALANCE_THRESHOLD": "100", "TALLY_CHECK_INTERVAL": "1h"},
			server.WithWebhookRetries(50*time.Millisecond, 50*time.Millisecond))
		refused := map[string]bool{}
		var mu sync.Mutex
		rcv.AnswerWith(func(d outboundtest.Delivery, attempt int) int {
			mu.Lock()
			defer mu.Unlock()
			if attempt == 1 && len(refused)%3 == 0 && !refused[d.ID] {
				refused[d.ID] = true
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		})
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 150, "k": "g0"})
		service := token(t, "backend", auth.RoleService)
		events := func() (n int) {
			if err := db.SQL.QueryRow(`SELECT COUNT(*) FROM webhook_events`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		// Rounds of concurrent spends of 100, each given back, around the
		// threshold until they have crossed it at least 8 times (a spend
		// that finds too few credits is refused; what matters is the order
		// of the crossings the others make).
		for round := 0; events() < 8; round++ {
			if round == 20 {
				t.Fatalf("20 rounds crossed the threshold %d times", events())
			}
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					srv := []*api{a, b}[i%2]
					r := srv.gql(service, spendFrom, map[string]any{"u": "alice", "n": 100, "k": fmt.Sprintf("s%d-%d", round, i)})
					if len(r.Errors) == 0 { // give back what was spent: each round ends where it began
						srv.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 100, "k": fmt.Sprintf("g%d-%d", round, i)})
					}
				}()
			}
			wg.Wait()
		}
		rows, err := db.SQL.QueryContext(context.Background(),
			`SELECT e.id FROM webhook_events e JOIN users u ON u.id = e.user_id WHERE u.external_id = 'alice' ORDER BY e.seq`)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			want = append(want, id)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d events", len(want))
		a.runJobs()
		b.runJobs()
		var got []string
		for _, d := range rcv.WaitAccepted(len(want), 30*time.Second) {
			got = append(got, d.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("accepted in the order\n%v\ncommitted in the order\n%v", got, want)
		}
	})
}
