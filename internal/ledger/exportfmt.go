package ledger

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tally-billing/tally/internal/apperr"
)

// ExportColumns are the export's fields, in CSV column order; JSON Lines
// objects use the same names.
var ExportColumns = []string{
	"transaction_id", "created_at", "user_id", "external_user_id", "kind", "amount", "balance_change",
	"reason", "actor", "idempotency_key", "payment_id", "reservation_id",
}

// The export formats.
const (
	FormatCSV   = "csv"
	FormatJSONL = "jsonl"
)

// WriteExport writes the transactions the filter selects to w as CSV (a
// header, then a row per transaction) or JSON Lines, oldest first, holding
// one batch in memory at a time.
func (s *Service) WriteExport(ctx context.Context, w io.Writer, format string, f ExportFilter, batchSize int) error {
	var emit func(*ExportRow) error
	var flush func() error
	switch format {
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(ExportColumns); err != nil {
			return fmt.Errorf("writing the export: %w", err)
		}
		record := make([]string, len(ExportColumns))
		emit = func(r *ExportRow) error {
			record = append(record[:0], r.TransactionID, r.CreatedAt.Format(time.RFC3339Nano), r.UserID,
				spreadsheetSafe(r.ExternalUserID), r.Kind, strconv.FormatInt(r.Amount, 10), strconv.FormatInt(r.BalanceChange, 10),
				spreadsheetSafe(r.Reason), spreadsheetSafe(r.Actor), spreadsheetSafe(r.IdempotencyKey), r.PaymentID, r.ReservationID)
			return cw.Write(record)
		}
		flush = func() error { cw.Flush(); return cw.Error() }
	case FormatJSONL:
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		var obj jsonRow
		emit = func(r *ExportRow) error {
			obj = jsonRow{r.TransactionID, r.CreatedAt.Format(time.RFC3339Nano), r.UserID, r.ExternalUserID, r.Kind,
				r.Amount, r.BalanceChange, r.Reason, r.Actor, r.IdempotencyKey, r.PaymentID, r.ReservationID}
			return enc.Encode(&obj)
		}
		flush = bw.Flush
	default:
		return apperr.New(apperr.InvalidArgument, "the format must be %s or %s, not %q", FormatCSV, FormatJSONL, format)
	}
	if err := s.ExportTransactions(ctx, f, batchSize, emit); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return fmt.Errorf("writing the export: %w", err)
	}
	return nil
}

type jsonRow struct {
	TransactionID  string `json:"transaction_id"`
	CreatedAt      string `json:"created_at"`
	UserID         string `json:"user_id"`
	ExternalUserID string `json:"external_user_id"`
	Kind           string `json:"kind"`
	Amount         int64  `json:"amount"`
	BalanceChange  int64  `json:"balance_change"`
	Reason         string `json:"reason"`
	Actor          string `json:"actor"`
	IdempotencyKey string `json:"idempotency_key"`
	PaymentID      string `json:"payment_id"`
	ReservationID  string `json:"reservation_id"`
}

// spreadsheetSafe keeps a free-text cell from being run as a formula when
// the CSV is opened in a spreadsheet (OWASP's CSV injection advice): text
// that starts with = + - @ or a tab or carriage return gets a leading
// apostrophe. Numbers and ids never start with those and are left alone.
func spreadsheetSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
