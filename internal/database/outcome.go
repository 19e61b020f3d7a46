package database

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/tally-billing/tally/internal/apperr"
)

// A failed transaction either certainly did not commit, or its outcome is
// unknown: the COMMIT was sent and the answer never came (the connection
// broke, the deadline passed). Both are UNAVAILABLE to the caller, who
// retries with the same idempotency key: a key whose effect committed
// replays it, one whose effect did not applies it. The two are kept apart in
// the error chain, for the log, by these markers.
var (
	// ErrOutcomeUnknown marks a transaction that may or may not have
	// committed.
	ErrOutcomeUnknown = errors.New("outcome unknown: the transaction may or may not have committed")
	// ErrNotCommitted marks a transaction that certainly did not commit
	// because the database could not be reached or the connection broke
	// before COMMIT was sent.
	ErrNotCommitted = errors.New("not committed: the database could not be reached")
)

// Messages the caller sees. They name the client's rule, since that is
// what the caller can act on.
const (
	msgOutcomeUnknown = "the connection to the database was lost while committing: the operation may or may not have taken effect; retry with the same idempotency key, which returns its result if it did"
	msgNotCommitted   = "the database is unavailable; nothing was changed; retry (with the same idempotency key)"
	msgUnavailable    = "the database is unavailable; retry (with the same idempotency key)"
)

// Unreachable reports whether err says that the database could not be
// reached, or that the connection to it broke or timed out, rather than
// that the database refused a statement. Such a failure is transient: the
// same request may succeed later.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return serverUnavailable(pgErr.Code)
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		switch sqliteErr.Code() & 0xff {
		case 10, 14: // SQLITE_IOERR, SQLITE_CANTOPEN: the file could not be read or opened
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		errors.Is(err, pgconn.ErrConnClosed),
		pgconn.SafeToRetry(err),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, sql.ErrConnDone),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr),
		pgconn.Timeout(err):
		return true
	}
	// database/sql does not export the error of a closed pool; a request
	// still running while the process shuts down meets it.
	return strings.Contains(err.Error(), "sql: database is closed")
}

// serverUnavailable says whether a PostgreSQL error code is the server
// being unable to serve (rather than refusing the statement):
// connection_exception, too_many_connections, query_canceled (the
// deadline's cancel request), admin_shutdown, crash_shutdown,
// cannot_connect_now.
func serverUnavailable(code string) bool {
	return strings.HasPrefix(code, "08") ||
		code == "53300" || code == "57014" || code == "57P01" || code == "57P02" || code == "57P03"
}

// Classify gives an error that escaped outside any transaction (a read, an
// idempotent upsert) the code UNAVAILABLE when the database could not be
// reached; any other error is returned as it is. The original error stays
// in the chain, for the log. It does not say whether anything changed: a
// single statement may have committed on its own.
func Classify(err error) error {
	if _, ok := apperr.As(err); ok || !Unreachable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", apperr.New(apperr.Unavailable, msgUnavailable), err)
}

// ClassifyTx is Classify for an error of a transaction before its COMMIT
// was sent (beginning it, or any statement in it): the database rolls back
// a transaction whose connection broke, so nothing was committed.
func ClassifyTx(err error) error {
	if _, ok := apperr.As(err); ok || !Unreachable(err) {
		return err
	}
	return fmt.Errorf("%w: %w: %w", apperr.New(apperr.Unavailable, msgNotCommitted), ErrNotCommitted, err)
}

// ClassifyCommit classifies an error returned by COMMIT. The database's own
// answer (a serialization failure, a deferred constraint, SQLite's error,
// a transaction already aborted) means it rolled back, and is returned as
// it is; so is database/sql's refusal to send COMMIT for a context already
// ended. Anything else (the connection lost, broken pipe, EOF, a deadline,
// a bad connection) leaves the outcome unknown: UNAVAILABLE, marked
// ErrOutcomeUnknown, for every such error, even one the driver calls safe
// to retry: pgx reports the answer to a COMMIT it sent and then lost as
// "conn closed", the error it also gives for a COMMIT it never sent. In
// doubt the outcome is called unknown: that costs the client a retry,
// which replays; calling a committed transaction "not committed" would
// mislead it.
func ClassifyCommit(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := apperr.As(err); ok {
		return err
	}
	var pgErr *pgconn.PgError
	var sqliteErr *sqlite.Error
	switch {
	case errors.As(err, &pgErr) && !serverUnavailable(pgErr.Code),
		errors.As(err, &sqliteErr),
		errors.Is(err, pgx.ErrTxCommitRollback),
		errors.Is(err, sql.ErrTxDone):
		return err
	case notSent(err):
		return fmt.Errorf("%w: %w: %w", apperr.New(apperr.Unavailable, msgNotCommitted), ErrNotCommitted, err)
	}
	return fmt.Errorf("%w: %w: %w", apperr.New(apperr.Unavailable, msgOutcomeUnknown), ErrOutcomeUnknown, err)
}

// notSent recognizes database/sql's own refusal to commit a transaction
// whose context ended first: it returns the context's error as it is,
// without sending COMMIT, and rolls the transaction back. The driver's
// errors for a deadline during COMMIT are wrapped, never bare.
func notSent(err error) bool {
	return err == context.Canceled || err == context.DeadlineExceeded
}
