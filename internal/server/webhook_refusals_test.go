package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// newPayment writes the pending payment createCheckoutSession would write
// for a new buyer: 250 credits for $9, in the given mode.
func newPayment(t *testing.T, db *database.DB, buyer string, livemode bool) *ent.Payment {
	t.Helper()
	ctx := context.Background()
	u := db.Ent.User.Create().SetExternalID(buyer).SaveX(ctx)
	pkg := db.Ent.CreditPackage.Create().SetName("pack of " + buyer).SetCredits(250).SetPriceAmount(900).SetCurrency("usd").SaveX(ctx)
	p := db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(900).SetCurrency("usd").
		SetCredits(250).SetLivemode(livemode).SetStripeCheckoutSessionID("cs_" + u.ID).SaveX(ctx)
	// Read back as stored (PostgreSQL keeps microseconds of updated_at),
	// for comparisons with what events leave.
	return db.Ent.Payment.GetX(ctx, p.ID)
}

// refused asserts what a refused event leaves: answered 200 with outcome
// failed, recorded for admins as FAILED with a reason that mentions
// mentions, and nothing else written: the payment row is as it was (not
// even rewritten), no credits moved for it, and the buyer's balance is
// unchanged.
func refused(t *testing.T, db *database.DB, code int, outcome, eventID string, mentions string, before *ent.Payment, balance int64) *ent.ProcessedEvent {
	t.Helper()
	ctx := context.Background()
	if code != 200 || outcome != "failed" {
		t.Fatalf("%s: answered %d %q, want 200 failed", eventID, code, outcome)
	}
	rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(eventID)).OnlyX(ctx)
	if rec.Outcome != processedevent.OutcomeFailed || !strings.Contains(rec.Error, mentions) {
		t.Errorf("%s: recorded %s %q, want FAILED naming %s", eventID, rec.Outcome, rec.Error, mentions)
	}
	got := db.Ent.Payment.GetX(ctx, before.ID)
	if !got.UpdatedAt.Equal(before.UpdatedAt) || got.Status != before.Status || got.Livemode != before.Livemode ||
		got.AmountRefunded != before.AmountRefunded || (got.PaidAt == nil) != (before.PaidAt == nil) ||
		deref(got.StripePaymentIntentID) != deref(before.StripePaymentIntentID) ||
		deref(got.StripeChargeID) != deref(before.StripeChargeID) {
		t.Errorf("%s changed the payment: %+v, was %+v", eventID, got, before)
	}
	if n := db.Ent.CreditTransaction.Query().Where(credittransaction.PaymentID(before.ID)).CountX(ctx); before.Status == payment.StatusPending && n != 0 {
		t.Errorf("%s: %d credit transactions for a payment never paid", eventID, n)
	}
	if got := db.Ent.User.GetX(ctx, before.UserID).CreditsBalance; got != balance {
		t.Errorf("%s: balance %d, want %d", eventID, got, balance)
	}
	return rec
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestWebhookRefusesSessionsWithoutTheirAmountOrCurrency: a Checkout
// Session event must carry the payment's amount_total and currency. Zero,
// missing or empty ones used to skip the checks and grant the pack; now each
// is refused (200, recorded FAILED, nothing granted or written), including
// a session Stripe reports as no_payment_required with a 0 total. The
// payment still takes its real session afterwards.
func TestWebhookRefusesSessionsWithoutTheirAmountOrCurrency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		ctx := context.Background()
		for i, c := range []struct {
			name, typ, mentions string
			edit                func(map[string]any)
		}{
			{"zero amount", "checkout.session.completed", "amount_total", func(s map[string]any) { s["amount_total"] = 0 }},
			{"no amount", "checkout.session.completed", "amount_total", func(s map[string]any) { delete(s, "amount_total") }},
			{"empty currency", "checkout.session.completed", "currency", func(s map[string]any) { s["currency"] = "" }},
			{"no currency", "checkout.session.completed", "currency", func(s map[string]any) { delete(s, "currency") }},
			{"free", "checkout.session.completed", "amount_total", func(s map[string]any) {
				s["amount_total"], s["payment_status"] = 0, "no_payment_required"
			}},
			{"async zero", "checkout.session.async_payment_succeeded", "amount_total", func(s map[string]any) { s["amount_total"] = 0 }},
			{"async no currency", "checkout.session.async_payment_succeeded", "currency", func(s map[string]any) { delete(s, "currency") }},
		} {
			p := newPayment(t, db, fmt.Sprintf("buyer-%d", i), false)
			sess := paidSession(p)
			c.edit(sess)
			code, out := a.stripeEvent("evt_bad_"+p.ID, c.typ, false, sess)
			rec := refused(t, db, code, out, "evt_bad_"+p.ID, c.mentions, p, 0)
			if rec.PaymentID == nil || *rec.PaymentID != p.ID {
				t.Errorf("%s: recorded for payment %v, want %s", c.name, rec.PaymentID, p.ID)
			}
			if code, out := a.stripeEvent("evt_good_"+p.ID, c.typ, false, paidSession(p)); code != 200 || out != "applied" {
				t.Fatalf("%s: the real session: %d %q", c.name, code, out)
			}
			if got := db.Ent.User.GetX(ctx, p.UserID).CreditsBalance; got != 250 {
				t.Fatalf("%s: balance %d after the real session, want 250", c.name, got)
			}
		}
	})
}

