package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

const (
	subscribeMutation = `mutation($input: CreateSubscriptionCheckoutInput!) { createSubscriptionCheckout(input: $input) {
		checkoutUrl sessionId replayed subscription { id status plan { id } user { externalId } } } }`
	cancelMutation = `mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) {
		replayed subscription { id status cancelAtPeriodEnd canceledAt } } }`
)

func subscribeInput(planID, key string) map[string]any {
	return map[string]any{"input": map[string]any{
		"planId": planID, "successUrl": "https://app.example.com/welcome?s={CHECKOUT_SESSION_ID}",
		"cancelUrl": "https://app.example.com/plans", "idempotencyKey": key,
	}}
}

func cancelInput(subID string, atPeriodEnd bool, key string) map[string]any {
	return map[string]any{"input": map[string]any{"subscriptionId": subID, "atPeriodEnd": atPeriodEnd, "idempotencyKey": key}}
}

func TestAPISubscriptionCheckout(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		stripe := stripemock.NewRecorder(t)
		a := newAPI(t, db, map[string]string{"STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_API_BASE": stripe.URL()})
		f := newPlanFixture(t, db)
		alice, admin := token(t, "alice", auth.RoleUser), token(t, "root", auth.RoleAdmin)
		a.ok(alice, viewerQuery, nil) // provisions alice

		r := a.ok(alice, subscribeMutation, subscribeInput(f.plan.ID, "sub-1"))
		subID, _ := r.get(t, "createSubscriptionCheckout", "subscription", "id").(string)
		sessionID := r.get(t, "createSubscriptionCheckout", "sessionId")
		if r.get(t, "createSubscriptionCheckout", "checkoutUrl") == "" || sessionID == "" ||
			r.get(t, "createSubscriptionCheckout", "replayed") != false ||
			r.get(t, "createSubscriptionCheckout", "subscription", "status") != "INCOMPLETE" ||
			r.get(t, "createSubscriptionCheckout", "subscription", "plan", "id") != f.plan.ID ||
			r.get(t, "createSubscriptionCheckout", "subscription", "user", "externalId") != "alice" {
			t.Fatalf("subscription checkout: %s", r.Data)
		}
		sent := stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if len(sent) != 1 || sent[0].Form.Get("mode") != "subscription" || sent[0].Form.Get("client_reference_id") != subID {
			t.Fatalf("Checkout Sessions asked for: %+v", sent)
		}
		again := a.ok(alice, subscribeMutation, subscribeInput(f.plan.ID, "sub-1"))
		if again.get(t, "createSubscriptionCheckout", "replayed") != true ||
			again.get(t, "createSubscriptionCheckout", "subscription", "id") != subID ||
			again.get(t, "createSubscriptionCheckout", "sessionId") != sessionID {
			t.Fatalf("retried subscription checkout: %s", again.Data)
		}

		retired := db.Ent.CreditPlan.Create().SetName("Retired").SetCreditsPerPeriod(10).SetInterval("YEAR").
			SetPriceAmount(100).SetCurrency("usd").SetActive(false).SaveX(ctx)
		a.refusedPlan(alice, subscribeMutation, subscribeInput(retired.ID, "sub-1"), "IDEMPOTENCY_KEY_REUSED", "")
		a.refusedPlan(alice, subscribeMutation, subscribeInput(retired.ID, "sub-2"), "INVALID_ARGUMENT", "input.planId")
		a.refusedPlan(alice, subscribeMutation, subscribeInput("pln_01jd6m3v9q8x0n2k4t7w5y1zbc", "sub-3"), "NOT_FOUND", "")
		for field, value := range map[string]string{"successUrl": "javascript:alert(1)", "cancelUrl": "/plans", "planId": ""} {
			in := subscribeInput(f.plan.ID, "sub-bad-"+field)
			in["input"].(map[string]any)[field] = value
			a.refusedPlan(alice, subscribeMutation, in, "INVALID_ARGUMENT", "input."+field)
		}
		a.refusedPlan(token(t, "app", auth.RoleService), subscribeMutation, subscribeInput(f.plan.ID, "svc"), "FORBIDDEN", "")
		a.refusedPlan("", subscribeMutation, subscribeInput(f.plan.ID, "anon"), "UNAUTHENTICATED", "")

		// One live subscription at a time.
		db.Ent.CreditSubscription.UpdateOneID(subID).SetStatus(creditsubscription.StatusActive).SetStripeSubscriptionID("sub_alice").ExecX(ctx)
		a.refusedPlan(alice, subscribeMutation, subscribeInput(f.plan.ID, "sub-4"), "CONFLICT", "")

		// A frozen account subscribes to nothing.
		bob := token(t, "bob", auth.RoleUser)
		bobID := a.ok(bob, viewerQuery, nil).get(t, "viewer", "id").(string)
		db.Ent.User.UpdateOneID(bobID).SetStatus(user.StatusFrozen).ExecX(ctx)
		a.refusedPlan(bob, subscribeMutation, subscribeInput(f.plan.ID, "sub-frozen"), "ACCOUNT_FROZEN", "")

		// An admin subscribes for their own account, as they buy packs.
		a.ok(admin, viewerQuery, nil)
		r = a.ok(admin, subscribeMutation, subscribeInput(f.plan.ID, "sub-1"))
		if r.get(t, "createSubscriptionCheckout", "subscription", "user", "externalId") != "root" {
			t.Fatalf("an admin's subscription: %s", r.Data)
		}
		if n := db.Ent.CreditSubscription.Query().CountX(ctx); n != 2 {
			t.Fatalf("%d subscriptions, want alice's and the admin's", n)
		}

		offline := newAPI(t, db, nil)
		offline.refusedPlan(alice, subscribeMutation, subscribeInput(f.plan.ID, "sub-5"), "UNAVAILABLE", "")
	})
}

