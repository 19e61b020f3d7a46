package ledger

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/database"
)

// Along is a write of the caller's that the transaction's next ledger
// write carries on PostgreSQL, as a WITH query of its statement: one round
// trip fewer while the users are locked (a batch of purchases writes its
// payments and the events' records this way).
//
// SQL is one INSERT or UPDATE with ? placeholders and no RETURNING. Like
// the ledger's own parts it sees the statement's snapshot, so it may only
// write rows no other part of the statement writes: new rows, or rows the
// transaction has locked (the payments of users it locked, with them).
type Along struct {
	What string // what it writes, for errors
	SQL  string
	Args []any
	// Rows is how many rows it must write, or the statement fails. A
	// unique violation (a row a concurrent transaction wrote first: an
	// event's record) is retried as a taken key is (see keyTaken): the
	// caller's next attempt reads what was written.
	Rows int64
}

// WriteAlong has the transaction's next ledger write carry ws; what none
// carried is written before the commit, in one statement. PostgreSQL only:
// SQLite, in process, has no round trip to save, and its callers write
// their rows themselves.
func (t *Tx) WriteAlong(ws ...Along) error {
	if t.s.db.Dialect != dialect.Postgres {
		return fmt.Errorf("ledger: WriteAlong on %s", t.s.db.Dialect)
	}
	t.along = append(t.along, ws...)
	return nil
}

// flushAlong writes what no ledger write carried.
func (t *Tx) flushAlong(ctx context.Context) error {
	along := t.along
	if len(along) == 0 {
		return nil
	}
	t.along = nil
	text, args, want := alongStatement("", "", 0, along)
	got := make([]int64, len(want))
	if err := t.queryCounts(ctx, text, args, got); err != nil {
		return fmt.Errorf("ledger: writing %s: %w", whatAlong(along), keyTaken(err))
	}
	return checkAlong(along, got, want)
}

// alongStatement adds along to a statement made of WITH queries (parts,
// "" for none) and an outer SELECT of counts (counts, "" for none) that
// takes argc arguments: each write becomes a WITH query whose rows the
// outer SELECT counts after the statement's own.
func alongStatement(parts, counts string, argc int, along []Along) (string, []any, []int64) {
	var b strings.Builder
	if parts == "" {
		b.WriteString("WITH ")
	} else {
		b.WriteString(parts + ",\n")
	}
	var args []any
	want := make([]int64, len(along))
	for i, w := range along {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString("along" + strconv.Itoa(i) + " AS (" + database.NumberFrom(w.SQL, argc+len(args)) + " RETURNING 1)")
		args, want[i] = append(args, w.Args...), w.Rows
	}
	b.WriteString("\n")
	if counts == "" {
		b.WriteString("SELECT ")
	} else {
		b.WriteString(counts + ", ")
	}
	for i := range along {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(SELECT count(*) FROM along" + strconv.Itoa(i) + ")")
	}
	return b.String(), args, want
}

// queryCounts runs a statement whose one row is counts, into got.
func (t *Tx) queryCounts(ctx context.Context, text string, args []any, got []int64) error {
	rows, err := t.ent.QueryContext(ctx, text, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	dest := make([]any, len(got))
	for i := range got {
		dest[i] = &got[i]
	}
	if rows.Next() {
		err = rows.Scan(dest...)
	}
	if err == nil {
		err = rows.Err()
	}
	if err != nil {
		return err
	}
	return rows.Close()
}

func checkAlong(along []Along, got, want []int64) error {
	for i := range along {
		if got[i] != want[i] {
			return fmt.Errorf("ledger: wrote %d rows of %s, not %d", got[i], along[i].What, want[i])
		}
	}
	return nil
}

func whatAlong(along []Along) string {
	what := make([]string, len(along))
	for i, w := range along {
		what[i] = w.What
	}
	return strings.Join(what, " and ")
}
