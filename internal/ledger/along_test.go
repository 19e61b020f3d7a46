package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestWritesAlong: a caller's write handed to WriteAlong is carried by the
// transaction's next ledger write, or written before the commit when
// there is none; a write of fewer rows than it says, or one that collides
// with a row written before it, fails the whole transaction (retried, for
// the collision), and nothing of it is written.
func TestWritesAlong(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("PostgreSQL only: SQLite's callers write their rows themselves")
		}
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("along")
		n := 0
		record := func(eventID string, rows int64) ledger.Along {
			n++
			return ledger.Along{What: "a record",
				SQL:  "INSERT INTO processed_events (id, stripe_event_id, type, outcome, received_at) SELECT ?, ?, 'test', 'APPLIED', ? WHERE ?",
				Args: []any{fmt.Sprint("pev_along_", n), eventID, time.Now(), rows > 0}, Rows: max(rows, 1)}
		}
		recorded := func(eventID string) bool {
			return db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(eventID)).ExistX(ctx)
		}
		run := func(w ledger.Along, grant int64) error {
			return e.l.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
				if err := tx.WriteAlong(w); err != nil {
					return err
				}
				if grant == 0 {
					return nil
				}
				_, err := tx.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: grant, IdempotencyKey: e.key()})
				return err
			})
		}

		if err := run(record("evt_granted", 1), 5); err != nil || !recorded("evt_granted") || e.balance(u.ID).Balance != 5 {
			t.Fatalf("carried by a grant: %v, recorded %v, balance %d", err, recorded("evt_granted"), e.balance(u.ID).Balance)
		}
		if err := run(record("evt_alone", 1), 0); err != nil || !recorded("evt_alone") {
			t.Fatalf("with no ledger write: %v, recorded %v", err, recorded("evt_alone"))
		}
		// WHERE false writes nothing where one row was expected.
		if err := run(record("evt_short", 0), 7); err == nil || recorded("evt_short") || e.balance(u.ID).Balance != 5 {
			t.Fatalf("a write short of its rows: %v, recorded %v, balance %d", err, recorded("evt_short"), e.balance(u.ID).Balance)
		}
		if err := run(record("evt_short", 0), 0); err == nil || recorded("evt_short") {
			t.Fatalf("a write short of its rows, alone: %v, recorded %v", err, recorded("evt_short"))
		}
		retries := e.l.Stats().Retries
		if err := run(record("evt_granted", 1), 7); apperr.CodeOf(err) != apperr.Conflict || e.balance(u.ID).Balance != 5 {
			t.Fatalf("a record written before: %v (want CONFLICT), balance %d", err, e.balance(u.ID).Balance)
		}
		if e.l.Stats().Retries == retries {
			t.Fatal("a record written before was not retried")
		}
		e.check()
	})
}
