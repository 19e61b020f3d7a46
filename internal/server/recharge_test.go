package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

const setAutoRecharge = `mutation($in: SetAutoRechargeInput!) { setAutoRecharge(input: $in) {
	replayed autoRecharge { enabled thresholdCredits monthlyLimitAmount chargedThisMonthAmount status lastError
	package { id } paymentMethod { brand last4 expMonth expYear } } user { externalId } } }`

const viewerAutoRecharge = `{ viewer { creditsBalance autoRecharge { status chargedThisMonthAmount lastError lastRechargeAt } } }`

// rechargeAPI is a server charging recharges through a recording
// stripe-mock, with an endpoint at a receiver and its job workers running.
func rechargeAPI(t *testing.T, db *database.DB, rec *stripemock.Recorder) (*api, *outboundtest.Receiver, string) {
	t.Helper()
	a, rcv, admin := outboundAPI(t, db, rechargeEnv(rec))
	a.runJobs()
	return a, rcv, admin
}

func rechargeEnv(rec *stripemock.Recorder) map[string]string {
	return map[string]string{"STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_API_BASE": rec.URL(), "TALLY_CHECK_INTERVAL": "1h"}
}

// savedCard gives the user (made if new) a saved card, as a Checkout with
// saveCard would have left it, and returns the user.
func savedCard(t *testing.T, db *database.DB, externalID string) *ent.User {
	t.Helper()
	ctx := context.Background()
	u, err := db.Ent.User.Query().Where(user.ExternalID(externalID)).Only(ctx)
	if ent.IsNotFound(err) {
		u, err = db.Ent.User.Create().SetExternalID(externalID).Save(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	db.Ent.AutoRecharge.Create().SetUserID(u.ID).SetStripeCustomerID("cus_" + externalID).
		SetStripePaymentMethodID("pm_card_visa").SetCardBrand("visa").SetCardLast4("4242").
		SetCardExpMonth(12).SetCardExpYear(2030).SaveX(ctx)
	return u
}

func rechargePack(t *testing.T, db *database.DB) *ent.CreditPackage {
	t.Helper()
	return db.Ent.CreditPackage.Create().SetName("Top-up").SetCredits(500).SetPriceAmount(1500).SetCurrency("usd").
		SaveX(context.Background())
}

func rechargeInput(pkgID string, extra map[string]any) map[string]any {
	in := map[string]any{"enabled": true, "thresholdCredits": 100, "packageId": pkgID, "monthlyLimitAmount": 10000}
	for k, v := range extra {
		in[k] = v
	}
	return map[string]any{"in": in}
}

// waitPayment waits until the user's only recharge has left PENDING.
func waitRecharge(t *testing.T, db *database.DB, userID string, status payment.Status) *ent.Payment {
	t.Helper()
	var ps []*ent.Payment
	waitFor(t, func() bool {
		ps = db.Ent.Payment.Query().Where(payment.UserID(userID), payment.KindEQ(payment.KindRECHARGE)).AllX(context.Background())
		return len(ps) == 1 && ps[0].Status == status
	})
	return ps[0]
}

// TestRechargeOncePerNeedOnTwoReplicas: 64 concurrent spends on two
// servers over one database take a user below the threshold; one
// recharge, one PaymentIntent, the pack granted once, its events sent.
func TestRechargeOncePerNeedOnTwoReplicas(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		rec := stripemock.NewRecorder(t)
		rec.IntentsAnswer("succeeded")
		a, rcv, admin := rechargeAPI(t, db, rec)
		b := newAPI(t, db, rechargeEnv(rec))
		b.runJobs()
		alice := savedCard(t, db, "alice")
		pkg := rechargePack(t, db)
		r := a.ok(token(t, "alice", auth.RoleUser), setAutoRecharge, rechargeInput(pkg.ID, nil))
		if r.get(t, "setAutoRecharge", "autoRecharge", "status") != "ACTIVE" ||
			r.get(t, "setAutoRecharge", "autoRecharge", "paymentMethod", "last4") != "4242" {
			t.Fatalf("settings: %s", r.Data)
		}
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 130, "k": "g1"})
		spendOnBoth(t, a, b, "alice", 64)
		p := waitRecharge(t, db, alice.ID, payment.StatusSucceeded)
		if n := len(rec.Requests(http.MethodPost, "/v1/payment_intents")); n != 1 {
			t.Fatalf("%d PaymentIntents created for one need", n)
		}
		v := a.ok(token(t, "alice", auth.RoleUser), viewerAutoRecharge, nil)
		if v.get(t, "viewer", "creditsBalance") != float64(130-64+500) ||
			v.get(t, "viewer", "autoRecharge", "chargedThisMonthAmount") != float64(1500) ||
			v.get(t, "viewer", "autoRecharge", "lastRechargeAt") == nil {
			t.Fatalf("after the recharge: %s", v.Data)
		}
		// Told: payment.succeeded and recharge.succeeded, signed.
		told := waitEvent(t, rcv, "recharge.succeeded")
		if pay, _ := told.Data["payment"].(map[string]any); pay["id"] != p.ID || len(told.VerifiedBy) != 1 {
			t.Errorf("recharge.succeeded %v verified by %v", told.Data, told.VerifiedBy)
		}
		waitEvent(t, rcv, "payment.succeeded")
	})
}

