package payments_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

func TestMain(m *testing.M) { os.Exit(stripemock.Run(m)) }

// sentRequest is one request Tally sent to Stripe.
type sentRequest = stripemock.Request

type purchaseEnv struct {
	t      *testing.T
	ctx    context.Context
	db     *database.DB
	svc    *payments.Service
	stripe *stripemock.Recorder
	n      int
}

func newPurchaseEnv(t *testing.T, db *database.DB) *purchaseEnv {
	f := &purchaseEnv{t: t, ctx: context.Background(), db: db, stripe: stripemock.NewRecorder(t)}
	f.svc = payments.New(db, ledger.New(db), payments.Config{SecretKey: "sk_test_123", APIBase: f.stripe.URL()})
	return f
}

func (f *purchaseEnv) user(externalID string) *ent.User {
	f.t.Helper()
	u, err := f.db.Ent.User.Create().SetExternalID(externalID).Save(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return u
}

func (f *purchaseEnv) pack(credits, price int64) *ent.CreditPackage {
	f.t.Helper()
	f.n++
	p, err := f.db.Ent.CreditPackage.Create().SetName(fmt.Sprintf("Pack %d", f.n)).
		SetCredits(credits).SetPriceAmount(price).SetCurrency("eur").Save(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func checkoutReq(pkgID, key string) payments.CheckoutRequest {
	return payments.CheckoutRequest{
		PackageID:      pkgID,
		SuccessURL:     "https://app.example.com/bought?session={CHECKOUT_SESSION_ID}",
		CancelURL:      "https://app.example.com/shop",
		IdempotencyKey: key,
	}
}

func (f *purchaseEnv) checkout(userID string, req payments.CheckoutRequest) *payments.CheckoutResult {
	f.t.Helper()
	res, err := f.svc.CreateCheckoutSession(f.ctx, userID, req)
	if err != nil {
		f.t.Fatalf("checkout: %v", err)
	}
	return res
}

// purchaseRows are the rows a checkout writes.
type purchaseRows struct{ Payments, Customers, Keys int }

func (f *purchaseEnv) rows() purchaseRows {
	f.t.Helper()
	var c purchaseRows
	var err error
	if c.Payments, err = f.db.Ent.Payment.Query().Count(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	if c.Customers, err = f.db.Ent.StripeCustomer.Query().Count(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	if c.Keys, err = f.db.Ent.IdempotencyKey.Query().Count(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	return c
}

func wantAppCode(t *testing.T, err error, code apperr.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := apperr.CodeOf(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
}

func TestCheckoutCreatesPendingPaymentAndSession(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(500, 1299)

		res := f.checkout(u.ID, checkoutReq(pkg.ID, "buy-1"))
		p := res.Payment
		if res.Replayed || res.URL == "" || res.SessionID == "" {
			t.Fatalf("result %+v: want a fresh session with a URL", res)
		}
		if p.Status != payment.StatusPending || p.UserID != u.ID || p.PackageID == nil || *p.PackageID != pkg.ID ||
			p.Amount != 1299 || p.Currency != "eur" || p.Credits != 500 || p.Livemode || p.AmountRefunded != 0 {
			t.Fatalf("payment %+v: want PENDING, 1299 eur for 500 credits of %s", p, pkg.ID)
		}
		stored, err := db.Ent.Payment.Get(f.ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.StripeCheckoutSessionID == nil || *stored.StripeCheckoutSessionID != res.SessionID {
			t.Fatalf("stored session %v, want %s", stored.StripeCheckoutSessionID, res.SessionID)
		}

		customers := db.Ent.StripeCustomer.Query().AllX(f.ctx)
		if len(customers) != 1 || customers[0].UserID != u.ID || customers[0].Livemode {
			t.Fatalf("customers %+v: want one test-mode customer of %s", customers, u.ID)
		}
		custReqs := f.stripe.Requests(http.MethodPost, "/v1/customers")
		if len(custReqs) != 1 || custReqs[0].IdempotencyKey != "tally-customer-"+u.ID ||
			custReqs[0].Form.Get("metadata[user_id]") != u.ID || custReqs[0].Form.Get("metadata[external_id]") != "alice" {
			t.Fatalf("customer requests %+v", custReqs)
		}

		sessReqs := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if len(sessReqs) != 1 {
			t.Fatalf("%d session requests, want 1", len(sessReqs))
		}
		want := map[string]string{
			"mode":                                   "payment",
			"client_reference_id":                    p.ID,
			"customer":                               customers[0].StripeCustomerID,
			"success_url":                            "https://app.example.com/bought?session={CHECKOUT_SESSION_ID}",
			"cancel_url":                             "https://app.example.com/shop",
			"metadata[payment_id]":                   p.ID,
			"metadata[user_id]":                      u.ID,
			"metadata[package_id]":                   pkg.ID,
			"line_items[0][quantity]":                "1",
			"line_items[0][price_data][unit_amount]": "1299",
			"line_items[0][price_data][currency]":    "eur",
			"line_items[0][price_data][product_data][name]": pkg.Name,
			"payment_intent_data[metadata][payment_id]":     p.ID,
		}
		for k, v := range want {
			if got := sessReqs[0].Form.Get(k); got != v {
				t.Errorf("session %s = %q, want %q", k, got, v)
			}
		}
		if sessReqs[0].Form.Has("line_items[0][price]") {
			t.Errorf("session sent a price id for a pack without one")
		}
		if got := sessReqs[0].IdempotencyKey; got != "tally-checkout-"+p.ID {
			t.Errorf("session idempotency key %q, want tally-checkout-%s", got, p.ID)
		}

		// A second purchase reuses the customer.
		res2 := f.checkout(u.ID, checkoutReq(pkg.ID, "buy-2"))
		if res2.Payment.ID == p.ID || res2.SessionID == res.SessionID {
			t.Fatalf("second purchase returned the first (%s, %s)", res2.Payment.ID, res2.SessionID)
		}
		if c := f.rows(); c != (purchaseRows{Payments: 2, Customers: 1, Keys: 2}) {
			t.Fatalf("rows %+v after two purchases", c)
		}
		if n := len(f.stripe.Requests(http.MethodPost, "/v1/customers")); n != 1 {
			t.Fatalf("%d customer creations, want 1", n)
		}
		last := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")[1]
		if last.Form.Get("customer") != customers[0].StripeCustomerID {
			t.Fatalf("second session for customer %q, want %q", last.Form.Get("customer"), customers[0].StripeCustomerID)
		}
	})
}

func TestCheckoutUsesThePacksStripePrice(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(100, 500)
		pkg = pkg.Update().SetStripePriceID("price_1Pack").SaveX(f.ctx)

		f.checkout(u.ID, checkoutReq(pkg.ID, "k"))
		form := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")[0].Form
		if form.Get("line_items[0][price]") != "price_1Pack" || form.Has("line_items[0][price_data][unit_amount]") {
			t.Fatalf("line item %v: want price price_1Pack and no price_data", form)
		}
	})
}

func TestCheckoutIdempotency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(100, 500)
		other := f.pack(200, 900)

		first := f.checkout(u.ID, checkoutReq(pkg.ID, "same"))
		again := f.checkout(u.ID, checkoutReq(pkg.ID, "same"))
		if !again.Replayed || again.Payment.ID != first.Payment.ID || again.SessionID != first.SessionID || again.URL == "" {
			t.Fatalf("retry returned %+v, want a replay of payment %s / %s", again, first.Payment.ID, first.SessionID)
		}
		if n := len(f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")); n != 1 {
			t.Fatalf("%d sessions created, want 1", n)
		}

		// The pack is withdrawn: the replay still answers with the purchase.
		db.Ent.CreditPackage.UpdateOneID(pkg.ID).SetActive(false).ExecX(f.ctx)
		if res := f.checkout(u.ID, checkoutReq(pkg.ID, "same")); res.Payment.ID != first.Payment.ID {
			t.Fatalf("replay after withdrawal returned payment %s", res.Payment.ID)
		}

		before := f.rows()
		_, err := f.svc.CreateCheckoutSession(f.ctx, u.ID, checkoutReq(other.ID, "same"))
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		changed := checkoutReq(pkg.ID, "same")
		changed.CancelURL = "https://app.example.com/elsewhere"
		_, err = f.svc.CreateCheckoutSession(f.ctx, u.ID, changed)
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		if after := f.rows(); after != before {
			t.Fatalf("refused reuse changed rows: %+v → %+v", before, after)
		}

		// Keys belong to their user.
		bob := f.user("bob")
		if res := f.checkout(bob.ID, checkoutReq(other.ID, "same")); res.Replayed || res.Payment.UserID != bob.ID {
			t.Fatalf("another user's key was replayed: %+v", res)
		}
	})
}

func TestCheckoutResumesARequestThatStoppedBeforeStripe(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(100, 500)
		res := f.checkout(u.ID, checkoutReq(pkg.ID, "k"))

		// As if the process died after Stripe answered but before the session
		// id was stored.
		db.Ent.Payment.UpdateOneID(res.Payment.ID).ClearStripeCheckoutSessionID().ExecX(f.ctx)
		again := f.checkout(u.ID, checkoutReq(pkg.ID, "k"))
		if !again.Replayed || again.Payment.ID != res.Payment.ID || again.SessionID != res.SessionID {
			t.Fatalf("resumed request returned %+v, want payment %s with session %s", again, res.Payment.ID, res.SessionID)
		}
		stored := db.Ent.Payment.GetX(f.ctx, res.Payment.ID)
		if stored.StripeCheckoutSessionID == nil || *stored.StripeCheckoutSessionID != res.SessionID {
			t.Fatalf("stored session %v, want %s", stored.StripeCheckoutSessionID, res.SessionID)
		}
		keys := map[string]bool{}
		for _, r := range f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions") {
			keys[r.IdempotencyKey] = true
		}
		if len(keys) != 1 || !keys["tally-checkout-"+res.Payment.ID] {
			t.Fatalf("session idempotency keys %v: the resumed call must reuse the first", keys)
		}
	})
}

