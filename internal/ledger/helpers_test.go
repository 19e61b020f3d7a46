package ledger_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// clock is a settable clock for expiry tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	t     testing.TB
	db    *database.DB
	l     *ledger.Service
	clock *clock
	keyN  int
}

func newEnv(t testing.TB, db *database.DB) *env {
	c := &clock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	return &env{t: t, db: db, l: ledger.New(db, ledger.WithClock(c.Now)), clock: c}
}

var (
	admin   = ledger.Actor{Kind: ledger.ActorAdmin, ID: "usr_admin"}
	service = ledger.Actor{Kind: ledger.ActorService, ID: "backend"}
	stripe  = ledger.Actor{Kind: ledger.ActorStripe, ID: "webhook"}
)

func (e *env) key() string {
	e.keyN++
	return fmt.Sprintf("key-%d", e.keyN)
}

func (e *env) user(externalID string) *ent.User {
	e.t.Helper()
	u, err := e.db.Ent.User.Create().SetExternalID(externalID).Save(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) grant(userID string, amount int64) *ledger.Result {
	e.t.Helper()
	res, err := e.l.Grant(context.Background(), admin, ledger.GrantRequest{UserID: userID, Amount: amount, IdempotencyKey: e.key()})
	if err != nil {
		e.t.Fatalf("grant %d: %v", amount, err)
	}
	return res
}

// purchase makes a succeeded payment of credits and grants them, as the
// payments package will.
func (e *env) purchase(userID string, credits int64) *ent.Payment {
	e.t.Helper()
	ctx := context.Background()
	pkg, err := e.db.Ent.CreditPackage.Create().SetName(fmt.Sprintf("pack-%s-%d", userID, e.keyN)).
		SetCredits(credits).SetPriceAmount(credits * 10).SetCurrency("usd").Save(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := e.db.Ent.Payment.Create().SetUserID(userID).SetPackageID(pkg.ID).SetAmount(credits * 10).
		SetCurrency("usd").SetCredits(credits).SetStatus("SUCCEEDED").Save(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.l.Grant(ctx, stripe, ledger.GrantRequest{
		UserID: userID, Amount: credits, Purchase: true, PaymentID: &p.ID, IdempotencyKey: "purchase-" + p.ID,
	})
	if err != nil {
		e.t.Fatalf("purchase grant: %v", err)
	}
	e.keyN++
	return p
}

func (e *env) balance(userID string) ledger.Balance {
	e.t.Helper()
	b, err := e.l.Balance(context.Background(), userID)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// check fails the test if any invariant is broken.
func (e *env) check() {
	e.t.Helper()
	r, err := e.l.Check(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range r.Problems {
		e.t.Errorf("invariant %s broken for %s: %s", p.Invariant, p.Subject, p.Detail)
	}
	if !r.OK() {
		e.t.FailNow()
	}
}

// snapshot is a digest of every row that money operations write; two equal
// snapshots mean nothing changed.
func (e *env) snapshot() string {
	e.t.Helper()
	h := sha256.New()
	for _, q := range []string{
		`SELECT id, credits_balance, status FROM users ORDER BY id`,
		`SELECT id, kind, amount, user_id FROM credit_transactions ORDER BY id`,
		`SELECT id, transaction_id, account, amount, COALESCE(lot_id, ''), COALESCE(balance_after, 0) FROM credit_ledgers ORDER BY id`,
		`SELECT id, original, remaining, held FROM credit_lots ORDER BY id`,
		`SELECT id, amount, captured_amount, status FROM credit_reservations ORDER BY id`,
		`SELECT id, scope, key, fingerprint FROM idempotency_keys ORDER BY id`,
	} {
		rows, err := e.db.SQL.Query(q)
		if err != nil {
			e.t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				e.t.Fatal(err)
			}
			for _, v := range vals {
				fmt.Fprintf(h, "%s|", v.String)
			}
			h.Write([]byte("\n"))
		}
		rows.Close()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refused asserts that err carries code and that nothing changed since before.
func (e *env) refused(err error, code apperr.Code, before string) {
	e.t.Helper()
	if err == nil {
		e.t.Fatalf("accepted; want %s", code)
	}
	if got := apperr.CodeOf(err); got != code {
		e.t.Fatalf("error %v has code %s; want %s", err, got, code)
	}
	if after := e.snapshot(); after != before {
		e.t.Fatalf("a refused operation (%v) changed the database", err)
	}
}

func sumPostings(r *ledger.Result) (total int64, accounts []string) {
	for _, p := range r.Transaction.Edges.Postings {
		total += p.Amount
		accounts = append(accounts, fmt.Sprintf("%s:%d", p.Account, p.Amount))
	}
	return total, accounts
}

func contains(s []string, sub string) bool {
	for _, x := range s {
		if strings.Contains(x, sub) {
			return true
		}
	}
	return false
}

// seconds is a TTL as a client sends it: whole seconds, nil for none.
func seconds(d time.Duration) *int64 {
	if d == 0 {
		return nil
	}
	return new(int64(d / time.Second))
}
