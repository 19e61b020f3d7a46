package database_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
)

// TestClassifyCommit: what an error of COMMIT tells of the transaction.
// Only the database's own answer, or database/sql's refusal to send the
// COMMIT, is definite; every way of losing the answer is an unknown
// outcome, even an error the driver calls safe to retry (pgx reports a
// COMMIT sent and then lost as "conn closed").
func TestClassifyCommit(t *testing.T) {
	lost := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, c := range []struct {
		name string
		err  error
		want error // nil: returned as it is
	}{
		{"serialization failure", &pgconn.PgError{Code: "40001"}, nil},
		{"deferred constraint", &pgconn.PgError{Code: "23505"}, nil},
		{"aborted transaction", pgx.ErrTxCommitRollback, nil},
		{"transaction already done", sql.ErrTxDone, nil},
		{"context ended before COMMIT was sent", context.DeadlineExceeded, database.ErrNotCommitted},
		{"connection reset", lost, database.ErrOutcomeUnknown},
		{"EOF", fmt.Errorf("receiving: %w", io.ErrUnexpectedEOF), database.ErrOutcomeUnknown},
		{"broken pipe", fmt.Errorf("sending: %w", syscall.EPIPE), database.ErrOutcomeUnknown},
		{"deadline during COMMIT", fmt.Errorf("timeout: %w", context.DeadlineExceeded), database.ErrOutcomeUnknown},
		{"bad connection", driver.ErrBadConn, database.ErrOutcomeUnknown},
		{"conn closed", fmt.Errorf("commit: %w", pgconn.ErrConnClosed), database.ErrOutcomeUnknown},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, database.ErrOutcomeUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := database.ClassifyCommit(c.err)
			if c.want == nil {
				if got != c.err {
					t.Fatalf("got %v, want the error as it is", got)
				}
				return
			}
			if apperr.CodeOf(got) != apperr.Unavailable || !errors.Is(got, c.want) || !errors.Is(got, c.err) {
				t.Fatalf("got %v, want UNAVAILABLE marked %q, wrapping the original", got, c.want)
			}
		})
	}
}

// TestClassifyTx: before COMMIT, a database that cannot be reached or a
// connection that broke means nothing was committed; the database's
// refusal of a statement, and an error already coded, stay as they are.
func TestClassifyTx(t *testing.T) {
	for _, c := range []struct {
		name        string
		err         error
		unavailable bool
	}{
		{"connection refused", &pgconn.ConnectError{}, true},
		{"refused by the kernel", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"conn closed", pgconn.ErrConnClosed, true},
		{"pool closed", errors.New("sql: database is closed"), true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, false},
		{"a refusal", apperr.New(apperr.InsufficientCredits, "no"), false},
		{"a bug", errors.New("nil map"), false},
		{"cancelled by the caller", context.Canceled, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := database.ClassifyTx(c.err)
			if !c.unavailable {
				if got != c.err {
					t.Fatalf("got %v, want the error as it is", got)
				}
				return
			}
			if apperr.CodeOf(got) != apperr.Unavailable || !errors.Is(got, database.ErrNotCommitted) || !errors.Is(got, c.err) {
				t.Fatalf("got %v, want UNAVAILABLE marked not committed, wrapping the original", got)
			}
			// Outside a transaction nothing is promised about what changed.
			if plain := database.Classify(c.err); apperr.CodeOf(plain) != apperr.Unavailable || errors.Is(plain, database.ErrNotCommitted) {
				t.Fatalf("Classify: %v, want UNAVAILABLE without a claim about the outcome", plain)
			}
		})
	}
}
