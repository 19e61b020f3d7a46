package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/ent/webhookevent"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

const viewerSubscriptions = `{ viewer { creditsBalance subscriptions(first: 5) { edges { node {
	id status currentPeriodEnd plan { name } } } } } }`

// stripeEventBody is a Stripe event as it is posted, created now.
func stripeEventBody(t *testing.T, id, typ string, object map[string]any) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16",
		"created": time.Now().Unix(), "livemode": false, "data": map[string]any{"object": object},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// planInvoice is a paid invoice of the Stripe subscription for the period
// from start, naming Tally's subscription in its metadata.
func planInvoice(id string, sub *ent.CreditSubscription, stripeSub string, start time.Time, amount int64, reason string) map[string]any {
	return map[string]any{
		"id": id, "object": "invoice", "status": "paid", "paid": true, "billing_reason": reason,
		"subscription": stripeSub, "customer": "cus_alice", "amount_paid": amount, "currency": "usd",
		"payment_intent": "pi_" + id, "charge": "ch_" + id,
		"subscription_details": map[string]any{"metadata": map[string]string{"tally_subscription_id": sub.ID}},
		"lines": map[string]any{"object": "list", "data": []any{map[string]any{
			"id": "il_" + id, "object": "line_item", "type": "subscription", "amount": amount,
			"period": map[string]int64{"start": start.Unix(), "end": start.AddDate(0, 1, 0).Unix()},
		}}},
	}
}

// TestSubscriptionWebhooks: a subscription written INCOMPLETE (as
// createSubscriptionCheckout leaves it) is started by Stripe's signed
// checkout.session.completed and invoice.paid: 200 each, ACTIVE, the
// plan's credits granted once (a redelivery, and the invoice in another
// event, grant nothing more) and subscription.activated sent to the
// application, once. A renewal with a bad signature, or none, or a body
// changed after signing, is 400 and writes nothing.
func TestSubscriptionWebhooks(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		a, rcv, _ := outboundAPI(t, db, nil)
		a.runJobs()
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, viewerQuery, nil) // provisions alice
		u := db.Ent.User.Query().Where(user.ExternalID("alice")).OnlyX(ctx)
		plan := db.Ent.CreditPlan.Create().SetName("Starter monthly").SetCreditsPerPeriod(1000).
			SetInterval(creditplan.IntervalMonth).SetPriceAmount(900).SetCurrency("usd").
			SetRollover(creditplan.RolloverCapped).SetRolloverCap(500).SaveX(ctx)
		sub := db.Ent.CreditSubscription.Create().SetUserID(u.ID).SetPlanID(plan.ID).
			SetStripeCheckoutSessionID("cs_sub_alice").SaveX(ctx)
		start := time.Now().UTC().Truncate(time.Second)

		session := stripeEventBody(t, "evt_sub_cs", "checkout.session.completed", map[string]any{
			"id": "cs_sub_alice", "object": "checkout.session", "mode": "subscription", "client_reference_id": sub.ID,
			"subscription": "sub_stripe_alice", "payment_status": "paid", "status": "complete",
			"metadata": map[string]string{"user_id": u.ID, "tally_subscription_id": sub.ID},
		})
		first := stripeEventBody(t, "evt_sub_in1", "invoice.paid",
			planInvoice("in_alice_1", sub, "sub_stripe_alice", start, 900, "subscription_create"))
		for name, body := range map[string][]byte{"session": session, "invoice": first} {
			if code, out := a.webhook(body, signed(body)); code != http.StatusOK || out["outcome"] != "applied" {
				t.Fatalf("%s: %d %v", name, code, out)
			}
		}
		v := a.ok(alice, viewerSubscriptions, nil)
		node := v.get(t, "viewer", "subscriptions", "edges", "0", "node").(map[string]any)
		wantEnd := start.AddDate(0, 1, 0).Format(time.RFC3339)
		if v.get(t, "viewer", "creditsBalance") != float64(1000) || node["id"] != sub.ID || node["status"] != "ACTIVE" ||
			node["plan"].(map[string]any)["name"] != "Starter monthly" || node["currentPeriodEnd"] != wantEnd {
			t.Fatalf("after the first invoice: %s (want the period to end %s)", v.Data, wantEnd)
		}
		p := db.Ent.Payment.Query().Where(payment.StripeInvoiceID("in_alice_1")).OnlyX(ctx)
		if p.Kind != payment.KindSUBSCRIPTION || p.Status != payment.StatusSucceeded || p.Credits != 1000 || p.Amount != 900 {
			t.Fatalf("the invoice's payment: %+v", p)
		}

		// Stripe delivers again, and sends the invoice in another event.
		if code, out := a.webhook(first, signed(first)); code != http.StatusOK || out["outcome"] != "duplicate" {
			t.Fatalf("redelivery: %d %v", code, out)
		}
		again := stripeEventBody(t, "evt_sub_in1_bis", "invoice.paid",
			planInvoice("in_alice_1", sub, "sub_stripe_alice", start, 900, "subscription_create"))
		if code, out := a.webhook(again, signed(again)); code != http.StatusOK || out["outcome"] != "ignored" {
			t.Fatalf("the invoice in another event: %d %v", code, out)
		}
		if v := a.ok(alice, viewerSubscriptions, nil); v.get(t, "viewer", "creditsBalance") != float64(1000) {
			t.Fatalf("after the redeliveries: %s", v.Data)
		}

		told := waitEvent(t, rcv, "subscription.activated")
		s, _ := told.Data["subscription"].(map[string]any)
		pay, _ := told.Data["payment"].(map[string]any)
		if s["id"] != sub.ID || s["status"] != "ACTIVE" || pay["id"] != p.ID || pay["credits"] != float64(1000) || len(told.VerifiedBy) != 1 {
			t.Fatalf("subscription.activated: %v verified by %v", told.Data, told.VerifiedBy)
		}
		if n := db.Ent.WebhookEvent.Query().Where(webhookevent.Type("subscription.activated")).CountX(ctx); n != 1 {
			t.Fatalf("%d subscription.activated events written, want 1", n)
		}

		// The renewal, refused at the door.
		before := moneyDigest(t, db)
		events := db.Ent.ProcessedEvent.Query().CountX(ctx)
		renewal := stripeEventBody(t, "evt_sub_in2", "invoice.paid",
			planInvoice("in_alice_2", sub, "sub_stripe_alice", start.AddDate(0, 1, 0), 900, "subscription_cycle"))
		tampered := []byte(string(renewal[:len(renewal)-1]) + ` }`)
		for name, signature := range map[string]string{
			"wrong secret": webhook.Sign(renewal, "whsec_wrong", time.Now()),
			"no signature": "",
			"changed body": signed(renewal),
		} {
			body := renewal
			if name == "changed body" {
				body = tampered
			}
			if code, _ := a.webhook(body, signature); code != http.StatusBadRequest {
				t.Fatalf("%s: %d, want 400", name, code)
			}
		}
		if after := moneyDigest(t, db); after != before || db.Ent.ProcessedEvent.Query().CountX(ctx) != events ||
			db.Ent.Payment.Query().Where(payment.StripeInvoiceID("in_alice_2")).ExistX(ctx) {
			t.Fatalf("refused renewals wrote: %s → %s", before, after)
		}
		if got := db.Ent.CreditSubscription.GetX(ctx, sub.ID); got.Status != creditsubscription.StatusActive ||
			got.CurrentPeriodEnd == nil || !got.CurrentPeriodEnd.Equal(start.AddDate(0, 1, 0)) {
			t.Fatalf("refused renewals moved the subscription: %+v", got)
		}
	})
}
