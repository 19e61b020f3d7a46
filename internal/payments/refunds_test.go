package payments_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// paid writes a payment of 1000 minor units as the webhook would have left
// it.
func (f *purchaseEnv) paid(status payment.Status, refunded int64, intent string) *ent.Payment {
	f.t.Helper()
	f.n++
	u := f.user("buyer-" + string(rune('a'+f.n)))
	pkg := f.pack(100, 1000)
	c := f.db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(1000).
		SetCurrency("eur").SetCredits(100).SetStatus(status).SetAmountRefunded(refunded)
	if intent != "" {
		c.SetStripePaymentIntentID(intent)
	}
	p, err := c.Save(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func TestRefundAsksStripeAndChangesNothingInTally(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		p := f.paid(payment.StatusPartiallyRefunded, 300, "pi_123")

		r, err := f.svc.CreateRefund(f.ctx, p.ID, 700, "requested_by_customer", "refund-1")
		if err != nil {
			t.Fatal(err)
		}
		if r == nil || !strings.HasPrefix(r.ID, "re_") {
			t.Fatalf("refund %+v: want Stripe's refund", r)
		}
		reqs := f.stripe.Requests(http.MethodPost, "/v1/refunds")
		if len(reqs) != 1 {
			t.Fatalf("%d refund requests, want 1", len(reqs))
		}
		want := map[string]string{
			"payment_intent":       "pi_123",
			"amount":               "700",
			"reason":               "requested_by_customer",
			"metadata[payment_id]": p.ID,
			"metadata[user_id]":    p.UserID,
			"metadata[reason]":     "requested_by_customer",
		}
		for k, v := range want {
			if got := reqs[0].Form.Get(k); got != v {
				t.Errorf("refund %s = %q, want %q", k, got, v)
			}
		}
		if got := reqs[0].IdempotencyKey; got != "tally-refund-"+p.ID+"-refund-1" {
			t.Errorf("refund idempotency key %q", got)
		}

		// Credits and the payment's state move only when Stripe's event comes.
		after := db.Ent.Payment.GetX(f.ctx, p.ID)
		if after.Status != payment.StatusPartiallyRefunded || after.AmountRefunded != 300 {
			t.Fatalf("payment changed to %s / %d refunded", after.Status, after.AmountRefunded)
		}
		if n := db.Ent.CreditTransaction.Query().CountX(f.ctx); n != 0 {
			t.Fatalf("%d credit transactions written by a refund request", n)
		}

		// A retry is the same refund; the key with another amount is refused.
		again, err := f.svc.CreateRefund(f.ctx, p.ID, 700, "requested_by_customer", "refund-1")
		if err != nil || again.ID != r.ID {
			t.Fatalf("retry: %v, refund %v, want %s", err, again, r.ID)
		}
		_, err = f.svc.CreateRefund(f.ctx, p.ID, 500, "requested_by_customer", "refund-1")
		wantAppCode(t, err, apperr.IdempotencyKeyReused)
	})
}

func TestRefundWithFreeTextReasonAndLongKey(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		p := f.paid(payment.StatusSucceeded, 0, "pi_456")
		key := strings.Repeat("k", 255)

		if _, err := f.svc.CreateRefund(f.ctx, p.ID, 1000, "goodwill after outage", key); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.CreateRefund(f.ctx, p.ID, 1000, "goodwill after outage", key); err != nil {
			t.Fatal(err)
		}
		reqs := f.stripe.Requests(http.MethodPost, "/v1/refunds")
		if reqs[0].Form.Has("reason") || reqs[0].Form.Get("metadata[reason]") != "goodwill after outage" {
			t.Fatalf("free-text reason sent as %v: want it in metadata only", reqs[0].Form)
		}
		k := reqs[0].IdempotencyKey
		if len(k) > 255 || !strings.HasPrefix(k, "tally-refund-"+p.ID+"-") || reqs[1].IdempotencyKey != k {
			t.Fatalf("idempotency keys %q, %q: want one deterministic key of at most 255 characters", k, reqs[1].IdempotencyKey)
		}
	})
}

