package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/pulid"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestSeed seeds a fresh PostgreSQL database and shows that the rows are
// what the real code writes: the invariants hold, the ledger spends from a
// seeded account, and it replays seeded keys with their seeded results.
func TestSeed(t *testing.T) {
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skip(testdb.EnvPostgres + " is not set: the seeder writes PostgreSQL only")
	}
	ctx := context.Background()
	db := testdb.New(t, testdb.Postgres)
	indexesBefore := indexDefs(t, db)
	var out bytes.Buffer
	sum, err := seedDatabase(ctx, seedOptions{
		url: db.URL, users: 200, txns: 5000, heavy: 1000,
		period: 365 * 24 * time.Hour, randomSeed: 1, progress: &out, reportSizes: &out,
	})
	t.Log(out.String())
	if err != nil {
		t.Fatalf("seeding: %v", err)
	}
	if sum.Users != 202 || sum.Transactions != 6000 || !sum.Report.OK() {
		t.Fatalf("seeded %d users, %d transactions, report %+v; want 202 (with the admin and heavy-user), 6000, no problem",
			sum.Users, sum.Transactions, sum.Report)
	}
	if after := indexDefs(t, db); !slices.Equal(after, indexesBefore) {
		t.Errorf("indexes after the seed:\n%s\nbefore:\n%s", strings.Join(after, "\n"), strings.Join(indexesBefore, "\n"))
	}
	counts := map[string]string{
		"a key held by each transaction": `SELECT COUNT(*) FROM credit_transactions WHERE idempotency_key IS NULL OR octet_length(fingerprint) <> 32`,
		"a key record per hold, no more": `SELECT (SELECT COUNT(*) FROM idempotency_keys) - COUNT(*) FROM credit_transactions WHERE kind = 'HOLD'`,
		"an audit row per grant":         `SELECT (SELECT COUNT(*) FROM admin_actions) - COUNT(*) FROM credit_transactions WHERE kind = 'GRANT'`,
		"a lot per grant":                `SELECT (SELECT COUNT(*) FROM credit_lots) - COUNT(*) FROM credit_transactions WHERE kind = 'GRANT'`,
		"heavy-user's 1000 transactions": `SELECT COUNT(*) - 1000 FROM credit_transactions t JOIN users u ON u.id = t.user_id WHERE u.external_id = 'heavy-user'`,
		"user postings without balance":  `SELECT COUNT(*) FROM credit_ledgers WHERE (user_id IS NULL) <> (balance_after IS NULL)`,
		"known kinds only":               `SELECT COUNT(*) FROM credit_transactions WHERE kind NOT IN ('GRANT', 'SPEND', 'HOLD', 'CAPTURE')`,
		"a reservation per hold":         `SELECT (SELECT COUNT(*) FROM credit_reservations) - COUNT(*) FROM credit_transactions WHERE kind = 'HOLD'`,
		"a capture per reservation": `SELECT COUNT(*) FROM credit_reservations r
			WHERE r.status <> 'CAPTURED' OR r.captured_amount <> r.amount
			   OR (SELECT COUNT(*) FROM credit_transactions t WHERE t.reservation_id = r.id AND t.kind = 'CAPTURE') <> 1`,
		"some reservations": `SELECT CASE WHEN COUNT(*) > 100 THEN 0 ELSE 1 END FROM credit_reservations`,
	}
	for name, q := range counts {
		var off int
		if err := db.SQL.QueryRowContext(ctx, q).Scan(&off); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if off != 0 {
			t.Errorf("%s: off by %d", name, off)
		}
	}
	svc := ledger.New(db)
	replaySeeded(t, db, svc, "SPEND")
	replaySeeded(t, db, svc, "GRANT")
	replaySeeded(t, db, svc, "CAPTURE")
	spendAfterSeed(t, db, svc)
}

