package ledger

import (
	"context"
	stdsql "database/sql"
	"fmt"
	"time"

	"github.com/tally-billing/tally/internal/apperr"
)

// ExportRow is one transaction as accounting reads it: one row per
// transaction (its postings against system accounts follow from the kind),
// with the signed change it made to the user's balance.
type ExportRow struct {
	TransactionID  string
	CreatedAt      time.Time
	UserID         string
	ExternalUserID string
	Kind           string
	// Amount is the transaction's own amount, always positive.
	Amount int64
	// BalanceChange is the sum of its postings on the user's account: what
	// the user's balance moved by (0 for a reservation's hold or release).
	BalanceChange  int64
	Reason         string
	Actor          string
	IdempotencyKey string
	PaymentID      string
	ReservationID  string
}

// ExportFilter selects the transactions to export: stamped in [Since,
// Until), of one user when UserID is set.
type ExportFilter struct {
	Since  time.Time
	Until  time.Time
	UserID string
}

// DefaultExportBatch is how many rows each query of an export reads.
const DefaultExportBatch = 1000

// MaxExportBatch bounds a batch, and with it the memory of an export.
const MaxExportBatch = 10_000

// ExportTransactions calls emit for every transaction the filter selects,
// oldest first, reading batchSize rows a query: a keyset on (created_at,
// id), so that each batch is a range of an index and memory stays that of
// one batch however long the period. The row passed to emit is reused for
// the next one; emit must copy what it keeps. Batches are separate
// statements: a transaction that commits during the export with a stamp in
// a batch already read is not in it (export periods that ended a moment ago
// are stable).
func (s *Service) ExportTransactions(ctx context.Context, f ExportFilter, batchSize int, emit func(*ExportRow) error) error {
	if batchSize < 1 || batchSize > MaxExportBatch {
		return apperr.New(apperr.InvalidArgument, "the batch size must be from 1 to %d, not %d", MaxExportBatch, batchSize)
	}
	if !f.Since.Before(f.Until) {
		return apperr.New(apperr.InvalidArgument, "since (%s) must be before until (%s)",
			f.Since.UTC().Format(time.RFC3339Nano), f.Until.UTC().Format(time.RFC3339Nano))
	}
	query, args := exportQuery(f)
	query = s.db.Rebind(query)
	var row ExportRow
	// The keyset starts just before Since: the first batch's row
	// comparison then admits a transaction stamped exactly Since.
	lastAt, lastID := f.Since.UTC(), ""
	for {
		rows, err := s.db.SQL.QueryContext(ctx, query, append(args[:len(args):len(args)], lastAt, lastAt, lastID, batchSize)...)
		if err != nil {
			return fmt.Errorf("ledger: exporting transactions: %w", err)
		}
		n, err := scanExport(rows, &row, emit)
		if err != nil {
			return err
		}
		if n < batchSize {
			return nil
		}
		lastAt, lastID = row.CreatedAt, row.TransactionID
	}
}

func scanExport(rows *stdsql.Rows, row *ExportRow, emit func(*ExportRow) error) (int, error) {
	defer rows.Close()
	var reason, key, payment, reservation stdsql.NullString
	n := 0
	for rows.Next() {
		if err := rows.Scan(&row.TransactionID, &row.CreatedAt, &row.UserID, &row.ExternalUserID, &row.Kind,
			&row.Amount, &row.BalanceChange, &reason, &row.Actor, &key, &payment, &reservation); err != nil {
			return n, fmt.Errorf("ledger: exporting transactions: %w", err)
		}
		row.CreatedAt = row.CreatedAt.UTC()
		row.Reason, row.IdempotencyKey, row.PaymentID, row.ReservationID = reason.String, key.String, payment.String, reservation.String
		n++
		if err := emit(row); err != nil {
			return n, err
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("ledger: exporting transactions: %w", err)
	}
	return n, nil
}

// exportQuery is a batch's statement and its leading arguments; the keyset
// (at, at, id) and the limit follow. The keyset is written as two
// comparisons that both databases turn into one index range.
func exportQuery(f ExportFilter) (string, []any) {
	q := `SELECT t.id, t.created_at, t.user_id, u.external_id, t.kind, t.amount,
	(SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) FROM credit_ledgers l
		WHERE l.transaction_id = t.id AND l.user_id = t.user_id),
	t.reason, t.actor, t.idempotency_key, t.payment_id, t.reservation_id
FROM credit_transactions t JOIN users u ON u.id = t.user_id
WHERE t.created_at < ?`
	args := []any{f.Until.UTC()}
	if f.UserID != "" {
		q += ` AND t.user_id = ?`
		args = append(args, f.UserID)
	}
	q += ` AND t.created_at >= ? AND (t.created_at > ? OR t.id > ?)
ORDER BY t.created_at, t.id LIMIT ?`
	return q, args
}
