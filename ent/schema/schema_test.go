package schema_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/migrate"
	"github.com/tally-billing/tally/ent/schema"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/pulid"
	"github.com/tally-billing/tally/internal/testdb"
)

func TestEveryTableHasARegisteredIDPrefix(t *testing.T) {
	types := map[string]bool{}
	for _, typ := range schema.IDPrefixes {
		if types[typ] {
			t.Errorf("two prefixes for %s", typ)
		}
		types[typ] = true
	}
	if len(types) != len(migrate.Tables) {
		t.Fatalf("%d id prefixes for %d tables", len(types), len(migrate.Tables))
	}
}

func newUser(t *testing.T, c *ent.Client, externalID string) *ent.User {
	t.Helper()
	u, err := c.User.Create().SetExternalID(externalID).Save(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestIDsArePrefixedAndSortable(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		u := newUser(t, db.Ent, "alice")
		if p, err := pulid.Prefix(u.ID); err != nil || p != "usr" {
			t.Fatalf("user id %q: prefix %q, %v", u.ID, p, err)
		}
		if u.Status != "ACTIVE" || u.CreditsBalance != 0 || u.CreatedAt.Location() != time.UTC {
			t.Fatalf("unexpected defaults: %+v", u)
		}
	})
}

// TestUniqueConstraints proves the constraints the money invariants stand
// on: the database, not the application, refuses the second row.
func TestUniqueConstraints(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		c := db.Ent
		u := newUser(t, c, "alice")
		if _, err := c.User.Create().SetExternalID("alice").Save(ctx); !ent.IsConstraintError(err) {
			t.Errorf("second user with one external id: %v", err)
		}

		pkg := c.CreditPackage.Create().SetName("Pack").SetCredits(10).SetPriceAmount(100).SetCurrency("usd").SaveX(ctx)
		newPayment := func(session *string) error {
			_, err := c.Payment.Create().SetUserID(u.ID).SetPackageID(pkg.ID).
				SetAmount(100).SetCurrency("usd").SetCredits(10).
				SetNillableStripeCheckoutSessionID(session).Save(ctx)
			return err
		}
		session := "cs_test_1"
		if err := newPayment(&session); err != nil {
			t.Fatal(err)
		}
		if err := newPayment(&session); !ent.IsConstraintError(err) {
			t.Errorf("second payment for one checkout session: %v", err)
		}
		// Payments not yet sent to Stripe have no session id; many may exist.
		for range 2 {
			if err := newPayment(nil); err != nil {
				t.Errorf("payment without a session: %v", err)
			}
		}

		newEvent := func() error {
			_, err := c.ProcessedEvent.Create().SetStripeEventID("evt_1").SetType("checkout.session.completed").
				SetOutcome("APPLIED").SetReceivedAt(time.Now()).Save(ctx)
			return err
		}
		if err := newEvent(); err != nil {
			t.Fatal(err)
		}
		if err := newEvent(); !ent.IsConstraintError(err) {
			t.Errorf("second record of one Stripe event: %v", err)
		}

		newKey := func(scope string) error {
			_, err := c.IdempotencyKey.Create().SetScope(scope).SetKey("k1").SetFingerprint("f").Save(ctx)
			return err
		}
		if err := newKey("user:alice"); err != nil {
			t.Fatal(err)
		}
		if err := newKey("user:alice"); !ent.IsConstraintError(err) {
			t.Errorf("second use of one idempotency key in one scope: %v", err)
		}
		if err := newKey("user:bob"); err != nil {
			t.Errorf("the same key in another scope: %v", err)
		}

		if _, err := c.StripeCustomer.Create().SetUserID(u.ID).SetStripeCustomerID("cus_1").Save(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.StripeCustomer.Create().SetUserID(u.ID).SetStripeCustomerID("cus_2").Save(ctx); !ent.IsConstraintError(err) {
			t.Errorf("second test-mode Stripe customer for one user: %v", err)
		}
	})
}

func TestAmountChecks(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		c := db.Ent
		for _, credits := range []int64{0, -5} {
			_, err := c.CreditPackage.Create().SetName("Bad").SetCredits(credits).SetPriceAmount(100).SetCurrency("usd").Save(ctx)
			if !ent.IsValidationError(err) {
				t.Errorf("package with %d credits: %v", credits, err)
			}
		}
		// The database itself refuses a lot whose remaining and held credits
		// exceed what it was created with.
		u := newUser(t, c, "alice")
		txn := c.CreditTransaction.Create().SetUserID(u.ID).SetKind(credittransaction.KindGrant).
			SetAmount(10).SetActor("test").SaveX(ctx)
		_, err := db.SQL.ExecContext(ctx,
			`INSERT INTO credit_lots (id, created_at, updated_at, source, original, remaining, held, priority, user_id, transaction_id)
			 VALUES ('lot_bad', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'GRANT', 10, 8, 5, 0, $1, $2)`, u.ID, txn.ID)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "check") {
			t.Errorf("lot with remaining+held > original: %v", err)
		}
	})
}

// TestLedgerIsAppendOnly: the database refuses to update or delete ledger
// rows, transactions and audit records, whoever asks.
func TestLedgerIsAppendOnly(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		c := db.Ent
		u := newUser(t, c, "alice")
		txn := c.CreditTransaction.Create().SetUserID(u.ID).SetKind(credittransaction.KindGrant).
			SetAmount(10).SetActor("test").SaveX(ctx)
		c.CreditLedger.Create().SetTransactionID(txn.ID).SetAccount("user:" + u.ID).SetUserID(u.ID).
			SetAmount(10).SetBalanceAfter(10).SaveX(ctx)
		c.CreditLedger.Create().SetTransactionID(txn.ID).SetAccount("system:grants").SetAmount(-10).SaveX(ctx)
		c.AdminAction.Create().SetAdminID(u.ID).SetAction("grant_credits").SetTargetID(u.ID).SetTransactionID(txn.ID).SaveX(ctx)

		for _, stmt := range []string{
			`UPDATE credit_ledgers SET amount = 1000`,
			`DELETE FROM credit_ledgers`,
			`UPDATE credit_transactions SET amount = 1000`,
			`DELETE FROM credit_transactions`,
			`UPDATE admin_actions SET reason = 'x'`,
			`DELETE FROM admin_actions`,
		} {
			_, err := db.SQL.ExecContext(ctx, stmt)
			if err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: %v", stmt, err)
			}
		}
		var sum, rows int64
		if err := db.SQL.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM credit_ledgers`).Scan(&sum, &rows); err != nil {
			t.Fatal(err)
		}
		if sum != 0 || rows != 2 {
			t.Fatalf("ledger changed: %d rows summing to %d", rows, sum)
		}
	})
}
