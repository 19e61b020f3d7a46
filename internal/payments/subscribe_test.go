package payments_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

func (f *purchaseEnv) plan(stripePrice string) *ent.CreditPlan {
	f.t.Helper()
	f.n++
	return f.db.Ent.CreditPlan.Create().SetName(fmt.Sprintf("Plan %d", f.n)).SetCreditsPerPeriod(1000).
		SetInterval(creditplan.IntervalMonth).SetPriceAmount(900).SetCurrency("usd").
		SetStripePriceID(stripePrice).SaveX(f.ctx)
}

func subscribeReq(planID, key string) payments.SubscribeRequest {
	return payments.SubscribeRequest{PlanID: planID, SuccessURL: "https://app.example.com/welcome",
		CancelURL: "https://app.example.com/plans", IdempotencyKey: key}
}

// TestSubscriptionCheckout: an INCOMPLETE subscription and a Checkout
// Session in subscription mode that names it (client reference and the
// Stripe subscription's metadata), with a key of its own; the same key
// replays it; another request with the key is refused.
func TestSubscriptionCheckout(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("subscriber")
		plan := f.plan("")
		res, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "sub-1"))
		if err != nil {
			t.Fatal(err)
		}
		sub := res.Subscription
		if res.Replayed || res.URL == "" || sub.Status != creditsubscription.StatusIncomplete ||
			sub.StripeCheckoutSessionID == nil || *sub.StripeCheckoutSessionID != res.SessionID || sub.PlanID != plan.ID {
			t.Fatalf("result %+v, subscription %+v", res, sub)
		}
		sent := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if len(sent) != 1 {
			t.Fatalf("%d sessions created, want 1", len(sent))
		}
		for k, v := range map[string]string{
			"mode": "subscription", "client_reference_id": sub.ID,
			"subscription_data[metadata][tally_subscription_id]": sub.ID,
			"line_items[0][price_data][recurring][interval]":     "month",
			"line_items[0][price_data][unit_amount]":             "900",
		} {
			if got := sent[0].Form.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if k := sent[0].IdempotencyKey; k != "tally-subscribe-"+sub.ID {
			t.Errorf("Stripe idempotency key %q", k)
		}
		again, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "sub-1"))
		if err != nil || !again.Replayed || again.Subscription.ID != sub.ID {
			t.Fatalf("replay: %+v %v", again, err)
		}
		other := f.plan("price_other")
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(other.ID, "sub-1"))
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		if n := db.Ent.CreditSubscription.Query().CountX(f.ctx); n != 1 {
			t.Fatalf("%d subscriptions, want 1", n)
		}
		// With a Stripe price, the session sends the price.
		if _, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(other.ID, "sub-2")); err != nil {
			t.Fatal(err)
		}
		sent = f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if got := sent[len(sent)-1].Form.Get("line_items[0][price]"); got != "price_other" {
			t.Fatalf("price %q, want price_other", got)
		}
	})
}

// TestSubscriptionCheckoutRefusals change nothing: a plan off sale or
// unknown, a bad URL, a frozen account, a user already subscribed, and a
// Stripe refusal (which leaves no subscription and frees the key).
func TestSubscriptionCheckoutRefusals(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("subscriber")
		plan := f.plan("")
		offSale := f.plan("")
		db.Ent.CreditPlan.UpdateOne(offSale).SetActive(false).ExecX(f.ctx)
		_, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(offSale.ID, "k1"))
		wantAppCode(t, err, apperr.InvalidArgument)
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq("pln_nope", "k2"))
		wantAppCode(t, err, apperr.NotFound)
		bad := subscribeReq(plan.ID, "k3")
		bad.SuccessURL = "javascript:alert(1)"
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, bad)
		wantAppCode(t, err, apperr.InvalidArgument)

		f.stripe.AnswerWith(func(r stripemock.Request) (int, string) {
			if r.Path == "/v1/checkout/sessions" {
				return http.StatusBadRequest, `{"error":{"type":"invalid_request_error","message":"No such price"}}`
			}
			return 0, ""
		})
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "k4"))
		wantAppCode(t, err, apperr.InvalidArgument)
		if n := db.Ent.CreditSubscription.Query().CountX(f.ctx); n != 0 {
			t.Fatalf("%d subscriptions left after refusals, want 0", n)
		}
		f.stripe.AnswerWith(nil)
		if _, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "k4")); err != nil {
			t.Fatalf("the key of a refused request is free again: %v", err)
		}

		db.Ent.CreditSubscription.Update().SetStatus(creditsubscription.StatusActive).ExecX(f.ctx)
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "k5"))
		wantAppCode(t, err, apperr.Conflict)
		frozen := f.user("frozen")
		db.Ent.User.UpdateOne(frozen).SetStatus("FROZEN").ExecX(f.ctx)
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, frozen.ID, subscribeReq(plan.ID, "k6"))
		wantAppCode(t, err, apperr.AccountFrozen)
		if n := db.Ent.CreditSubscription.Query().CountX(f.ctx); n != 1 {
			t.Fatalf("%d subscriptions, want the one", n)
		}
	})
}