// waitEvent waits until the receiver accepted an event of the type.
func waitEvent(t *testing.T, rcv *outboundtest.Receiver, typ string) outboundtest.Delivery {
	t.Helper()
	var found outboundtest.Delivery
	waitFor(t, func() bool {
		for _, d := range rcv.All() {
			if d.Type == typ && d.Answer/100 == 2 {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

// TestSetAutoRechargeRefusals: what setAutoRecharge refuses, with a code,
// changing nothing; who may call it; replays; admin changes audited.
func TestSetAutoRechargeRefusals(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		rec := stripemock.NewRecorder(t)
		a, _, admin := rechargeAPI(t, db, rec)
		pkg := rechargePack(t, db)
		bob := token(t, "bob", auth.RoleUser)
		a.ok(bob, `{ viewer { id } }`, nil)
		// No card yet.
		a.refused(bob, setAutoRecharge, rechargeInput(pkg.ID, nil), "INVALID_ARGUMENT")
		savedCard(t, db, "alice")
		alice := token(t, "alice", auth.RoleUser)
		for _, bad := range []map[string]any{
			{"thresholdCredits": -1},
			{"thresholdCredits": 0},
			{"thresholdCredits": int64(1) << 54},
			{"monthlyLimitAmount": -5},
			{"monthlyLimitAmount": 1499}, // below the pack's price
			{"packageId": nil},
		} {
			a.refused(alice, setAutoRecharge, rechargeInput(pkg.ID, bad), "INVALID_ARGUMENT")
		}
		a.refused(alice, setAutoRecharge, rechargeInput("pkg_unknown", nil), "NOT_FOUND")
		a.refused(alice, setAutoRecharge, rechargeInput(pkg.ID, map[string]any{"externalUserId": "bob"}), "FORBIDDEN")
		a.refused(token(t, "backend", auth.RoleService), setAutoRecharge, rechargeInput(pkg.ID, map[string]any{"externalUserId": "alice"}), "FORBIDDEN")
		a.refused("", setAutoRecharge, rechargeInput(pkg.ID, nil), "UNAUTHENTICATED")
		if a := db.Ent.AutoRecharge.Query().Where(autorecharge.Enabled(true)).CountX(context.Background()); a != 0 {
			t.Fatalf("refused requests turned auto-recharge on for %d users", a)
		}

		keyed := rechargeInput(pkg.ID, map[string]any{"idempotencyKey": "ar-1"})
		if r := a.ok(alice, setAutoRecharge, keyed); r.get(t, "setAutoRecharge", "replayed") != false {
			t.Fatalf("first: %s", r.Data)
		}
		if r := a.ok(alice, setAutoRecharge, keyed); r.get(t, "setAutoRecharge", "replayed") != true {
			t.Fatalf("replay: %s", r.Data)
		}
		a.refused(alice, setAutoRecharge, rechargeInput(pkg.ID, map[string]any{"idempotencyKey": "ar-1", "thresholdCredits": 7}), "IDEMPOTENCY_KEY_REUSED")

		r := a.ok(admin, setAutoRecharge, rechargeInput(pkg.ID, map[string]any{"externalUserId": "alice", "enabled": false}))
		if r.get(t, "setAutoRecharge", "autoRecharge", "enabled") != false {
			t.Fatalf("admin turning it off: %s", r.Data)
		}
		audit := a.ok(admin, `{ adminActions(first: 5) { edges { node { action } } } }`, nil)
		if !strings.Contains(string(audit.Data), "set_auto_recharge") {
			t.Fatalf("an admin's change is not audited: %s", audit.Data)
		}
		if u := db.Ent.User.Query().Where(user.ExternalID("alice")).OnlyX(context.Background()); u.RechargeBelow != nil {
			t.Fatalf("auto-recharge off still triggers below %d", *u.RechargeBelow)
		}
	})
}

// TestRechargeActionRequired: the bank asks for authentication; the
// application is told with what Stripe.js needs, auto-recharge waits, and
// the customer's completion (Stripe's signed event) grants the pack and
// resumes it.
func TestRechargeActionRequired(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		rec := stripemock.NewRecorder(t)
		rec.AnswerWith(func(r stripemock.Request) (int, string) {
			if r.Method != http.MethodPost || r.Path != "/v1/payment_intents" {
				return 0, ""
			}
			return http.StatusPaymentRequired, `{"error":{"type":"card_error","code":"authentication_required","message":"Authentication required.",
				"payment_intent":{"id":"pi_3ds","object":"payment_intent","status":"requires_payment_method","amount":1500,"currency":"usd","client_secret":"pi_3ds_secret_x"}}}`
		})
		a, rcv, admin := rechargeAPI(t, db, rec)
		u := savedCard(t, db, "alice")
		pkg := rechargePack(t, db)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, setAutoRecharge, rechargeInput(pkg.ID, nil))
		a.ok(admin, grantMutationTo, map[string]any{"u": "alice", "n": 50, "k": "g1"}) // below 100 at once
		p := waitRecharge(t, db, u.ID, payment.StatusAwaitingPayment)
		told := waitEvent(t, rcv, "recharge.action_required")
		if told.Data["paymentIntentId"] != "pi_3ds" || told.Data["clientSecret"] != "pi_3ds_secret_x" {
			t.Fatalf("recharge.action_required: %+v", told.Data)
		}
		if v := a.ok(alice, viewerAutoRecharge, nil); v.get(t, "viewer", "autoRecharge", "status") != "ACTION_REQUIRED" {
			t.Fatalf("while waiting: %s", v.Data)
		}
		body := intentEvent("evt_3ds_ok", "payment_intent.succeeded", "pi_3ds", p)
		if code, out := a.webhook(body, signed(body)); code != http.StatusOK || out["outcome"] != "applied" {
			t.Fatalf("completion: %d %v", code, out)
		}
		if code, out := a.webhook(body, signed(body)); code != http.StatusOK || out["outcome"] != "duplicate" {
			t.Fatalf("completion again: %d %v", code, out)
		}
		v := a.ok(alice, viewerAutoRecharge, nil)
		if v.get(t, "viewer", "autoRecharge", "status") != "ACTIVE" || v.get(t, "viewer", "creditsBalance") != float64(550) {
			t.Fatalf("after completion: %s", v.Data)
		}
	})
}

// intentEvent is Stripe's event of a recharge's PaymentIntent.
func intentEvent(id, typ, intentID string, p *ent.Payment) []byte {
	body, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16", "created": time.Now().Unix(),
		"data": map[string]any{"object": map[string]any{
			"id": intentID, "object": "payment_intent", "amount": p.Amount, "currency": p.Currency, "status": "succeeded",
			"latest_charge": "ch_" + intentID, "metadata": map[string]any{"tally_payment_id": p.ID, "user_id": p.UserID},
		}},
	})
	return body
}

// signed is the Stripe-Signature of body with the development secret.
func signed(body []byte) string { return webhook.Sign(body, config.DevWebhookSecret, time.Now()) }
