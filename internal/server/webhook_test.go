package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

func (a *api) webhook(body []byte, signature string) (int, map[string]any) {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, a.ts.URL+"/api/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// stripeEvent posts an event of the given mode, signed as Stripe signs it
// with the development webhook secret, and returns the HTTP status and the
// outcome the endpoint answered.
func (a *api) stripeEvent(id, typ string, livemode bool, object map[string]any) (int, string) {
	a.t.Helper()
	body, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16",
		"created": time.Now().Unix(), "livemode": livemode, "data": map[string]any{"object": object},
	})
	if err != nil {
		a.t.Fatal(err)
	}
	code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now()))
	outcome, _ := out["outcome"].(string)
	return code, outcome
}

// paidSession is the Checkout Session of a paid payment, as Stripe sends it.
func paidSession(p *ent.Payment) map[string]any {
	return map[string]any{
		"id": *p.StripeCheckoutSessionID, "object": "checkout.session", "client_reference_id": p.ID,
		"amount_total": p.Amount, "currency": p.Currency, "payment_status": "paid", "payment_intent": "pi_" + p.ID,
	}
}

// refundedCharge is the payment's charge refunded to a cumulative amount.
func refundedCharge(p *ent.Payment, refunded int64) map[string]any {
	return map[string]any{
		"id": "ch_" + p.ID, "object": "charge", "amount": p.Amount, "amount_refunded": refunded,
		"currency": p.Currency, "payment_intent": "pi_" + p.ID, "refunded": refunded >= p.Amount,
	}
}

// pendingPurchase makes alice's pending payment of 250 credits for $9 and
// the checkout.session.completed event that pays it.
func pendingPurchase(t *testing.T, db *database.DB) (*ent.User, *ent.Payment, []byte) {
	t.Helper()
	ctx := context.Background()
	u := db.Ent.User.Create().SetExternalID("alice").SaveX(ctx)
	pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(250).SetPriceAmount(900).SetCurrency("usd").SaveX(ctx)
	p := db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(900).SetCurrency("usd").
		SetCredits(250).SetStripeCheckoutSessionID("cs_test_1").SaveX(ctx)
	body, err := json.Marshal(map[string]any{
		"id": "evt_1", "object": "event", "type": "checkout.session.completed", "api_version": "2023-10-16",
		"created": time.Now().Unix(), "livemode": false,
		"data": map[string]any{"object": map[string]any{
			"id": "cs_test_1", "object": "checkout.session", "client_reference_id": p.ID,
			"amount_total": 900, "currency": "usd", "payment_status": "paid", "payment_intent": "pi_1",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return u, p, body
}

// TestWebhookPurchaseEndToEnd: a signed checkout.session.completed posted to
// the real endpoint grants the payment's credits once; a bad signature is
// 400 and writes nothing.
func TestWebhookPurchaseEndToEnd(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		ctx := context.Background()
		u, p, body := pendingPurchase(t, db)
		before := moneyDigest(t, db)
		if code, _ := a.webhook(body, webhook.Sign(body, "whsec_wrong", time.Now())); code != 400 {
			t.Fatalf("wrong secret: %d", code)
		}
		if code, _ := a.webhook(body, ""); code != 400 {
			t.Fatalf("no signature: %d", code)
		}
		if moneyDigest(t, db) != before || db.Ent.ProcessedEvent.Query().CountX(ctx) != 0 {
			t.Fatal("a refused delivery wrote something")
		}
		code, out := a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now()))
		if code != 200 || out["outcome"] != "applied" {
			t.Fatalf("signed delivery: %d %v", code, out)
		}
		code, out = a.webhook(body, webhook.Sign(body, config.DevWebhookSecret, time.Now()))
		if code != 200 || out["outcome"] != "duplicate" {
			t.Fatalf("redelivery: %d %v", code, out)
		}
		got := db.Ent.Payment.GetX(ctx, p.ID)
		if got.Status != payment.StatusSucceeded || db.Ent.User.GetX(ctx, u.ID).CreditsBalance != 250 {
			t.Fatalf("payment %s, balance %d", got.Status, db.Ent.User.GetX(ctx, u.ID).CreditsBalance)
		}
	})
}