// replaySeeded sends again, through the ledger, heavy-user's latest
// transaction of the kind, rebuilt from its row: the ledger must find the
// seeded key (held by the transaction), match its fingerprint, and answer
// the seeded result (the balance after the transaction's last posting on
// the user's account).
func replaySeeded(t *testing.T, db *database.DB, svc *ledger.Service, kind string) {
	t.Helper()
	ctx := context.Background()
	var id, userID, actor, key, reason string
	var amount int64
	var balance int64
	var rsvID *string
	err := db.SQL.QueryRowContext(ctx, `SELECT t.id, t.user_id, t.actor, t.idempotency_key, t.reason, t.amount, t.reservation_id,
		       (SELECT l.balance_after FROM credit_ledgers l WHERE l.transaction_id = t.id AND l.user_id IS NOT NULL ORDER BY l.id DESC LIMIT 1)
		  FROM credit_transactions t JOIN users u ON u.id = t.user_id
		 WHERE u.external_id = 'heavy-user' AND t.kind = $1 ORDER BY t.created_at DESC LIMIT 1`, kind).
		Scan(&id, &userID, &actor, &key, &reason, &amount, &rsvID, &balance)
	if err != nil {
		t.Fatalf("reading a seeded %s: %v", kind, err)
	}
	for _, x := range []string{id, userID} {
		if _, err := pulid.Prefix(x); err != nil {
			t.Errorf("seeded id: %v", err)
		}
	}
	var res *ledger.Result
	switch kind {
	case "SPEND":
		res, err = svc.Spend(ctx, ledger.Actor{Kind: ledger.ActorUser, ID: userID},
			ledger.SpendRequest{UserID: userID, Amount: amount, Reason: reason, IdempotencyKey: key})
	case "CAPTURE":
		if rsvID == nil {
			t.Fatalf("capture %s without a reservation", id)
		}
		res, err = svc.Capture(ctx, ledger.Actor{Kind: ledger.ActorUser, ID: userID},
			ledger.CaptureRequest{UserID: userID, ReservationID: *rsvID, Reason: reason, IdempotencyKey: key})
	default:
		adminID := actor[len("admin:"):]
		res, err = svc.Grant(ctx, ledger.Actor{Kind: ledger.ActorAdmin, ID: adminID},
			ledger.GrantRequest{UserID: userID, Amount: amount, Reason: reason, IdempotencyKey: key})
	}
	if err != nil {
		t.Fatalf("replaying seeded %s %s: %v", kind, key, err)
	}
	if !res.Replayed || res.Transaction.ID != id || res.Balance != balance || res.Amount != amount {
		t.Errorf("replay of %s %s: replayed %v, transaction %s, balance %d, amount %d; want true, %s, %d, %d",
			kind, key, res.Replayed, res.Transaction.ID, res.Balance, res.Amount, id, balance, amount)
	}
}

// spendAfterSeed spends from the seeded user with the most credits, as the
// API would, and checks the books still balance.
func spendAfterSeed(t *testing.T, db *database.DB, svc *ledger.Service) {
	t.Helper()
	ctx := context.Background()
	var userID string
	var balance int64
	if err := db.SQL.QueryRowContext(ctx, `SELECT id, credits_balance FROM users ORDER BY credits_balance DESC, id LIMIT 1`).
		Scan(&userID, &balance); err != nil {
		t.Fatalf("choosing a user: %v", err)
	}
	amount := min(balance, 150) // more than one lot holds, now and then
	res, err := svc.Spend(ctx, ledger.Actor{Kind: ledger.ActorUser, ID: userID},
		ledger.SpendRequest{UserID: userID, Amount: amount, IdempotencyKey: "after-seed"})
	if err != nil {
		t.Fatalf("spending %d of %d from %s: %v", amount, balance, userID, err)
	}
	if res.Replayed || res.Balance != balance-amount {
		t.Errorf("spend: replayed %v, balance %d; want a new spend, %d", res.Replayed, res.Balance, balance-amount)
	}
	report, err := svc.Check(ctx)
	if err != nil {
		t.Fatalf("checking after the spend: %v", err)
	}
	if !report.OK() {
		t.Errorf("after a spend: %+v", report.Problems)
	}
}

// TestSeedRefuses: a database that is not PostgreSQL, or not empty, is
// refused before anything is written.
func TestSeedRefuses(t *testing.T) {
	_, err := seedDatabase(context.Background(), seedOptions{url: "sqlite://" + t.TempDir() + "/x.db", users: 1})
	if !errors.Is(err, errSeedRefused) {
		t.Errorf("SQLite: %v; want a refusal", err)
	}
	if os.Getenv(testdb.EnvPostgres) == "" {
		return
	}
	db := testdb.New(t, testdb.Postgres)
	if _, err := db.SQL.ExecContext(context.Background(),
		`INSERT INTO users (id, created_at, updated_at, external_id) VALUES ($1, now(), now(), 'someone')`,
		pulid.New("usr")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err = seedDatabase(context.Background(), seedOptions{url: db.URL, users: 1, period: time.Hour, progress: &out, reportSizes: &out})
	if !errors.Is(err, errSeedRefused) {
		t.Errorf("a database with a user: %v; want a refusal", err)
	}
}

// indexDefs are the definitions of the test schema's indexes: the seed
// drops some for the load and must make them again as they were.
func indexDefs(t *testing.T, db *database.DB) []string {
	t.Helper()
	rows, err := db.SQL.QueryContext(context.Background(),
		`SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname`)
	if err != nil {
		t.Fatalf("listing indexes: %v", err)
	}
	defer rows.Close()
	var defs []string
	for rows.Next() {
		var def string
		if err := rows.Scan(&def); err != nil {
			t.Fatalf("listing indexes: %v", err)
		}
		defs = append(defs, def)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("listing indexes: %v", err)
	}
	if len(defs) < 40 {
		t.Fatalf("%d indexes: is the schema migrated?", len(defs))
	}
	return defs
}