// TestWebhookRefusesRefundsWithoutTheirCurrency: a charge.refunded whose
// currency is empty or missing used to skip the check and claw credits
// back; it is refused (200, FAILED, nothing clawed back, the payment
// untouched), and the real refund is applied after it.
func TestWebhookRefusesRefundsWithoutTheirCurrency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		ctx := context.Background()
		p := newPayment(t, db, "alice", false)
		if code, out := a.stripeEvent("evt_paid", "checkout.session.completed", false, paidSession(p)); code != 200 || out != "applied" {
			t.Fatalf("purchase: %d %q", code, out)
		}
		paid := db.Ent.Payment.GetX(ctx, p.ID)
		for i, edit := range []func(map[string]any){
			func(ch map[string]any) { ch["currency"] = "" },
			func(ch map[string]any) { delete(ch, "currency") },
		} {
			ch := refundedCharge(p, 450)
			edit(ch)
			id := fmt.Sprint("evt_refund_bad_", i)
			code, out := a.stripeEvent(id, "charge.refunded", false, ch)
			refused(t, db, code, out, id, "currency", paid, 250)
			if n := db.Ent.CreditTransaction.Query().Where(credittransaction.KindEQ(credittransaction.KindRefundClawback)).CountX(ctx); n != 0 {
				t.Fatalf("%s clawed back credits (%d transactions)", id, n)
			}
		}
		if code, out := a.stripeEvent("evt_refund", "charge.refunded", false, refundedCharge(p, 450)); code != 200 || out != "applied" {
			t.Fatalf("the real refund: %d %q", code, out)
		}
		if got := db.Ent.User.GetX(ctx, p.UserID).CreditsBalance; got != 125 {
			t.Fatalf("balance %d after refunding half, want 125", got)
		}
	})
}

// TestWebhookRefusesEventsOfTheOtherMode: the server's mode comes from
// STRIPE_SECRET_KEY (sk_live_/rk_live_ is live; no key or a test key is
// test). An event of the other mode is never applied, whatever its type:
// answered 200, recorded FAILED with the mismatch, the payment untouched
// (its livemode included, which events used to overwrite) and no credits
// moved. Events of the server's mode still apply, and leave the payment's
// livemode as it was created.
func TestWebhookRefusesEventsOfTheOtherMode(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("server livemode %v", live), func(t *testing.T) {
			testdb.Each(t, func(t *testing.T, db *database.DB) {
				env := map[string]string{"STRIPE_API_BASE": stripemock.Start(t)}
				if live {
					env["STRIPE_SECRET_KEY"] = "sk_live_tally_test_only"
				}
				a := newAPI(t, db, env)
				ctx := context.Background()
				p := newPayment(t, db, "alice", live)

				code, out := a.stripeEvent("evt_other_paid", "checkout.session.completed", !live, paidSession(p))
				rec := refused(t, db, code, out, "evt_other_paid", "livemode", p, 0)
				if rec.Livemode != !live || rec.PaymentID != nil {
					t.Errorf("recorded with livemode %v for payment %v", rec.Livemode, rec.PaymentID)
				}

				if code, out := a.stripeEvent("evt_paid", "checkout.session.completed", live, paidSession(p)); code != 200 || out != "applied" {
					t.Fatalf("an event of the server's mode: %d %q", code, out)
				}
				paid := db.Ent.Payment.GetX(ctx, p.ID)
				if paid.Status != payment.StatusSucceeded || paid.Livemode != live {
					t.Fatalf("after the purchase: %s, livemode %v", paid.Status, paid.Livemode)
				}

				// A refund or a dispute of the other mode, even one that
				// matches no payment (which would otherwise wait for one).
				for _, e := range []struct {
					id, typ string
					object  map[string]any
				}{
					{"evt_other_refund", "charge.refunded", refundedCharge(p, 900)},
					{"evt_other_dispute", "charge.dispute.closed", map[string]any{
						"id": "dp_1", "object": "dispute", "amount": 900, "currency": "usd",
						"charge": "ch_" + p.ID, "payment_intent": "pi_" + p.ID, "status": "lost",
					}},
					{"evt_other_unknown", "charge.refunded", map[string]any{
						"id": "ch_unknown", "object": "charge", "amount": 900, "amount_refunded": 900,
						"currency": "usd", "payment_intent": "pi_unknown",
					}},
				} {
					code, out := a.stripeEvent(e.id, e.typ, !live, e.object)
					refused(t, db, code, out, e.id, "livemode", paid, 250)
				}
				r := a.checkLedger(token(t, "root", auth.RoleAdmin))
				if r.get(t, "ledgerReport", "ok") != true {
					t.Fatalf("ledger report: %s", r.Data)
				}
			})
		})
	}
}
