package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
)

// The seeded tables, in the order a batch is copied: every row refers only
// to rows of earlier tables (or of its own table's earlier batches), so the
// foreign keys hold after each COPY.
const (
	tUsers = iota
	tReservations
	tTransactions
	tLots
	tPostings
	tKeys
	tAdminActions
	tCount
)

var seedTables = [tCount]string{"users", "credit_reservations", "credit_transactions", "credit_lots", "credit_ledgers", "idempotency_keys", "admin_actions"}

var seedColumns = [tCount][]string{
	{"id", "created_at", "updated_at", "external_id", "email", "credits_balance", "transaction_count", "status"},
	{"id", "created_at", "updated_at", "amount", "captured_amount", "status", "expires_at", "reason", "closed_at", "user_id"},
	{"id", "created_at", "kind", "amount", "reason", "actor", "idempotency_key", "fingerprint", "user_id", "reservation_id"},
	{"id", "created_at", "updated_at", "source", "original", "remaining", "held", "priority", "transaction_id", "user_id"},
	{"id", "created_at", "account", "amount", "balance_after", "lot_id", "transaction_id", "user_id"},
	{"id", "created_at", "scope", "key", "fingerprint", "result"},
	{"id", "created_at", "action", "target_id", "amount", "reason", "balance_before", "balance_after",
		"request_id", "admin_id", "target_user_id", "transaction_id"},
}

// copyBatchRows is how many rows are held before they are copied: memory
// stays bounded however large the seed (or one user's history) is.
const copyBatchRows = 20000

// copyBatch buffers rows and copies them, table by table, when it is full.
type copyBatch struct {
	ctx     context.Context
	tx      pgx.Tx
	rows    [tCount][][]any
	pending int
	err     error // the first failed copy; later rows are dropped

	txns     int // transactions added so far
	copied   [tCount]int64
	progress io.Writer
	started  time.Time
	lastNote time.Time
	total    int // transactions expected, for the progress line
}

func (b *copyBatch) add(table int, values ...any) {
	if b.err != nil {
		return
	}
	b.rows[table] = append(b.rows[table], values)
	b.pending++
	if b.pending >= copyBatchRows {
		b.err = b.flush()
		if time.Since(b.lastNote) >= 2*time.Second {
			b.note()
		}
	}
}

// flush copies what is buffered.
func (b *copyBatch) flush() error {
	if b.err != nil {
		return b.err
	}
	for t, rows := range b.rows {
		if len(rows) == 0 {
			continue
		}
		n, err := b.tx.CopyFrom(b.ctx, pgx.Identifier{seedTables[t]}, seedColumns[t], pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("seed: copying %d rows into %s: %w", len(rows), seedTables[t], err)
		}
		b.copied[t] += n
		clear(rows)
		b.rows[t] = rows[:0]
	}
	b.pending = 0
	return nil
}

// rowsCopied is the number of rows written, every table together.
func (b *copyBatch) rowsCopied() int64 {
	var n int64
	for _, c := range b.copied {
		n += c
	}
	return n
}

func (b *copyBatch) note() {
	b.lastNote = time.Now()
	elapsed := time.Since(b.started).Seconds()
	rows := b.rowsCopied()
	fmt.Fprintf(b.progress, "seed: %d/%d transactions, %d rows, %.0f rows/s, %.0f transactions/s\n",
		b.txns, b.total, rows, float64(rows)/elapsed, float64(b.txns)/elapsed)
}
