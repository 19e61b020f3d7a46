// Package apperr is the vocabulary of errors that callers of Tally may see.
// Domain packages return (or wrap) an *Error with a Code; transports map the
// Code to a GraphQL extensions.code or an HTTP status in one place each. Any
// other error is internal: it is logged, and the caller sees only INTERNAL.
package apperr

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a machine-readable error code, stable for clients.
type Code string

// The codes of the API contract.
const (
	Unauthenticated      Code = "UNAUTHENTICATED"
	Forbidden            Code = "FORBIDDEN"
	NotFound             Code = "NOT_FOUND"
	InvalidArgument      Code = "INVALID_ARGUMENT"
	InsufficientCredits  Code = "INSUFFICIENT_CREDITS"
	IdempotencyKeyReused Code = "IDEMPOTENCY_KEY_REUSED"
	AccountFrozen        Code = "ACCOUNT_FROZEN"
	Conflict             Code = "CONFLICT"
	Unavailable          Code = "UNAVAILABLE"
	// RateLimited is a request past its caller's rate limit (HTTP 429 with
	// Retry-After; on a WebSocket, extensions.retryAfter in seconds).
	RateLimited Code = "RATE_LIMITED"
	// Timeout is an admin query that ran past its time limit and was
	// stopped: the caller narrows it (a filter, a smaller page) rather than
	// retrying it as it is.
	Timeout  Code = "TIMEOUT"
	Internal Code = "INTERNAL"
)

// Error is an error meant for the caller: its message must be safe to show.
type Error struct {
	Code    Code
	Message string
	// Field names the request's field the error is about, as the API names
	// it (amount, reason, ttlSeconds…); transports add where the request
	// sits (GraphQL: extensions.field "input.amount").
	Field string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New returns an *Error with a formatted, caller-safe message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an INVALID_ARGUMENT about one field of a request.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: InvalidArgument, Message: fmt.Sprintf(format, args...), Field: field}
}

// First is the first of errs that is not nil: a request's checks, in the
// order its fields are read.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// CodeOf returns the code of err, Internal for any error that is not an *Error.
func CodeOf(err error) Code {
	if e, ok := As(err); ok {
		return e.Code
	}
	return Internal
}

// Clip cuts text that came from outside (a client's value in a message, an
// endpoint's answer shown to admins) to at most n bytes, on a character
// boundary, so that a message stays short and valid UTF-8.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
