package payments_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"

	"entgo.io/ent/dialect"
	"github.com/riverqueue/river/rivertype"
	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/autorecharge"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/stripecustomer"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// queuedCards are the save_card jobs in River's table, oldest first.
func (f *purchaseEnv) queuedCards() []payments.SaveCardArgs {
	f.t.Helper()
	// River keeps args as JSONB on both databases (binary on SQLite).
	args := "json(args)"
	if f.db.Dialect == dialect.Postgres {
		args = "args::text"
	}
	rows, err := f.db.SQL.QueryContext(f.ctx, "SELECT "+args+" FROM river_job WHERE kind = 'save_card' ORDER BY id")
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []payments.SaveCardArgs
	for rows.Next() {
		var raw []byte
		var args payments.SaveCardArgs
		if err := rows.Scan(&raw); err != nil {
			f.t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &args); err != nil {
			f.t.Fatalf("job args %s: %v", raw, err)
		}
		out = append(out, args)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// answerGet makes Stripe answer reads of path with obj.
func (f *purchaseEnv) answerGet(path string, obj map[string]any) {
	body, err := json.Marshal(obj)
	if err != nil {
		f.t.Fatal(err)
	}
	f.stripe.AnswerWith(func(r sentRequest) (int, string) {
		if r.Method == http.MethodGet && r.Path == path {
			return http.StatusOK, string(body)
		}
		return 0, ""
	})
}

// customerOf is the user's Stripe customer id (test mode).
func (f *purchaseEnv) customerOf(userID string) string {
	f.t.Helper()
	return f.db.Ent.StripeCustomer.Query().Where(stripecustomer.UserID(userID)).OnlyX(f.ctx).StripeCustomerID
}

func (f *purchaseEnv) savedCard(userID string) *ent.AutoRecharge {
	f.t.Helper()
	a, err := f.db.Ent.AutoRecharge.Query().Where(autorecharge.UserID(userID)).Only(f.ctx)
	if ent.IsNotFound(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

// cardMethod is an expanded card payment method as Stripe answers it.
func cardMethod(customer string) map[string]any {
	return map[string]any{
		"id": "pm_card_1", "object": "payment_method", "type": "card", "customer": customer,
		"card": map[string]any{"brand": "mastercard", "last4": "4444", "exp_month": 12, "exp_year": 2031},
	}
}

// intentObject is a PaymentIntent (object payment_intent) or SetupIntent
// (setup_intent) with its card expanded.
func intentObject(object, id, status, customer, userID string) map[string]any {
	return map[string]any{
		"id": id, "object": object, "status": status, "customer": customer,
		"metadata": map[string]string{"user_id": userID}, "payment_method": cardMethod(customer),
	}
}

// wantCard fails unless the user's saved card is the one cardMethod describes.
func (f *purchaseEnv) wantCard(userID string) {
	f.t.Helper()
	a := f.savedCard(userID)
	if a == nil || a.StripeCustomerID != f.customerOf(userID) || a.StripePaymentMethodID != "pm_card_1" ||
		a.CardBrand != "mastercard" || a.CardLast4 != "4444" || a.CardExpMonth != 12 || a.CardExpYear != 2031 {
		f.t.Fatalf("saved card %+v: want pm_card_1, a mastercard ending 4444, 12/2031, of the user's customer", a)
	}
}

func cancelled(err error) bool {
	var c *rivertype.JobCancelError
	return errors.As(err, &c)
}

func TestCheckoutWithSaveCard(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		pkg := f.pack(100, 500)

		req := checkoutReq(pkg.ID, "keep")
		req.SaveCard = true
		res := f.checkout(u.ID, req)
		plain := f.checkout(u.ID, checkoutReq(pkg.ID, "plain"))
		sent := f.stripe.Requests(http.MethodPost, "/v1/checkout/sessions")
		if got := sent[0].Form.Get("payment_intent_data[setup_future_usage]"); got != "off_session" {
			t.Fatalf("a saveCard session sent setup_future_usage %q, want off_session", got)
		}
		if sent[1].Form.Has("payment_intent_data[setup_future_usage]") {
			t.Fatalf("a plain session asked to keep the card")
		}
		if !db.Ent.Payment.GetX(f.ctx, res.Payment.ID).SaveCard || db.Ent.Payment.GetX(f.ctx, plain.Payment.ID).SaveCard {
			t.Fatalf("save_card not stored as asked")
		}

		// saveCard is part of the request.
		if again := f.checkout(u.ID, req); !again.Replayed || again.Payment.ID != res.Payment.ID {
			t.Fatalf("retry returned %+v, want a replay of %s", again, res.Payment.ID)
		}
		before := f.rows()
		_, err := f.svc.CreateCheckoutSession(f.ctx, u.ID, checkoutReq(pkg.ID, "keep"))
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		req = checkoutReq(pkg.ID, "plain")
		req.SaveCard = true
		_, err = f.svc.CreateCheckoutSession(f.ctx, u.ID, req)
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
		if after := f.rows(); after != before {
			t.Fatalf("refused reuse changed rows: %+v → %+v", before, after)
		}
	})
}

// TestPaidSaveCardPurchaseSavesTheCard: the webhook that grants a saveCard
// purchase queues, in its transaction, the job that saves the card (once,
// however often the event comes, whichever path decides it); the job
// reads the intent with its card and saves it; running it twice changes
// nothing. A purchase without saveCard queues nothing.
func TestPaidSaveCardPurchaseSavesTheCard(t *testing.T) {
	paths := map[string]func(context.Context, *payments.Service, *stripe.Event, []byte) (string, error){
		"batched": func(ctx context.Context, s *payments.Service, ev *stripe.Event, raw []byte) (string, error) {
			return s.HandleEvent(ctx, ev, raw)
		},
		"alone": payments.HandleAlone,
	}
	for name, handle := range paths {
		t.Run(name, func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, db *database.DB) {
				f := newCardEnv(t, db)
				u := f.user("alice")
				pkg := f.pack(100, 500)
				deliver := func(id, typ string, obj map[string]any) string {
					t.Helper()
					ev, raw := event(id, typ, obj)
					out, err := handle(f.ctx, f.svc, ev, raw)
					if err != nil {
						t.Fatalf("%s: %v", id, err)
					}
					return out
				}
				req := checkoutReq(pkg.ID, "keep")
				req.SaveCard = true
				p := f.checkout(u.ID, req).Payment
				plain := f.checkout(u.ID, checkoutReq(pkg.ID, "plain")).Payment

				if out := deliver("evt_plain", "checkout.session.completed", session(plain, "paid")); out != payments.OutcomeApplied {
					t.Fatalf("plain purchase: %s", out)
				}
				if jobs := f.queuedCards(); len(jobs) != 0 {
					t.Fatalf("a purchase without saveCard queued %+v", jobs)
				}
				// Paid asynchronously: the intent comes with the first event.
				if out := deliver("evt_unpaid", "checkout.session.completed", session(p, "unpaid")); out != payments.OutcomeApplied {
					t.Fatalf("unpaid: %s", out)
				}
				if jobs := f.queuedCards(); len(jobs) != 0 {
					t.Fatalf("an unpaid purchase queued %+v", jobs)
				}
				paid := session(p, "paid")
				delete(paid, "payment_intent")
				for range 2 {
					deliver("evt_paid", "checkout.session.async_payment_succeeded", paid)
				}
				want := []payments.SaveCardArgs{{UserID: u.ID, PaymentIntentID: "pi_" + p.ID}}
				if jobs := f.queuedCards(); !reflect.DeepEqual(jobs, want) {
					t.Fatalf("jobs %+v, want %+v", jobs, want)
				}
				if st := db.Ent.Payment.GetX(f.ctx, p.ID).Status; st != payment.StatusSucceeded {
					t.Fatalf("payment %s", st)
				}

				f.answerGet("/v1/payment_intents/pi_"+p.ID, intentObject("payment_intent", "pi_"+p.ID, "succeeded", f.customerOf(u.ID), u.ID))
				for range 2 {
					if err := payments.WorkSaveCard(f.ctx, f.svc, want[0]); err != nil {
						t.Fatalf("job: %v", err)
					}
				}
				f.wantCard(u.ID)
				if n := db.Ent.AutoRecharge.Query().CountX(f.ctx); n != 1 {
					t.Fatalf("%d auto-recharge rows, want 1", n)
				}
				reads := f.stripe.Requests(http.MethodGet, "/v1/payment_intents/pi_"+p.ID)
				if len(reads) == 0 || reads[0].Form.Get("expand[0]") != "payment_method" {
					t.Fatalf("the intent was read as %+v, want expand[]=payment_method", reads)
				}
			})
		})
	}
}