// TestCancelSubscription: at period end, then now; Stripe is asked once per
// request (a retry replays), what it answers is recorded; another user's
// subscription is not found; one that has not begun cannot be cancelled.
func TestCancelSubscription(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("subscriber")
		plan := f.plan("")
		sub := db.Ent.CreditSubscription.Create().SetUserID(u.ID).SetPlanID(plan.ID).
			SetStatus(creditsubscription.StatusActive).SetStripeSubscriptionID("sub_123").SaveX(f.ctx)
		f.stripe.Rewrite(func(r stripemock.Request, obj map[string]any) {
			if !strings.HasPrefix(r.Path, "/v1/subscriptions/") {
				return
			}
			obj["id"] = "sub_123"
			if r.Method == http.MethodDelete {
				obj["status"], obj["canceled_at"] = "canceled", time.Now().Unix()
			} else {
				obj["status"], obj["cancel_at_period_end"] = "active", r.Form.Get("cancel_at_period_end") == "true"
			}
		})
		req := payments.CancelRequest{SubscriptionID: sub.ID, AtPeriodEnd: true, IdempotencyKey: "c1"}
		res, err := f.svc.CancelSubscription(f.ctx, u.ID, req, nil)
		if err != nil || res.Replayed || !res.Subscription.CancelAtPeriodEnd || res.Subscription.Status != creditsubscription.StatusActive {
			t.Fatalf("at period end: %+v %v", res, err)
		}
		if res, err = f.svc.CancelSubscription(f.ctx, u.ID, req, nil); err != nil || !res.Replayed {
			t.Fatalf("retry: %+v %v", res, err)
		}
		if n := len(f.stripe.Requests(http.MethodPost, "/v1/subscriptions/sub_123")); n != 1 {
			t.Fatalf("Stripe asked %d times, want once", n)
		}
		other := f.user("other")
		_, err = f.svc.CancelSubscription(f.ctx, other.ID, payments.CancelRequest{SubscriptionID: sub.ID, IdempotencyKey: "c2"}, nil)
		wantAppCode(t, err, apperr.NotFound)

		res, err = f.svc.CancelSubscription(f.ctx, "", payments.CancelRequest{SubscriptionID: sub.ID, IdempotencyKey: "c3"}, nil)
		if err != nil || res.Subscription.Status != creditsubscription.StatusCanceled || res.Subscription.CanceledAt == nil {
			t.Fatalf("now, by an admin: %+v %v", res, err)
		}
		if n := len(f.stripe.Requests(http.MethodDelete, "/v1/subscriptions/sub_123")); n != 1 {
			t.Fatalf("Stripe asked to cancel %d times, want once", n)
		}
		unbegun := db.Ent.CreditSubscription.Create().SetUserID(u.ID).SetPlanID(plan.ID).SaveX(f.ctx)
		_, err = f.svc.CancelSubscription(f.ctx, u.ID, payments.CancelRequest{SubscriptionID: unbegun.ID, IdempotencyKey: "c4"}, nil)
		wantAppCode(t, err, apperr.Conflict)
	})
}

// TestSubscriptionCheckoutResumes: a request that stopped after Stripe
// made the session but before it was stored (the process killed) is
// finished by its retry, which meets the same session in Stripe through
// the subscription's idempotency key.
func TestSubscriptionCheckoutResumes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("subscriber")
		plan := f.plan("")
		first, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "sub-1"))
		if err != nil {
			t.Fatal(err)
		}
		db.Ent.CreditSubscription.UpdateOneID(first.Subscription.ID).ClearStripeCheckoutSessionID().ExecX(f.ctx)
		again, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "sub-1"))
		if err != nil || !again.Replayed || again.SessionID != first.SessionID || again.Subscription.ID != first.Subscription.ID {
			t.Fatalf("resumed: %+v %v; want the first session %s", again, err, first.SessionID)
		}
		sent := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if len(sent) != 2 || sent[0].IdempotencyKey != sent[1].IdempotencyKey {
			t.Fatalf("%d session requests, want 2 with one key", len(sent))
		}
	})
}

// TestSecondCheckoutExpiresTheFirst: one plan at a time. A new checkout
// expires the user's earlier one still open, in Stripe and here; when
// Stripe says that one was completed, the new one is refused.
func TestSecondCheckoutExpiresTheFirst(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("subscriber")
		plan := f.plan("")
		first, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "tab-1"))
		if err != nil {
			t.Fatal(err)
		}
		second, err := f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "tab-2"))
		if err != nil {
			t.Fatal(err)
		}
		expired := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions/"+first.SessionID+"/expire")
		if len(expired) != 1 {
			t.Fatalf("first session expired %d times, want once", len(expired))
		}
		if st := db.Ent.CreditSubscription.GetX(f.ctx, first.Subscription.ID).Status; st != creditsubscription.StatusCanceled {
			t.Fatalf("first subscription %s, want CANCELED", st)
		}
		f.stripe.AnswerWith(func(r stripemock.Request) (int, string) {
			if strings.HasSuffix(r.Path, "/expire") {
				return http.StatusBadRequest, `{"error":{"type":"invalid_request_error","message":"Only Checkout Sessions with a status of open can be expired."}}`
			}
			return 0, ""
		})
		_, err = f.svc.CreateSubscriptionCheckout(f.ctx, u.ID, subscribeReq(plan.ID, "tab-3"))
		wantAppCode(t, err, apperr.Conflict)
		if st := db.Ent.CreditSubscription.GetX(f.ctx, second.Subscription.ID).Status; st != creditsubscription.StatusIncomplete {
			t.Fatalf("second subscription %s, want INCOMPLETE", st)
		}
		if n := db.Ent.CreditSubscription.Query().CountX(f.ctx); n != 2 {
			t.Fatalf("%d subscriptions, want 2", n)
		}
	})
}