// cancellingStripe answers a subscription's cancellation as Stripe does:
// at period end still active, now cancelled.
func cancellingStripe(t *testing.T) *stripemock.Recorder {
	s := stripemock.NewRecorder(t)
	s.Rewrite(func(r stripemock.Request, obj map[string]any) {
		if !strings.HasPrefix(r.Path, "/v1/subscriptions/") {
			return
		}
		obj["id"] = strings.TrimPrefix(r.Path, "/v1/subscriptions/")
		if r.Method == http.MethodDelete {
			obj["status"], obj["canceled_at"], obj["cancel_at_period_end"] = "canceled", time.Now().Unix(), false
		} else {
			obj["status"], obj["cancel_at_period_end"] = "active", r.Form.Get("cancel_at_period_end") == "true"
		}
	})
	return s
}

func TestAPICancelSubscription(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		stripe := cancellingStripe(t)
		a := newAPI(t, db, map[string]string{"STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_API_BASE": stripe.URL()})
		f := newPlanFixture(t, db)
		alice, bob, admin := token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser), token(t, "root", auth.RoleAdmin)
		sub := f.subscribe(f.userID("alice"), creditsubscription.StatusActive, "sub_alice")
		unbegun := f.subscribe(sub.UserID, creditsubscription.StatusIncomplete, "")
		for _, tok := range []string{bob, admin} {
			a.ok(tok, viewerQuery, nil) // provisions them
		}
		asked := func() int { return len(stripe.Requests("", "/v1/subscriptions/sub_alice")) }

		// Nobody else's, and never a service's.
		a.refusedPlan(bob, cancelMutation, cancelInput(sub.ID, false, "c-bob"), "NOT_FOUND", "")
		a.refusedPlan(alice, cancelMutation, cancelInput("sub_01jd6m3v9q8x0n2k4t7w5y1zbc", false, "c-0"), "NOT_FOUND", "")
		a.refusedPlan(token(t, "app", auth.RoleService), cancelMutation, cancelInput(sub.ID, false, "c-svc"), "FORBIDDEN", "")
		a.refusedPlan("", cancelMutation, cancelInput(sub.ID, false, "c-anon"), "UNAUTHENTICATED", "")
		a.refusedPlan(alice, cancelMutation, cancelInput(unbegun.ID, false, "c-unbegun"), "CONFLICT", "")
		if n := asked(); n != 0 {
			t.Fatalf("Stripe was asked %d times by refused requests", n)
		}

		// The owner, at period end; a retry replays it.
		for i, replayed := range []bool{false, true} {
			r := a.ok(alice, cancelMutation, cancelInput(sub.ID, true, "c-1"))
			if r.get(t, "cancelSubscription", "replayed") != replayed || r.get(t, "cancelSubscription", "subscription", "status") != "ACTIVE" ||
				r.get(t, "cancelSubscription", "subscription", "cancelAtPeriodEnd") != true {
				t.Fatalf("cancel at period end, request %d: %s", i+1, r.Data)
			}
		}
		if n := asked(); n != 1 {
			t.Fatalf("Stripe was asked %d times for one cancellation at period end", n)
		}
		a.refusedPlan(alice, cancelMutation, cancelInput(sub.ID, false, "c-1"), "IDEMPOTENCY_KEY_REUSED", "")
		if n := auditCount(t, db, "cancel_subscription"); n != 0 {
			t.Fatalf("a user's cancellation wrote %d admin records", n)
		}

		// An admin, now: audited once, however often retried.
		for i, replayed := range []bool{false, true} {
			r := a.ok(admin, cancelMutation, cancelInput(sub.ID, false, "adm-1"))
			if r.get(t, "cancelSubscription", "replayed") != replayed || r.get(t, "cancelSubscription", "subscription", "status") != "CANCELED" ||
				r.get(t, "cancelSubscription", "subscription", "canceledAt") == nil {
				t.Fatalf("an admin's cancellation, request %d: %s", i+1, r.Data)
			}
		}
		r := a.ok(admin, `{ adminActions(first: 5, where: {action: "cancel_subscription"}) { totalCount edges { node { targetId targetUser { externalId } admin { externalId } } } } }`, nil)
		if r.get(t, "adminActions", "totalCount") != float64(1) || r.get(t, "adminActions", "edges", "0", "node", "targetId") != sub.ID ||
			r.get(t, "adminActions", "edges", "0", "node", "targetUser", "externalId") != "alice" ||
			r.get(t, "adminActions", "edges", "0", "node", "admin", "externalId") != "root" {
			t.Fatalf("the admin's cancellation's audit: %s", r.Data)
		}
		if n := len(stripe.Requests(http.MethodDelete, "/v1/subscriptions/sub_alice")); n != 1 {
			t.Fatalf("Stripe was asked %d times to cancel now", n)
		}

		offline := newAPI(t, db, nil)
		offline.refusedPlan(alice, cancelMutation, cancelInput(sub.ID, false, "c-2"), "UNAVAILABLE", "")
	})
}