func TestConcurrentCheckoutsOfANewUserMakeOneCustomer(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(100, 500)

		const n = 10
		results := make([]*payments.CheckoutResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = f.svc.CreateCheckoutSession(f.ctx, u.ID, checkoutReq(pkg.ID, fmt.Sprintf("key-%d", i)))
			})
		}
		wg.Wait()
		sessions := map[string]bool{}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("checkout %d: %v", i, err)
			}
			sessions[results[i].SessionID] = true
		}
		if len(sessions) != n {
			t.Fatalf("%d distinct sessions for %d purchases", len(sessions), n)
		}
		customers := db.Ent.StripeCustomer.Query().AllX(f.ctx)
		if len(customers) != 1 {
			t.Fatalf("%d StripeCustomer rows, want 1", len(customers))
		}
		for _, r := range f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions") {
			if r.Form.Get("customer") != customers[0].StripeCustomerID {
				t.Fatalf("a session for customer %q, want %q", r.Form.Get("customer"), customers[0].StripeCustomerID)
			}
		}
		for _, r := range f.stripe.Requests(http.MethodPost, "/v1/customers") {
			if r.IdempotencyKey != "tally-customer-"+u.ID {
				t.Fatalf("customer created with idempotency key %q", r.IdempotencyKey)
			}
		}
		if c := f.rows(); c.Payments != n {
			t.Fatalf("%d payments, want %d", c.Payments, n)
		}
	})
}

