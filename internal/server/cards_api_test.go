package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/stripecustomer"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
)

const cardSetupMutation = `mutation($input: CreateCardSetupSessionInput!) { createCardSetupSession(input: $input) {
	url sessionId replayed } }`

// intentStripe is the recording stripe-mock, answering reads of chosen
// intents itself: stripe-mock's intents never succeed nor name a
// customer, and the saving of a card needs both.
type intentStripe struct {
	*stripemock.Recorder
	mu      sync.Mutex
	answers map[string]string
}

func newIntentStripe(t *testing.T) *intentStripe {
	s := &intentStripe{Recorder: stripemock.NewRecorder(t), answers: map[string]string{}}
	s.AnswerWith(func(r stripemock.Request) (int, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if answer, ok := s.answers[r.Path]; ok && r.Method == http.MethodGet {
			return http.StatusOK, answer
		}
		return 0, ""
	})
	return s
}

// succeeded makes Stripe answer the intent at path (a PaymentIntent or a
// SetupIntent) as succeeded for customer, with a saved Visa ending 4242.
func (s *intentStripe) succeeded(t *testing.T, path, object, customer string) {
	id := path[strings.LastIndex(path, "/")+1:]
	body, err := json.Marshal(map[string]any{
		"id": id, "object": object, "status": "succeeded", "customer": customer,
		"payment_method": map[string]any{
			"id": "pm_" + id, "object": "payment_method", "type": "card", "customer": customer,
			"card": map[string]any{"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2031},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[path] = string(body)
}

// lastSession is the last Checkout Session Tally asked for.
func (s *intentStripe) lastSession() url.Values {
	sent := s.Requests(http.MethodPost, "/v1/checkout/sessions")
	if len(sent) == 0 {
		return nil
	}
	return sent[len(sent)-1].Form
}

func customerOf(t *testing.T, db *database.DB, externalID string) (userID, customerID string) {
	t.Helper()
	ctx := context.Background()
	u := db.Ent.User.Query().Where(user.ExternalID(externalID)).OnlyX(ctx)
	return u.ID, db.Ent.StripeCustomer.Query().Where(stripecustomer.UserID(u.ID)).OnlyX(ctx).StripeCustomerID
}

// waitForCard waits for the job to save the card pm_<intent> for the user.
func waitForCard(t *testing.T, db *database.DB, userID, intent string) {
	t.Helper()
	testwait.Until(t, "the card of "+intent+" saved", func() bool {
		a, err := db.Ent.AutoRecharge.Query().Where(autorecharge.UserID(userID)).Only(context.Background())
		return err == nil && a.StripePaymentMethodID == "pm_"+intent && a.CardBrand == "visa" &&
			a.CardLast4 == "4242" && a.CardExpMonth == 8 && a.CardExpYear == 2031
	})
}

func TestAPICardSetupSession(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := stripeAPI(t, db)
		alice := token(t, "alice", auth.RoleUser)
		input := func(key, success, cancel string) map[string]any {
			return map[string]any{"input": map[string]any{"successUrl": success, "cancelUrl": cancel, "idempotencyKey": key}}
		}
		ok := input("card-1", "https://app.example.com/card?s={CHECKOUT_SESSION_ID}", "https://app.example.com/settings")
		r := a.ok(alice, cardSetupMutation, ok)
		id := r.get(t, "createCardSetupSession", "sessionId")
		if r.get(t, "createCardSetupSession", "url") == "" || id == "" || r.get(t, "createCardSetupSession", "replayed") != false {
			t.Fatalf("card setup: %s", r.Data)
		}
		again := a.ok(alice, cardSetupMutation, ok)
		if again.get(t, "createCardSetupSession", "sessionId") != id || again.get(t, "createCardSetupSession", "replayed") != true {
			t.Fatalf("retried card setup: %s", again.Data)
		}
		a.refused(alice, cardSetupMutation, input("card-1", "https://app.example.com/card", "https://app.example.com/settings"), "IDEMPOTENCY_KEY_REUSED")
		for field, in := range map[string]map[string]any{
			"successUrl": input("bad-1", "javascript:alert(1)", "https://app.example.com/settings"),
			"cancelUrl":  input("bad-2", "https://app.example.com/card", "/settings"),
		} {
			r := a.refused(alice, cardSetupMutation, in, "INVALID_ARGUMENT")
			if f := r.Errors[0].Extensions["field"]; f != "input."+field {
				t.Errorf("a bad %s names %v", field, f)
			}
		}
		a.refused("", cardSetupMutation, input("anon", "https://a.example/ok", "https://a.example/no"), "UNAUTHENTICATED")
		a.refused(token(t, "app", auth.RoleService), cardSetupMutation, input("svc", "https://a.example/ok", "https://a.example/no"), "FORBIDDEN")
		if n := db.Ent.IdempotencyKey.Query().CountX(context.Background()); n != 1 {
			t.Fatalf("%d idempotency records, want the one setup's", n)
		}

		offline := newAPI(t, db, nil)
		offline.refused(alice, cardSetupMutation, input("card-2", "https://a.example/ok", "https://a.example/no"), "UNAVAILABLE")
	})
}

// TestAPISavedCardsEndToEnd: both ways of saving a card, through the real
// webhook and the server's job workers: a purchase with saveCard, once
// paid, and a card setup session, once completed. A setup session event of
// another customer saves nothing.
func TestAPISavedCardsEndToEnd(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		stripe := newIntentStripe(t)
		a := newAPI(t, db, map[string]string{"STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_API_BASE": stripe.URL()})
		a.runJobs()
		alice, bob := token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser)
		pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(100).SetPriceAmount(1000).SetCurrency("usd").SaveX(ctx)

		// A purchase that keeps the card.
		r := a.ok(alice, checkoutMutation, map[string]any{"input": map[string]any{
			"packageId": pkg.ID, "successUrl": "https://app.example.com/ok", "cancelUrl": "https://app.example.com/no",
			"idempotencyKey": "buy-1", "saveCard": true,
		}})
		if got := stripe.lastSession().Get("payment_intent_data[setup_future_usage]"); got != "off_session" {
			t.Fatalf("the purchase's session asked setup_future_usage %q", got)
		}
		aliceID, aliceCus := customerOf(t, db, "alice")
		stripe.succeeded(t, "/v1/payment_intents/pi_alice", "payment_intent", aliceCus)
		p := db.Ent.Payment.GetX(ctx, r.get(t, "createCheckoutSession", "payment", "id").(string))
		paid := paidSession(p)
		paid["payment_intent"] = "pi_alice"
		if code, out := a.stripeEvent("evt_paid", "checkout.session.completed", false, paid); code != 200 || out != "applied" {
			t.Fatalf("paid: %d %s", code, out)
		}
		waitForCard(t, db, aliceID, "pi_alice")

		// A card setup, without buying.
		r = a.ok(bob, cardSetupMutation, map[string]any{"input": map[string]any{
			"successUrl": "https://app.example.com/card", "cancelUrl": "https://app.example.com/settings", "idempotencyKey": "card-1",
		}})
		sessionID := r.get(t, "createCardSetupSession", "sessionId").(string)
		if mode := stripe.lastSession().Get("mode"); mode != "setup" {
			t.Fatalf("card setup session in mode %q", mode)
		}
		bobID, bobCus := customerOf(t, db, "bob")
		setup := func(customer string) map[string]any {
			return map[string]any{
				"id": sessionID, "object": "checkout.session", "mode": "setup", "status": "complete",
				"payment_status": "no_payment_required", "customer": customer, "setup_intent": "seti_bob",
				"metadata": map[string]string{"user_id": bobID, "purpose": "card_setup"},
			}
		}
		// Alice's customer in a session that names bob: refused.
		if code, out := a.stripeEvent("evt_foreign", "checkout.session.completed", false, setup(aliceCus)); code != 200 || out != "failed" {
			t.Fatalf("a foreign customer's setup: %d %s", code, out)
		}
		stripe.succeeded(t, "/v1/setup_intents/seti_bob", "setup_intent", bobCus)
		for i, want := range []string{"applied", "duplicate"} {
			if code, out := a.stripeEvent("evt_setup", "checkout.session.completed", false, setup(bobCus)); code != 200 || out != want {
				t.Fatalf("setup completed, delivery %d: %d %s, want %s", i+1, code, out, want)
			}
		}
		waitForCard(t, db, bobID, "seti_bob")

		testwait.Until(t, "every save_card job completed, once per intent", func() bool {
			rows, err := db.SQL.QueryContext(ctx, "SELECT state FROM river_job WHERE kind = 'save_card'")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				var state string
				if err := rows.Scan(&state); err != nil || state != "completed" {
					return false
				}
				n++
			}
			return rows.Err() == nil && n == 2
		})
		if n := db.Ent.AutoRecharge.Query().CountX(ctx); n != 2 {
			t.Fatalf("%d saved cards, want alice's and bob's", n)
		}
	})
}