// TestSaveCardJobOutcomes: what says nothing of Stripe's answer is tried
// again (the job's error); a refusal, or an intent whose card may not be
// kept for the user, gives up at once (River cancels the job) and saves
// nothing.
func TestSaveCardJobOutcomes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		f.setup(u.ID, setupReq("customer")) // alice gets her Stripe customer
		cus := f.customerOf(u.ID)
		args := payments.SaveCardArgs{UserID: u.ID, PaymentIntentID: "pi_1"}
		const path = "/v1/payment_intents/pi_1"
		answer := func(status int, body string) {
			f.stripe.AnswerWith(func(r sentRequest) (int, string) {
				if r.Path == path {
					return status, body
				}
				return 0, ""
			})
		}
		with := func(change func(map[string]any)) map[string]any {
			obj := intentObject("payment_intent", "pi_1", "succeeded", cus, u.ID)
			change(obj)
			return obj
		}
		refusals := map[string]func(){
			"not succeeded": func() {
				f.answerGet(path, with(func(o map[string]any) { o["status"] = "requires_payment_method" }))
			},
			"another customer's intent": func() {
				f.answerGet(path, with(func(o map[string]any) { o["customer"] = "cus_someone_else" }))
			},
			"a card attached elsewhere": func() {
				f.answerGet(path, with(func(o map[string]any) { o["payment_method"] = cardMethod("cus_someone_else") }))
			},
			"another user's intent": func() {
				f.answerGet(path, with(func(o map[string]any) { o["metadata"] = map[string]string{"user_id": "usr_other"} }))
			},
			"not a card": func() {
				f.answerGet(path, with(func(o map[string]any) {
					o["payment_method"] = map[string]any{"id": "pm_sepa", "object": "payment_method", "type": "sepa_debit"}
				}))
			},
			"no payment method": func() { f.answerGet(path, with(func(o map[string]any) { o["payment_method"] = nil })) },
			"no such intent": func() {
				answer(http.StatusNotFound, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such payment_intent"}}`)
			},
		}
		for name, arrange := range refusals {
			arrange()
			if err := payments.WorkSaveCard(f.ctx, f.svc, args); !cancelled(err) {
				t.Errorf("%s: %v, want the job cancelled", name, err)
			}
		}
		retried := map[string]func(){
			"Stripe down": func() { answer(http.StatusInternalServerError, `{"error":{"type":"api_error","message":"boom"}}`) },
			"rate limited": func() {
				answer(http.StatusTooManyRequests, `{"error":{"type":"rate_limit_error","message":"slow down"}}`)
			},
			"a bad key (401)": func() {
				answer(http.StatusUnauthorized, `{"error":{"type":"invalid_request_error","message":"bad key"}}`)
			},
		}
		for name, arrange := range retried {
			arrange()
			if err := payments.WorkSaveCard(f.ctx, f.svc, args); err == nil || cancelled(err) {
				t.Errorf("%s: %v, want an error River retries", name, err)
			}
		}
		// A user without a Stripe customer has no card to keep.
		bob := f.user("bob")
		f.answerGet(path, with(func(map[string]any) {}))
		if err := payments.WorkSaveCard(f.ctx, f.svc, payments.SaveCardArgs{UserID: bob.ID, PaymentIntentID: "pi_1"}); !cancelled(err) {
			t.Errorf("no customer: %v, want the job cancelled", err)
		}
		if n := db.Ent.AutoRecharge.Query().CountX(f.ctx); n != 0 {
			t.Fatalf("%d cards saved by refused jobs", n)
		}
		// And the same intent, as it should be, is saved.
		if err := payments.WorkSaveCard(f.ctx, f.svc, args); err != nil {
			t.Fatal(err)
		}
		f.wantCard(u.ID)
	})
}