func TestRefundRefusals(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		ok := f.paid(payment.StatusSucceeded, 300, "pi_ok")
		cases := []struct {
			name      string
			paymentID string
			amount    int64
			reason    string
			key       string
			code      apperr.Code
		}{
			{"more than is left", ok.ID, 701, "", "k", apperr.InvalidArgument},
			{"zero", ok.ID, 0, "", "k", apperr.InvalidArgument},
			{"negative", ok.ID, -1, "", "k", apperr.InvalidArgument},
			{"overflowing", ok.ID, ledger.MaxAmount + 1, "", "k", apperr.InvalidArgument},
			{"no key", ok.ID, 10, "", "", apperr.InvalidArgument},
			{"overlong reason", ok.ID, 10, strings.Repeat("r", 501), "k", apperr.InvalidArgument},
			{"unknown payment", "pay_missing", 10, "", "k", apperr.NotFound},
			{"pending", f.paid(payment.StatusPending, 0, "").ID, 10, "", "k", apperr.InvalidArgument},
			{"refunded", f.paid(payment.StatusRefunded, 1000, "pi_r").ID, 1, "", "k", apperr.InvalidArgument},
			{"disputed", f.paid(payment.StatusDisputed, 0, "pi_d").ID, 10, "", "k", apperr.InvalidArgument},
			{"failed", f.paid(payment.StatusFailed, 0, "").ID, 10, "", "k", apperr.InvalidArgument},
			{"no payment intent", f.paid(payment.StatusSucceeded, 0, "").ID, 10, "", "k", apperr.InvalidArgument},
		}
		for _, c := range cases {
			_, err := f.svc.CreateRefund(f.ctx, c.paymentID, c.amount, c.reason, c.key)
			if got := apperr.CodeOf(err); got != c.code {
				t.Errorf("%s: got %s (%v), want %s", c.name, got, err, c.code)
			}
		}
		if reqs := f.stripe.Requests("", ""); len(reqs) != 0 {
			t.Fatalf("refusals called Stripe: %+v", reqs)
		}
		// Exactly what is left is fine.
		if _, err := f.svc.CreateRefund(f.ctx, ok.ID, 700, "", "k"); err != nil {
			t.Fatalf("refunding the rest: %v", err)
		}
	})
}

func TestRefundWhenStripeRefusesOrFails(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newPurchaseEnv(t, db)
		p := f.paid(payment.StatusSucceeded, 0, "pi_789")

		f.stripe.AnswerWith(func(sentRequest) (int, string) {
			return 400, `{"error":{"type":"invalid_request_error","code":"charge_already_refunded","message":"Charge ch_1 has already been refunded."}}`
		})
		_, err := f.svc.CreateRefund(f.ctx, p.ID, 100, "", "k1")
		wantAppCode(t, err, apperr.InvalidArgument)
		if ae, _ := apperr.As(err); !strings.Contains(ae.Message, "already been refunded") {
			t.Fatalf("message %q does not say why Stripe refused", ae.Message)
		}

		f.stripe.AnswerWith(func(sentRequest) (int, string) {
			return 500, `{"error":{"type":"api_error","message":"database shard 7 down"}}`
		})
		_, err = f.svc.CreateRefund(f.ctx, p.ID, 100, "", "k2")
		wantAppCode(t, err, apperr.Unavailable)
		if ae, _ := apperr.As(err); strings.Contains(ae.Message, "shard") {
			t.Fatalf("message %q leaks Stripe's", ae.Message)
		}
	})
}

func TestRefundWithoutStripeKey(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		svc := payments.New(db, ledger.New(db), payments.Config{})
		_, err := svc.CreateRefund(context.Background(), "pay_any", 100, "", "k")
		wantAppCode(t, err, apperr.Unavailable)
		if !errors.Is(err, payments.ErrStripeDisabled) {
			t.Fatalf("error %v does not wrap ErrStripeDisabled", err)
		}
	})
}