func TestConcurrentRetriesOfOneCheckoutMakeOnePayment(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(100, 500)

		const n = 6
		results := make([]*payments.CheckoutResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = f.svc.CreateCheckoutSession(f.ctx, u.ID, checkoutReq(pkg.ID, "one"))
			})
		}
		wg.Wait()
		fresh := 0
		for i, err := range errs {
			if err != nil {
				t.Fatalf("checkout %d: %v", i, err)
			}
			if results[i].Payment.ID != results[0].Payment.ID || results[i].SessionID != results[0].SessionID {
				t.Fatalf("retry %d returned %s/%s, retry 0 %s/%s", i,
					results[i].Payment.ID, results[i].SessionID, results[0].Payment.ID, results[0].SessionID)
			}
			if !results[i].Replayed {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d results not marked replayed, want 1", fresh)
		}
		if c := f.rows(); c != (purchaseRows{Payments: 1, Customers: 1, Keys: 1}) {
			t.Fatalf("rows %+v, want one of each", c)
		}
	})
}

func TestCheckoutRefusals(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		u := f.user("alice")
		frozen := db.Ent.User.Create().SetExternalID("frost").SetStatus(user.StatusFrozen).SaveX(f.ctx)
		pkg := f.pack(100, 500)
		inactive := db.Ent.CreditPackage.Create().SetName("Old").SetCredits(1).SetPriceAmount(100).
			SetCurrency("usd").SetActive(false).SaveX(f.ctx)

		with := func(change func(*payments.CheckoutRequest)) payments.CheckoutRequest {
			r := checkoutReq(pkg.ID, "k")
			change(&r)
			return r
		}
		cases := []struct {
			name   string
			userID string
			req    payments.CheckoutRequest
			code   apperr.Code
		}{
			{"unknown package", u.ID, with(func(r *payments.CheckoutRequest) { r.PackageID = "pkg_missing" }), apperr.NotFound},
			{"inactive package", u.ID, with(func(r *payments.CheckoutRequest) { r.PackageID = inactive.ID }), apperr.InvalidArgument},
			{"no package", u.ID, with(func(r *payments.CheckoutRequest) { r.PackageID = "" }), apperr.InvalidArgument},
			{"frozen user", frozen.ID, checkoutReq(pkg.ID, "k"), apperr.AccountFrozen},
			{"unknown user", "usr_missing", checkoutReq(pkg.ID, "k"), apperr.NotFound},
			{"no key", u.ID, with(func(r *payments.CheckoutRequest) { r.IdempotencyKey = "" }), apperr.InvalidArgument},
			{"key with control characters", u.ID, with(func(r *payments.CheckoutRequest) { r.IdempotencyKey = "a\nb" }), apperr.InvalidArgument},
			{"no success URL", u.ID, with(func(r *payments.CheckoutRequest) { r.SuccessURL = "" }), apperr.InvalidArgument},
			{"relative success URL", u.ID, with(func(r *payments.CheckoutRequest) { r.SuccessURL = "/thanks" }), apperr.InvalidArgument},
			{"javascript success URL", u.ID, with(func(r *payments.CheckoutRequest) { r.SuccessURL = "javascript:alert(1)" }), apperr.InvalidArgument},
			{"ftp cancel URL", u.ID, with(func(r *payments.CheckoutRequest) { r.CancelURL = "ftp://example.com/x" }), apperr.InvalidArgument},
			{"cancel URL without host", u.ID, with(func(r *payments.CheckoutRequest) { r.CancelURL = "https:///shop" }), apperr.InvalidArgument},
			{"cancel URL with a space", u.ID, with(func(r *payments.CheckoutRequest) { r.CancelURL = "https://example.com/a b" }), apperr.InvalidArgument},
			{"overlong URL", u.ID, with(func(r *payments.CheckoutRequest) { r.CancelURL = "https://example.com/" + strings.Repeat("a", 2048) }), apperr.InvalidArgument},
		}
		for _, c := range cases {
			_, err := f.svc.CreateCheckoutSession(f.ctx, c.userID, c.req)
			if got := apperr.CodeOf(err); got != c.code {
				t.Errorf("%s: got %s (%v), want %s", c.name, got, err, c.code)
			}
		}
		if c := f.rows(); c != (purchaseRows{}) {
			t.Fatalf("refusals wrote rows: %+v", c)
		}
		if reqs := f.stripe.Requests("", ""); len(reqs) != 0 {
			t.Fatalf("refusals called Stripe: %+v", reqs)
		}
		// A refused request does not use up its key.
		if res := f.checkout(u.ID, checkoutReq(pkg.ID, "k")); res.Replayed {
			t.Fatalf("the key of refused requests replayed %+v", res)
		}
	})
}

