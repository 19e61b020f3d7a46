package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// These tests kill `tally serve` with SIGKILL around the one external call
// of a recharge (the PaymentIntent) and check that the card is charged
// once and the pack granted once, by the next process.

const intentsPath = "/v1/payment_intents"

// belowThreshold saves alice a card, turns her auto-recharge on (below 100
// credits, a pack of 500 for 1500 cents), grants her 150 credits and
// spends 60: the spend's transaction writes the recharge and its job.
func belowThreshold(t *testing.T, db *database.DB, base, dir string, env []string) *ent.User {
	t.Helper()
	ctx := context.Background()
	admin := mint(t, dir, env, "--sub", "root", "--role", "admin")
	graphql(t, base, admin, `mutation { grantCredits(input: {externalUserId: "alice", amount: 150, reason: "test", idempotencyKey: "g1"}) { transaction { id } } }`, nil, nil)
	alice := db.Ent.User.Query().Where(user.ExternalID("alice")).OnlyX(ctx)
	db.Ent.AutoRecharge.Create().SetUserID(alice.ID).SetStripeCustomerID("cus_alice").SetStripePaymentMethodID("pm_card_visa").
		SetCardBrand("visa").SetCardLast4("4242").SetCardExpMonth(12).SetCardExpYear(2030).SaveX(ctx)
	pkg := db.Ent.CreditPackage.Create().SetName("Top-up").SetCredits(500).SetPriceAmount(1500).SetCurrency("usd").SaveX(ctx)
	graphql(t, base, admin, `mutation($p: ID!) { setAutoRecharge(input: {externalUserId: "alice", enabled: true, thresholdCredits: 100,
		packageId: $p, monthlyLimitAmount: 10000}) { autoRecharge { status } } }`, map[string]any{"p": pkg.ID}, nil)
	service := mint(t, dir, env, "--sub", "backend", "--role", "service")
	graphql(t, base, service, `mutation { spendCredits(input: {externalUserId: "alice", amount: 60, idempotencyKey: "s1"}) { transaction { id } } }`, nil, nil)
	return alice
}

// rechargeOf is the user's only recharge payment.
func rechargeOf(t *testing.T, db *database.DB, userID string) *ent.Payment {
	t.Helper()
	ps := db.Ent.Payment.Query().Where(payment.UserID(userID), payment.KindEQ(payment.KindRECHARGE)).AllX(context.Background())
	if len(ps) != 1 {
		t.Fatalf("%d recharge payments, want 1", len(ps))
	}
	return ps[0]
}

// waitPaid waits until the user's recharge is paid, and checks that the
// pack was granted once and the card charged through one idempotency key.
func waitPaid(t *testing.T, db *database.DB, rec *stripemock.Recorder, userID string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for rechargeOf(t, db, userID).Status != payment.StatusSucceeded {
		if time.Now().After(deadline) {
			t.Fatalf("recharge still %s", rechargeOf(t, db, userID).Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p := rechargeOf(t, db, userID)
	keys := map[string]bool{}
	for _, r := range rec.Requests(http.MethodPost, intentsPath) {
		keys[r.IdempotencyKey] = true
	}
	if len(keys) != 1 || !keys["tally-recharge-"+p.ID] {
		t.Fatalf("intents created with keys %v, want only tally-recharge-%s", keys, p.ID)
	}
	if u := db.Ent.User.GetX(context.Background(), userID); u.CreditsBalance != 150-60+500 {
		t.Fatalf("balance %d, want %d: the pack granted once", u.CreditsBalance, 150-60+500)
	}
}

// TestRechargeSurvivesKillBeforeTheCharge: a server without workers
// commits the recharge with the spend and calls nobody; killed, it leaves
// the recharge to the next server, which charges it once.
func TestRechargeSurvivesKillBeforeTheCharge(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir, db := t.TempDir(), testdb.NewEmpty(t, kind)
			rec := stripemock.NewRecorder(t)
			rec.IntentsAnswer("succeeded")
			env := []string{"DATABASE_URL=" + db.URL, "STRIPE_SECRET_KEY=sk_test_123", "STRIPE_API_BASE=" + rec.URL()}
			webOnly := startServe(t, dir, append(env, "TALLY_WORKERS=0"))
			alice := belowThreshold(t, db, webOnly.base, dir, env)
			if p := rechargeOf(t, db, alice.ID); p.Status != payment.StatusPending {
				t.Fatalf("recharge %s before the kill, want PENDING", p.Status)
			}
			webOnly.kill(t)
			if n := len(rec.Requests(http.MethodPost, intentsPath)); n != 0 {
				t.Fatalf("a server without workers created %d intents", n)
			}
			startServe(t, dir, append(env, "TALLY_WORKERS=2"))
			waitPaid(t, db, rec, alice.ID)
		})
	}
}

// TestRechargeKilledAfterStripeChargedIsChargedOnce: the server dies after
// Stripe made the charge but before it heard the answer; the next server's
// River rescues the job, which asks again with the same idempotency key,
// gets Stripe's first answer, and grants the pack once.
func TestRechargeKilledAfterStripeChargedIsChargedOnce(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir, db := t.TempDir(), testdb.NewEmpty(t, kind)
			rec := stripemock.NewRecorder(t)
			rec.IntentsAnswer("succeeded")
			rec.Hold(func(r stripemock.Request) bool { return r.Method == http.MethodPost && r.Path == intentsPath })
			env := []string{"DATABASE_URL=" + db.URL, "STRIPE_SECRET_KEY=sk_test_123", "STRIPE_API_BASE=" + rec.URL(),
				"TALLY_WORKERS=2", "TALLY_WEBHOOK_TIMEOUT=500ms", "TALLY_JOB_TIMEOUT=2s", "TALLY_JOB_RESCUE_AFTER=4s"}
			first := startServe(t, dir, env)
			alice := belowThreshold(t, db, first.base, dir, env)
			deadline := time.Now().Add(20 * time.Second)
			for len(rec.Requests(http.MethodPost, intentsPath)) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the recharge was not charged")
				}
				time.Sleep(20 * time.Millisecond)
			}
			first.kill(t)
			rec.Release()
			if p := rechargeOf(t, db, alice.ID); p.Status != payment.StatusPending || p.StripePaymentIntentID != nil {
				t.Fatalf("recharge %+v after the kill, want PENDING with no intent recorded", p)
			}
			startServe(t, dir, env)
			waitPaid(t, db, rec, alice.ID)
			if n := len(rec.Requests(http.MethodPost, intentsPath)); n < 2 {
				t.Fatalf("%d intent requests: the rescued job did not ask again", n)
			}
		})
	}
}
