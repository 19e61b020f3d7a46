package ledger_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/pulid"
	"github.com/tally-billing/tally/internal/testdb"
)

// BenchmarkSpend measures Spend of 1 credit, on one hot account and spread
// over many, with 16×GOMAXPROCS concurrent callers, on each database. Each
// case first measures a baseline on the same database in the same run: the
// least a correct spend needs in raw SQL (BEGIN; lock the user; insert a
// transaction and a posting; update the balance; COMMIT). The ledger's
// figure is reported as x_baseline, its time per spend over the baseline's.
//
//	go test -run '^$' -bench Spend -benchtime 3s ./internal/ledger
//	TEST_DATABASE_URL=postgres://… go test -run '^$' -bench Spend ./internal/ledger
func BenchmarkSpend(b *testing.B) {
	for _, kind := range testdb.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			db := testdb.New(b, kind)
			for _, accounts := range []int{1, 1000} {
				name := "hot"
				if accounts > 1 {
					name = fmt.Sprintf("many-%d", accounts)
				}
				b.Run(name, func(b *testing.B) {
					benchmarkSpend(b, db, accounts)
				})
			}
		})
	}
}

func benchmarkSpend(b *testing.B, db *database.DB, accounts int) {
	ctx := context.Background()
	l := ledger.New(db)
	mkUsers := func(prefix string) []string {
		ids := make([]string, accounts)
		for i := range ids {
			u, err := db.Ent.User.Create().SetExternalID(fmt.Sprintf("%s-%d-%d", prefix, accounts, i)).Save(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 1 << 40, IdempotencyKey: "seed-" + u.ID}); err != nil {
				b.Fatal(err)
			}
			ids[i] = u.ID
		}
		return ids
	}
	baselineUsers, ledgerUsers := mkUsers("baseline"), mkUsers("ledger")
	var baselineNs float64

	b.Run("baseline-raw-sql", func(b *testing.B) {
		lock := `SELECT credits_balance FROM users WHERE id = $1`
		if db.Dialect == "postgres" {
			lock += ` FOR UPDATE`
		}
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
			for pb.Next() {
				if err := rawSpend(ctx, db.SQL, lock, baselineUsers[rng.IntN(len(baselineUsers))]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		baselineNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})

	b.Run("ledger", func(b *testing.B) {
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
			for pb.Next() {
				_, err := l.Spend(ctx, service, ledger.SpendRequest{
					UserID:         ledgerUsers[rng.IntN(len(ledgerUsers))],
					Amount:         1,
					IdempotencyKey: fmt.Sprintf("bench-%d", benchKeys.Add(1)),
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		if baselineNs > 0 {
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/baselineNs, "x_baseline")
		}
	})
}

// benchKeys numbers idempotency keys across every benchmark run of the
// process, so that no two spends share a key.
var benchKeys atomic.Int64

func rawSpend(ctx context.Context, db *sql.DB, lock, userID string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var balance int64
	if err := tx.QueryRowContext(ctx, lock, userID).Scan(&balance); err != nil {
		return err
	}
	if balance < 1 {
		return fmt.Errorf("baseline account %s is empty", userID)
	}
	now := time.Now().UTC()
	txnID := pulid.New("txn")
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO credit_transactions (id, created_at, kind, amount, actor, user_id) VALUES ($1, $2, 'SPEND', 1, 'service:bench', $3)`,
		txnID, now, userID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO credit_ledgers (id, created_at, transaction_id, account, amount, user_id, balance_after) VALUES ($1, $2, $3, $4, -1, $5, $6)`,
		pulid.New("led"), now, txnID, "user:"+userID, userID, balance-1); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET credits_balance = $1 WHERE id = $2`, balance-1, userID); err != nil {
		return err
	}
	return tx.Commit()
}