func TestCheckoutWithoutStripeKey(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		svc := payments.New(db, ledger.New(db), payments.Config{})
		u := db.Ent.User.Create().SetExternalID("alice").SaveX(context.Background())
		pkg := db.Ent.CreditPackage.Create().SetName("P").SetCredits(1).SetPriceAmount(100).SetCurrency("usd").SaveX(context.Background())
		_, err := svc.CreateCheckoutSession(context.Background(), u.ID, checkoutReq(pkg.ID, "k"))
		wantAppCode(t, err, apperr.Unavailable)
		if !errors.Is(err, payments.ErrStripeDisabled) {
			t.Fatalf("error %v does not wrap ErrStripeDisabled", err)
		}
		if n := db.Ent.Payment.Query().CountX(context.Background()); n != 0 {
			t.Fatalf("%d payments written without Stripe", n)
		}
	})
}

func TestCheckoutWhenStripeFails(t *testing.T) {
	const secret = "stripe internal detail 42"
	sessionsFail := func(status int, body string) func(sentRequest) (int, string) {
		return func(r sentRequest) (int, string) {
			if r.Path == "/v1/checkout/sessions" {
				return status, body
			}
			return 0, ""
		}
	}
	cases := []struct {
		name    string
		answer  func(sentRequest) (int, string)
		code    apperr.Code
		shown   string // in the caller's message
		hidden  string // never in it
		custRow int
	}{
		{
			name:    "session 500",
			answer:  sessionsFail(500, `{"error":{"type":"api_error","message":"`+secret+`"}}`),
			code:    apperr.Unavailable,
			hidden:  secret,
			custRow: 1,
		},
		{
			name:    "session 500 without a JSON body",
			answer:  sessionsFail(500, `<html>`+secret+`</html>`),
			code:    apperr.Unavailable,
			hidden:  secret,
			custRow: 1,
		},
		{
			name:    "session invalid request",
			answer:  sessionsFail(400, `{"error":{"type":"invalid_request_error","message":"No such price: 'price_x'","param":"line_items[0][price]"}}`),
			code:    apperr.InvalidArgument,
			shown:   "No such price",
			custRow: 1,
		},
		{
			name: "customer 500",
			answer: func(r sentRequest) (int, string) {
				if r.Path == "/v1/customers" {
					return 500, `{"error":{"type":"api_error","message":"` + secret + `"}}`
				}
				return 0, ""
			},
			code:   apperr.Unavailable,
			hidden: secret,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, db *database.DB) {
				f := newPurchaseEnv(t, db)
				u := f.user("alice")
				pkg := f.pack(100, 500)
				f.stripe.AnswerWith(c.answer)

				_, err := f.svc.CreateCheckoutSession(f.ctx, u.ID, checkoutReq(pkg.ID, "k"))
				wantAppCode(t, err, c.code)
				ae, _ := apperr.As(err)
				if c.shown != "" && !strings.Contains(ae.Message, c.shown) {
					t.Errorf("message %q does not say %q", ae.Message, c.shown)
				}
				if c.hidden != "" && strings.Contains(ae.Message, c.hidden) {
					t.Errorf("message %q leaks Stripe's %q", ae.Message, c.hidden)
				}
				if got := f.rows(); got != (purchaseRows{Customers: c.custRow}) {
					t.Fatalf("rows after the failure %+v: want no payment and no key", got)
				}

				// Stripe recovers: the same key now makes the purchase, under a
				// new payment (so a new Stripe idempotency key).
				f.stripe.AnswerWith(nil)
				res := f.checkout(u.ID, checkoutReq(pkg.ID, "k"))
				if res.Replayed || res.SessionID == "" {
					t.Fatalf("retry after the failure: %+v", res)
				}
				sessions := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
				for _, r := range sessions[:len(sessions)-1] {
					if r.Form.Get("client_reference_id") == res.Payment.ID {
						t.Fatalf("the failed attempt and the retry share payment %s", res.Payment.ID)
					}
				}
				if got := f.rows(); got != (purchaseRows{Payments: 1, Customers: 1, Keys: 1}) {
					t.Fatalf("rows after the retry %+v", got)
				}
			})
		})
	}
}

func TestCheckoutWhenStripeIsUnreachable(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close() // connections are now refused
		svc := payments.New(db, ledger.New(db), payments.Config{SecretKey: "sk_test_123", APIBase: closed.URL})
		ctx := context.Background()
		u := db.Ent.User.Create().SetExternalID("alice").SaveX(ctx)
		pkg := db.Ent.CreditPackage.Create().SetName("P").SetCredits(1).SetPriceAmount(100).SetCurrency("usd").SaveX(ctx)

		_, err := svc.CreateCheckoutSession(ctx, u.ID, checkoutReq(pkg.ID, "k"))
		wantAppCode(t, err, apperr.Unavailable)
		if n := db.Ent.Payment.Query().CountX(ctx) + db.Ent.StripeCustomer.Query().CountX(ctx) + db.Ent.IdempotencyKey.Query().CountX(ctx); n != 0 {
			t.Fatalf("%d rows written while Stripe was unreachable", n)
		}
	})
}
