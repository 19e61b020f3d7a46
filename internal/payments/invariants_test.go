package payments_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// pendingPaymentFor is pendingPayment for a pack of credits at amount
// (minor units).
func (f *fixture) pendingPaymentFor(credits, amount int64) *ent.Payment {
	f.t.Helper()
	ctx := context.Background()
	f.n++
	u := f.db.Ent.User.Create().SetExternalID(fmt.Sprintf("buyer-%d", f.n)).SaveX(ctx)
	pkg := f.db.Ent.CreditPackage.Create().SetName(fmt.Sprintf("pack-%d", f.n)).SetCredits(credits).
		SetPriceAmount(amount).SetCurrency("usd").SaveX(ctx)
	return f.db.Ent.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).SetAmount(amount).
		SetCurrency("usd").SetCredits(credits).SetStripeCheckoutSessionID("cs_" + u.ID).SaveX(ctx)
}

// problems runs the check that ledgerReport and reconcile run and returns
// its problems as "invariant subject" lines, sorted, with their details.
func (f *fixture) problems() (found []string, details string) {
	f.t.Helper()
	r, err := f.svc.Check(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	var d strings.Builder
	for _, p := range r.Problems {
		found = append(found, p.Invariant+" "+p.Subject)
		fmt.Fprintf(&d, "\n  %s %s: %s", p.Invariant, p.Subject, p.Detail)
	}
	slices.Sort(found)
	return found, d.String()
}

func (f *fixture) wantProblems(want ...string) string {
	f.t.Helper()
	slices.Sort(want)
	got, details := f.problems()
	if !slices.Equal(got, want) {
		f.t.Fatalf("problems %v, want %v:%s", got, want, details)
	}
	return details
}

// TestPaymentInvariantsCatchTheOverflowedRefund replays what the review
// found: a pack of 10^12 credits for 10^8 minor units, refunded 50%, left
// PARTIALLY_REFUNDED with nothing clawed back, because credits·refunded
// wrapped an int64. Written into the database as that code wrote it, the
// history is reported (payment_clawback_mismatch, with the share it should
// have taken); so is a wrong clawback written through the ledger; the
// right one clears it.
func TestPaymentInvariantsCatchTheOverflowedRefund(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		p := f.pendingPaymentFor(1_000_000_000_000, 100_000_000)
		if out, err := f.deliver("evt_paid", "checkout.session.completed", session(p, "paid")); err != nil || out != payments.OutcomeApplied {
			t.Fatalf("purchase: %q %v", out, err)
		}
		f.wantProblems()

		db.Ent.Payment.UpdateOneID(p.ID).SetStatus(payment.StatusPartiallyRefunded).SetAmountRefunded(50_000_000).ExecX(ctx)
		details := f.wantProblems("payment_clawback_mismatch " + p.ID)
		if !strings.Contains(details, "0 credits clawed back by refunds") || !strings.Contains(details, "expected 500000000000 by refunds") {
			t.Fatalf("the problem does not say what is wrong:%s", details)
		}

		clawback := func(amount int64, key string) {
			t.Helper()
			if _, err := f.l.Clawback(ctx, ledger.Actor{Kind: ledger.ActorStripe, ID: "test"}, ledger.ClawbackRequest{
				PaymentID: p.ID, Amount: amount, Reason: "refund", IdempotencyKey: key,
			}); err != nil {
				t.Fatal(err)
			}
		}
		clawback(1, "wrong")
		f.wantProblems("payment_clawback_mismatch " + p.ID)
		clawback(500_000_000_000-1, "rest")
		f.wantProblems()
	})
}

// TestPaymentInvariantsCatchWrongGrantsAndClawbacks: each way a payment's
// credits can disagree with its state is reported under its invariant, and
// only the payment concerned is named.
func TestPaymentInvariantsCatchWrongGrantsAndClawbacks(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		actor := ledger.Actor{Kind: ledger.ActorStripe, ID: "test"}
		grant := func(p *ent.Payment, amount int64, key string) {
			t.Helper()
			if _, err := f.l.Grant(ctx, actor, ledger.GrantRequest{
				UserID: p.UserID, Amount: amount, Purchase: true, PaymentID: &p.ID, IdempotencyKey: key,
			}); err != nil {
				t.Fatal(err)
			}
		}
		clawback := func(p *ent.Payment, amount int64, dispute bool) {
			t.Helper()
			if _, err := f.l.Clawback(ctx, actor, ledger.ClawbackRequest{
				PaymentID: p.ID, Amount: amount, Dispute: dispute, IdempotencyKey: "clawback-" + p.ID,
			}); err != nil {
				t.Fatal(err)
			}
		}
		setStatus := func(p *ent.Payment, st payment.Status, refunded int64) {
			db.Ent.Payment.UpdateOneID(p.ID).SetStatus(st).SetAmountRefunded(refunded).ExecX(ctx)
		}
		apply := func(id, typ string, object map[string]any) {
			t.Helper()
			if out, err := f.deliver(id, typ, object); err != nil || out != payments.OutcomeApplied {
				t.Fatalf("%s: %q %v", typ, out, err)
			}
		}
		paid := func() *ent.Payment {
			t.Helper()
			p := f.pendingPayment() // 100 credits for 1000
			apply("evt_paid_"+p.ID, "checkout.session.completed", session(p, "paid"))
			return p
		}

		// Correct histories, by the webhook: none is reported.
		fine := paid()
		apply("evt_refund_"+fine.ID, "charge.refunded", charge(fine, 333)) // 33 of 100 credits
		lost := paid()
		apply("evt_refund_"+lost.ID, "charge.refunded", charge(lost, 500))
		apply("evt_lost_"+lost.ID, "charge.dispute.closed", dispute(lost, "lost"))
		f.wantProblems()

		pendingButGranted := f.pendingPayment()
		grant(pendingButGranted, 100, "g1")
		succeededUngranted := f.pendingPayment()
		setStatus(succeededUngranted, payment.StatusSucceeded, 0)
		grantedTwice := paid()
		grant(grantedTwice, 100, "g2")
		grantedShort := f.pendingPayment()
		grant(grantedShort, 99, "g3")
		setStatus(grantedShort, payment.StatusSucceeded, 0)
		chargedBackInPart := paid()
		clawback(chargedBackInPart, 60, true)
		setStatus(chargedBackInPart, payment.StatusChargedBack, 0)
		disputeClawbackNotChargedBack := paid()
		clawback(disputeClawbackNotChargedBack, 100, true)
		refundedNothingTaken := paid()
		setStatus(refundedNothingTaken, payment.StatusRefunded, 1000)
		refundedTooMuch := paid()
		clawback(refundedTooMuch, 31, false)
		setStatus(refundedTooMuch, payment.StatusPartiallyRefunded, 300)

		f.wantProblems(
			"payment_grant_mismatch "+pendingButGranted.ID,
			"payment_grant_mismatch "+succeededUngranted.ID,
			"payment_grant_mismatch "+grantedTwice.ID,
			"payment_grant_mismatch "+grantedShort.ID,
			"payment_clawback_mismatch "+chargedBackInPart.ID,
			"payment_clawback_mismatch "+disputeClawbackNotChargedBack.ID,
			"payment_clawback_mismatch "+refundedNothingTaken.ID,
			"payment_clawback_mismatch "+refundedTooMuch.ID,
		)
	})
}
