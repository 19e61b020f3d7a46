package payments_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// newCardEnv is a purchase environment whose service queues its jobs
// (the saving of cards) in River's table, as the server's does.
func newCardEnv(t *testing.T, db *database.DB) *purchaseEnv {
	f := newPurchaseEnv(t, db)
	inserter, err := jobs.NewInserter(db)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = payments.New(db, ledger.New(db), payments.Config{SecretKey: "sk_test_123", APIBase: f.stripe.URL(), Jobs: inserter})
	return f
}

func setupReq(key string) payments.CardSetupRequest {
	return payments.CardSetupRequest{
		SuccessURL:     "https://app.example.com/card?session={CHECKOUT_SESSION_ID}",
		CancelURL:      "https://app.example.com/settings",
		IdempotencyKey: key,
	}
}

func (f *purchaseEnv) setup(userID string, req payments.CardSetupRequest) *payments.CardSetupResult {
	f.t.Helper()
	res, err := f.svc.CreateCardSetupSession(f.ctx, userID, req)
	if err != nil {
		f.t.Fatalf("card setup: %v", err)
	}
	return res
}

func TestCardSetupSessionIsASetupModeCheckoutForTheCustomer(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")

		res := f.setup(u.ID, setupReq("card-1"))
		if res.Replayed || res.URL == "" || res.SessionID == "" {
			t.Fatalf("result %+v: want a fresh session with a URL", res)
		}
		customers := db.Ent.StripeCustomer.Query().AllX(f.ctx)
		if len(customers) != 1 || customers[0].UserID != u.ID {
			t.Fatalf("customers %+v: want one of %s", customers, u.ID)
		}
		sent := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if len(sent) != 1 {
			t.Fatalf("%d session requests, want 1", len(sent))
		}
		want := map[string]string{
			"mode":                                 "setup",
			"customer":                             customers[0].StripeCustomerID,
			"payment_method_types[0]":              "card",
			"success_url":                          "https://app.example.com/card?session={CHECKOUT_SESSION_ID}",
			"cancel_url":                           "https://app.example.com/settings",
			"metadata[user_id]":                    u.ID,
			"metadata[purpose]":                    "card_setup",
			"setup_intent_data[metadata][user_id]": u.ID,
			"setup_intent_data[metadata][purpose]": "card_setup",
		}
		for k, v := range want {
			if got := sent[0].Form.Get(k); got != v {
				t.Errorf("session %s = %q, want %q", k, got, v)
			}
		}
		for _, absent := range []string{"line_items[0][quantity]", "client_reference_id", "payment_intent_data[setup_future_usage]"} {
			if sent[0].Form.Has(absent) {
				t.Errorf("a setup session sent %s", absent)
			}
		}
		if k := sent[0].IdempotencyKey; !strings.HasPrefix(k, "tally-card-setup-") || len(k) > 255 {
			t.Errorf("session idempotency key %q", k)
		}
		if c := f.rows(); c != (purchaseRows{Payments: 0, Customers: 1, Keys: 1}) {
			t.Fatalf("rows %+v: a setup writes the customer and the key, no payment", c)
		}
	})
}

func TestCardSetupIdempotency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")

		first := f.setup(u.ID, setupReq("same"))
		again := f.setup(u.ID, setupReq("same"))
		if !again.Replayed || again.SessionID != first.SessionID || again.URL == "" {
			t.Fatalf("retry returned %+v, want a replay of %s", again, first.SessionID)
		}
		if n := len(f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")); n != 1 {
			t.Fatalf("%d sessions created, want 1", n)
		}

		before := f.rows()
		changed := setupReq("same")
		changed.CancelURL = "https://app.example.com/elsewhere"
		_, err := f.svc.CreateCardSetupSession(f.ctx, u.ID, changed)
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		// A key spent on a purchase is not a card setup's, and the reverse.
		pkg := f.pack(100, 500)
		_, err = f.svc.CreateCheckoutSession(f.ctx, u.ID, checkoutReq(pkg.ID, "same"))
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		f.checkout(u.ID, checkoutReq(pkg.ID, "bought"))
		before.Payments++
		before.Keys++
		_, err = f.svc.CreateCardSetupSession(f.ctx, u.ID, setupReq("bought"))
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		if after := f.rows(); after != before {
			t.Fatalf("refused reuse changed rows: %+v → %+v", before, after)
		}
		if n := len(f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")); n != 2 {
			t.Fatalf("%d sessions created, want 2 (the setup and the purchase)", n)
		}

		// Keys belong to their user.
		bob := f.user("bob")
		if res := f.setup(bob.ID, setupReq("same")); res.Replayed || res.SessionID == first.SessionID {
			t.Fatalf("another user's key was replayed: %+v", res)
		}
	})
}

