package main

import (
	"bufio"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/users"
)

func newExportCommand() *cobra.Command {
	export := &cobra.Command{
		Use:   "export",
		Short: "Export ledger records for accounting",
		Args:  cobra.NoArgs,
	}
	export.AddCommand(newExportTransactionsCommand())
	return export
}

func newExportTransactionsCommand() *cobra.Command {
	var since, until, externalID, format string
	var batch int
	cmd := &cobra.Command{
		Use:   "transactions",
		Short: "Write the transactions of a period to stdout as CSV or JSON Lines",
		Long: `Writes one row per credit transaction stamped in [--since, --until), oldest
first: ids, time, user, kind, amount, balance_change (the signed change of the
user's balance), reason, actor, idempotency key, payment and reservation.
Times are RFC 3339 or dates (midnight UTC); --until defaults to now and is
never later than the moment the export starts. The rows are read in batches,
so memory does not grow with the period. CSV text cells that a spreadsheet
would run as a formula start with an apostrophe.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&since, "since", "", "start of the period, included (RFC 3339 or YYYY-MM-DD; required)")
	cmd.Flags().StringVar(&until, "until", "", "end of the period, excluded (default now)")
	cmd.Flags().StringVar(&externalID, "user", "", "only this user's transactions (external id)")
	cmd.Flags().StringVar(&format, "format", ledger.FormatCSV, "csv or jsonl")
	cmd.Flags().IntVar(&batch, "batch-size", ledger.DefaultExportBatch, fmt.Sprintf("rows read per query (1 to %d)", ledger.MaxExportBatch))
	addSettingFlags(cmd.Flags(), "database-url", "env")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		started := time.Now().UTC()
		f := ledger.ExportFilter{Until: started}
		var err error
		if since == "" {
			return usageError{errors.New("--since is required")}
		}
		if f.Since, err = parseMoment("--since", since); err != nil {
			return err
		}
		if until != "" {
			if f.Until, err = parseMoment("--until", until); err != nil {
				return err
			}
			// Later rows may still be committing: the export stops at its start.
			if f.Until.After(started) {
				f.Until = started
			}
		}
		if !f.Since.Before(f.Until) {
			return usageError{fmt.Errorf("--since (%s) must be before --until (%s)", f.Since.Format(time.RFC3339Nano), f.Until.Format(time.RFC3339Nano))}
		}
		if format != ledger.FormatCSV && format != ledger.FormatJSONL {
			return usageError{fmt.Errorf("--format must be csv or jsonl, not %q", format)}
		}
		if batch < 1 || batch > ledger.MaxExportBatch {
			return usageError{fmt.Errorf("--batch-size must be from 1 to %d, not %d", ledger.MaxExportBatch, batch)}
		}
		_, db, err := openConfigured(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		defer db.Close()
		if externalID != "" {
			u, err := users.New(db.Ent).ByExternalID(ctx, externalID)
			if err != nil {
				return plain(err)
			}
			f.UserID = u.ID
		}
		out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
		if err := ledger.New(db).WriteExport(ctx, out, format, f, batch); err != nil {
			return plain(err)
		}
		if err := out.Flush(); err != nil {
			return fmt.Errorf("writing the export: %w", err)
		}
		return nil
	}
	return cmd
}

// parseMoment reads an RFC 3339 time or a date (midnight UTC).
func parseMoment(flag, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, usageError{fmt.Errorf("%s %q is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a date (2026-01-31)", flag, s)}
}

// plain shows a caller-safe error by its message alone: a command line has
// no use for the API's error codes.
func plain(err error) error {
	if e, ok := apperr.As(err); ok {
		return errors.New(e.Message)
	}
	return err
}
