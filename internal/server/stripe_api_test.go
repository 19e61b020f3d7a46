package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/adminaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

func TestMain(m *testing.M) { os.Exit(stripemock.Run(m)) }

const checkoutMutation = `mutation($input: CreateCheckoutSessionInput!) { createCheckoutSession(input: $input) {
	checkoutUrl sessionId replayed payment { id status amount currency credits } } }`

func stripeAPI(t *testing.T, db *database.DB) *api {
	return newAPI(t, db, map[string]string{"STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_API_BASE": stripemock.Start(t)})
}

func TestAPICheckoutAndRefund(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		a := stripeAPI(t, db)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(100).SetPriceAmount(1000).SetCurrency("usd").SaveX(ctx)
		input := map[string]any{"input": map[string]any{
			"packageId": pkg.ID, "successUrl": "https://app.example.com/ok?s={CHECKOUT_SESSION_ID}",
			"cancelUrl": "https://app.example.com/cancel", "idempotencyKey": "buy-1",
		}}
		r := a.ok(alice, checkoutMutation, input)
		if r.get(t, "createCheckoutSession", "checkoutUrl") == "" || r.get(t, "createCheckoutSession", "payment", "status") != "PENDING" {
			t.Fatalf("checkout: %s", r.Data)
		}
		payID := r.get(t, "createCheckoutSession", "payment", "id").(string)
		if again := a.ok(alice, checkoutMutation, input); again.get(t, "createCheckoutSession", "payment", "id") != payID ||
			again.get(t, "createCheckoutSession", "replayed") != true {
			t.Fatalf("retried checkout: %s", again.Data)
		}

		// Stripe reports it paid: the credits arrive.
		p := db.Ent.Payment.GetX(ctx, payID)
		body, _ := json.Marshal(map[string]any{
			"id": "evt_paid", "object": "event", "type": "checkout.session.completed", "api_version": "2023-10-16",
			"created": time.Now().Unix(), "data": map[string]any{"object": map[string]any{
				"id": *p.StripeCheckoutSessionID, "object": "checkout.session", "client_reference_id": p.ID,
				"amount_total": 1000, "currency": "usd", "payment_status": "paid", "payment_intent": "pi_alice",
			}},
		})
		if code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now())); code != 200 || out["outcome"] != "applied" {
			t.Fatalf("completed: %d %v", code, out)
		}
		if bal := db.Ent.User.Query().Where(user.ExternalID("alice")).OnlyX(ctx).CreditsBalance; bal != 100 {
			t.Fatalf("balance after the purchase: %d", bal)
		}

		// An admin refunds 40%: 40 credits come back at once, and Stripe's
		// own charge.refunded for the same total changes nothing more.
		refund := `mutation($input: RefundPaymentInput!) { refundPayment(input: $input) {
			refundId payment { status amountRefunded } adminAction { action amount } } }`
		r = a.ok(admin, refund, map[string]any{"input": map[string]any{"paymentId": payID, "amount": 400, "reason": "goodwill", "idempotencyKey": "rf-1"}})
		if r.get(t, "refundPayment", "payment", "status") != "PARTIALLY_REFUNDED" || r.get(t, "refundPayment", "adminAction", "amount") != float64(400) {
			t.Fatalf("refund: %s", r.Data)
		}
		// The same request again: the same refund, no second clawback or audit row.
		again := a.ok(admin, refund, map[string]any{"input": map[string]any{"paymentId": payID, "amount": 400, "reason": "goodwill", "idempotencyKey": "rf-1"}})
		if again.get(t, "refundPayment", "refundId") != r.get(t, "refundPayment", "refundId") {
			t.Fatalf("retried refund: %s", again.Data)
		}
		if n := db.Ent.AdminAction.Query().Where(adminaction.Action("refund_payment")).CountX(ctx); n != 1 {
			t.Fatalf("%d refund audit records after a retried request", n)
		}
		charge, _ := json.Marshal(map[string]any{
			"id": "evt_refunded", "object": "event", "type": "charge.refunded", "api_version": "2023-10-16",
			"created": time.Now().Unix(), "data": map[string]any{"object": map[string]any{
				"id": "ch_alice", "object": "charge", "amount": 1000, "amount_refunded": 400, "currency": "usd", "payment_intent": "pi_alice",
			}},
		})
		if code, _ := a.webhook(charge, webhook.Sign(charge, config.DevWebhookSecret, time.Now())); code != 200 {
			t.Fatalf("charge.refunded: %d", code)
		}
		if bal := db.Ent.User.Query().Where(user.ExternalID("alice")).OnlyX(ctx).CreditsBalance; bal != 60 {
			t.Fatalf("balance after refunding 40%%, event included: %d, want 60", bal)
		}
		if st := db.Ent.Payment.GetX(ctx, payID).Status; st != payment.StatusPartiallyRefunded {
			t.Fatalf("status %s", st)
		}
		for _, amount := range []int{601, 0, -1} {
			r := a.refused(admin, refund, map[string]any{"input": map[string]any{"paymentId": payID, "amount": amount, "reason": "wrong", "idempotencyKey": fmt.Sprint("rf-bad-", amount)}}, "INVALID_ARGUMENT")
			if f := r.Errors[0].Extensions["field"]; f != "input.amount" {
				t.Errorf("a refund of %d names %v, not input.amount", amount, f)
			}
		}
		for field, value := range map[string]string{"successUrl": "javascript:alert(1)", "cancelUrl": "/relative", "packageId": ""} {
			in := map[string]any{"packageId": pkg.ID, "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no", "idempotencyKey": "buy-bad-" + field}
			in[field] = value
			r := a.refused(alice, checkoutMutation, map[string]any{"input": in}, "INVALID_ARGUMENT")
			if f := r.Errors[0].Extensions["field"]; f != "input."+field {
				t.Errorf("a checkout with %s %q names %v", field, value, f)
			}
		}
		a.refused(admin, refund, map[string]any{"input": map[string]any{"paymentId": payID, "amount": 10, "reason": "other", "idempotencyKey": "rf-1"}}, "IDEMPOTENCY_KEY_REUSED")
		a.refused(alice, refund, map[string]any{"input": map[string]any{"paymentId": payID, "amount": 1, "reason": "self", "idempotencyKey": "rf-3"}}, "FORBIDDEN")

		// Replaying an event fetched from Stripe is idempotent and admin-only.
		replay := `mutation { replayStripeEvent(input: {eventId: "evt_123"}) { outcome } }`
		a.refused(alice, replay, nil, "FORBIDDEN")
		first := a.ok(admin, replay, nil).get(t, "replayStripeEvent", "outcome")
		if second := a.ok(admin, replay, nil).get(t, "replayStripeEvent", "outcome"); second != "duplicate" {
			t.Fatalf("replays: %v then %v", first, second)
		}
	})
}

func TestAPICheckoutWithoutStripe(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, viewerQuery, nil)
		pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(100).SetPriceAmount(1000).SetCurrency("usd").SaveX(context.Background())
		a.refused(alice, checkoutMutation, map[string]any{"input": map[string]any{
			"packageId": pkg.ID, "successUrl": "https://a.example/ok", "cancelUrl": "https://a.example/no", "idempotencyKey": "k",
		}}, "UNAVAILABLE")
	})
}
