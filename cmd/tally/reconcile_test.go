package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestReconcileFindsABrokenRow: tally reconcile (no Stripe key: the
// ledger and payments only) passes a healthy ledger with exit 0, and finds
// a posting changed behind the ledger's back with the append-only trigger
// disabled: exit 1 and the problems named.
func TestReconcileFindsABrokenRow(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		l := ledger.New(db)
		admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "usr_support"}
		for i := range 3 {
			id := newUser(t, db, fmt.Sprintf("user-%d", i))
			if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: id, Amount: 10, IdempotencyKey: fmt.Sprintf("g%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		env := []string{"DATABASE_URL=" + db.URL}
		dir := t.TempDir()
		out, stderr, code := run(t, dir, env, "reconcile")
		if code != 0 || !strings.Contains(out, "ledger: 3 users, 3 transactions, 6 postings, 3 lots, 0 payments: every invariant holds") {
			t.Fatalf("healthy: exit %d\n%s%s", code, out, stderr)
		}

		testdb.BreakNewestUserPosting(t, db)
		out, stderr, code = run(t, dir, env, "reconcile")
		if code != 1 || !strings.Contains(out, "3 problems") || !strings.Contains(out, "unbalanced_transaction txn_") ||
			!strings.Contains(out, "balance_mismatch usr_") || !strings.Contains(out, "lot_remaining_mismatch lot_") {
			t.Fatalf("broken: exit %d\n%s%s", code, out, stderr)
		}
	})
}

// TestReconcileRecharges: a recharge left PENDING (its job never ran) is
// listed past --recharge-grace and, being PENDING, is stuck (exit 1);
// with a Stripe key whose customer's intents include its succeeded one,
// it is reported paid and --apply grants it as payment_intent.succeeded
// would, after which nothing is left in flight.
func TestReconcileRecharges(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		inserter, err := jobs.NewInserter(db)
		if err != nil {
			t.Fatal(err)
		}
		l := ledger.New(db, ledger.WithRecharges(payments.NewRecharger(db, inserter, false)))
		svc := payments.New(db, l, payments.Config{Jobs: inserter})
		uid := newUser(t, db, "recharger")
		pack := db.Ent.CreditPackage.Create().SetName("Top-up").SetCredits(100).SetPriceAmount(1000).SetCurrency("eur").SaveX(ctx)
		if err := svc.SaveCard(ctx, uid, payments.SimulatedCard(uid, time.Now())); err != nil {
			t.Fatal(err)
		}
		system := ledger.Actor{Kind: ledger.ActorSystem, ID: "test"}
		if _, err := l.Grant(ctx, system, ledger.GrantRequest{UserID: uid, Amount: 60, IdempotencyKey: "g"}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.SetAutoRecharge(ctx, uid, payments.AutoRechargeRequest{
			Enabled: true, ThresholdCredits: 50, PackageID: pack.ID, MonthlyLimitAmount: 10000,
		}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Spend(ctx, system, ledger.SpendRequest{UserID: uid, Amount: 15, IdempotencyKey: "s"}); err != nil {
			t.Fatal(err)
		}
		p := db.Ent.Payment.Query().Where(payment.KindEQ(payment.KindRECHARGE)).OnlyX(ctx)
		dir := t.TempDir()
		env := []string{"DATABASE_URL=" + db.URL}

		out, stderr, code := run(t, dir, env, "reconcile")
		if code != 0 || !strings.Contains(out, "recharges: 0 in flight for more than 15m0s") {
			t.Fatalf("within the default grace: exit %d\n%s%s", code, out, stderr)
		}
		out, stderr, code = run(t, dir, env, "reconcile", "--recharge-grace", "1ms")
		if code != 1 || !strings.Contains(out, "recharges: 1 in flight for more than 1ms") ||
			!strings.Contains(out, "recharge "+p.ID+" PENDING since ") || !strings.Contains(out, "stuck (Stripe not checked)") {
			t.Fatalf("past the grace, no Stripe key: exit %d\n%s%s", code, out, stderr)
		}

		rec := stripemock.NewRecorder(t)
		rec.Rewrite(func(r stripemock.Request, obj map[string]any) {
			if r.Method == http.MethodGet && r.Path == "/v1/payment_intents" {
				obj["data"] = []any{map[string]any{
					"id": "pi_cli", "object": "payment_intent", "status": "succeeded", "amount": 1000, "currency": "eur",
					"metadata": map[string]any{"tally_payment_id": p.ID, "user_id": uid},
				}}
			}
		})
		env = append(env, "STRIPE_SECRET_KEY=sk_test_123", "STRIPE_API_BASE="+rec.URL())
		out, stderr, code = run(t, dir, env, "reconcile", "--recharge-grace", "1ms")
		if code != 1 || !strings.Contains(out, "recharge "+p.ID+" PENDING since ") || !strings.Contains(out, "paid in Stripe (pi_cli), credits not granted\n") {
			t.Fatalf("paid in Stripe, without --apply: exit %d\n%s%s", code, out, stderr)
		}
		if got := db.Ent.Payment.GetX(ctx, p.ID); got.Status != payment.StatusPending {
			t.Fatalf("reconcile without --apply moved the recharge to %s", got.Status)
		}
		out, stderr, code = run(t, dir, env, "reconcile", "--recharge-grace", "1ms", "--apply")
		if code != 0 || !strings.Contains(out, "paid in Stripe (pi_cli), credits granted now\n") || strings.Contains(out, "repair failed") {
			t.Fatalf("--apply: exit %d\n%s%s", code, out, stderr)
		}
		if got, u := db.Ent.Payment.GetX(ctx, p.ID), db.Ent.User.GetX(ctx, uid); got.Status != payment.StatusSucceeded || u.CreditsBalance != 145 {
			t.Fatalf("after --apply: %s, balance %d", got.Status, u.CreditsBalance)
		}
		out, stderr, code = run(t, dir, env, "reconcile", "--recharge-grace", "1ms", "--apply")
		if code != 0 || !strings.Contains(out, "recharges: 0 in flight for more than 1ms") {
			t.Fatalf("a second --apply: exit %d\n%s%s", code, out, stderr)
		}

		if _, stderr, code := run(t, dir, env, "reconcile", "--recharge-grace", "0s"); code != 2 || !strings.Contains(stderr, "--recharge-grace must be positive") {
			t.Fatalf("--recharge-grace 0s: exit %d\n%s", code, stderr)
		}
	})
}