func TestConcurrentCardSetupsWithOneKeyMakeOneSession(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		const n = 6
		results := make([]*payments.CardSetupResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { results[i], errs[i] = f.svc.CreateCardSetupSession(f.ctx, u.ID, setupReq("one")) })
		}
		wg.Wait()
		sessions := map[string]bool{}
		for i, err := range errs {
			// A request meeting another still talking to Stripe with the
			// same attempt is told to try again.
			if apperr.CodeOf(err) == apperr.Conflict {
				continue
			}
			if err != nil {
				t.Fatalf("setup %d: %v", i, err)
			}
			sessions[results[i].SessionID] = true
		}
		if len(sessions) != 1 {
			t.Fatalf("sessions %v: want one", sessions)
		}
		keys := map[string]bool{}
		for _, r := range f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions") {
			keys[r.IdempotencyKey] = true
		}
		if len(keys) != 1 {
			t.Fatalf("Stripe idempotency keys %v: want the attempt's one", keys)
		}
		if c := f.rows(); c.Keys != 1 {
			t.Fatalf("%d idempotency records, want 1", c.Keys)
		}
	})
}

func TestCardSetupRefusals(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		cases := map[string]func(*payments.CardSetupRequest){
			"javascript successUrl": func(r *payments.CardSetupRequest) { r.SuccessURL = "javascript:alert(1)" },
			"relative cancelUrl":    func(r *payments.CardSetupRequest) { r.CancelURL = "/settings" },
			"empty successUrl":      func(r *payments.CardSetupRequest) { r.SuccessURL = "" },
			"long cancelUrl":        func(r *payments.CardSetupRequest) { r.CancelURL = "https://a.example/" + strings.Repeat("x", 2100) },
			"no key":                func(r *payments.CardSetupRequest) { r.IdempotencyKey = "" },
			"control in key":        func(r *payments.CardSetupRequest) { r.IdempotencyKey = "k\x00" },
		}
		for name, change := range cases {
			req := setupReq("bad")
			change(&req)
			_, err := f.svc.CreateCardSetupSession(f.ctx, u.ID, req)
			if apperr.CodeOf(err) != apperr.InvalidArgument {
				t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
			}
		}
		_, err := f.svc.CreateCardSetupSession(f.ctx, "usr_nobody", setupReq("k"))
		wantAppCode(t, err, apperr.NotFound)
		db.Ent.User.UpdateOneID(u.ID).SetStatus(user.StatusFrozen).ExecX(f.ctx)
		_, err = f.svc.CreateCardSetupSession(f.ctx, u.ID, setupReq("k"))
		wantAppCode(t, err, apperr.AccountFrozen)
		if c := f.rows(); c != (purchaseRows{}) || len(f.stripe.Requests("", "")) != 0 {
			t.Fatalf("refused setups wrote %+v or called Stripe", c)
		}

		offline := payments.New(db, ledger.New(db), payments.Config{})
		_, err = offline.CreateCardSetupSession(f.ctx, u.ID, setupReq("k"))
		wantAppCode(t, err, apperr.Unavailable)
		if !errors.Is(err, payments.ErrStripeDisabled) {
			t.Fatalf("without a key: %v", err)
		}
	})
}

// TestCardSetupAfterStripeFailed: a session Stripe did not make leaves no
// record, and the retry with the same key is a new attempt (a new Stripe
// idempotency key: Stripe would replay its failure to the old one).
func TestCardSetupAfterStripeFailed(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		f.setup(u.ID, setupReq("warm-up")) // the customer exists
		f.stripe.AnswerWith(func(r sentRequest) (int, string) {
			if r.Path == "/v1/checkout/sessions" {
				return http.StatusInternalServerError, `{"error":{"type":"api_error","message":"boom"}}`
			}
			return 0, ""
		})
		_, err := f.svc.CreateCardSetupSession(f.ctx, u.ID, setupReq("k"))
		wantAppCode(t, err, apperr.Unavailable)
		if c := f.rows(); c.Keys != 1 {
			t.Fatalf("%d idempotency records after a failed setup, want only the warm-up's", c.Keys)
		}
		f.stripe.AnswerWith(nil)
		res := f.setup(u.ID, setupReq("k"))
		if res.Replayed || res.SessionID == "" {
			t.Fatalf("retry after the failure: %+v", res)
		}
		sent := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if failed, retried := sent[len(sent)-2], sent[len(sent)-1]; failed.IdempotencyKey == retried.IdempotencyKey {
			t.Fatalf("the retry reused the failed attempt's Stripe key %q", failed.IdempotencyKey)
		}
	})
}
