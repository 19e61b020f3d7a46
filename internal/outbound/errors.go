package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
)

// ErrNotAllowed is wrapped by Send's error when the policy refused an
// address the endpoint's name resolved to.
var ErrNotAllowed = errors.New("address not allowed")

// refusedError is what the dialer's check returns for one address.
type refusedError struct{ addr netip.Addr }

func (e *refusedError) Error() string {
	return "address " + e.addr.String() + " is not allowed"
}

func (e *refusedError) Unwrap() error { return ErrNotAllowed }

// sendError carries a message short and safe enough for an admin's screen
// (no resolver addresses, no internal hosts) while keeping the cause for
// errors.Is/As and logs.
type sendError struct {
	msg string
	err error
}

func (e *sendError) Error() string { return e.msg }
func (e *sendError) Unwrap() error { return e.err }

// describe turns a failed round trip into a sendError.
func (s *Sender) describe(ctx context.Context, err error) error {
	wrap := func(msg string) error { return &sendError{msg: msg, err: err} }
	var refused *refusedError
	if errors.As(err, &refused) {
		return wrap(refused.Error())
	}
	if errors.Is(err, ErrNotAllowed) {
		return wrap(ErrNotAllowed.Error())
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return wrap("deadline exceeded")
		}
		return wrap("canceled")
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return wrap(fmt.Sprintf("timeout after %s", s.timeout))
	}
	if msg := describeNet(err); msg != "" {
		return wrap(msg)
	}
	if msg := describeTLS(err); msg != "" {
		return wrap(msg)
	}
	return wrap("request failed")
}

func describeNet(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		// dnsErr.Error() names our resolver's address: keep it out.
		if dnsErr.IsNotFound {
			return "no such host " + dnsErr.Name
		}
		return "dns lookup of " + dnsErr.Name + " failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a response"
	}
	return ""
}

func describeTLS(err error) string {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		record           tls.RecordHeaderError
		verify           *tls.CertificateVerificationError
		alert            tls.AlertError
	)
	switch {
	case errors.As(err, &unknownAuthority):
		return "tls: certificate signed by unknown authority"
	case errors.As(err, &hostname):
		return "tls: certificate is not valid for this host"
	case errors.As(err, &invalid):
		return "tls: certificate is invalid or expired"
	case errors.As(err, &verify):
		return "tls: certificate verification failed"
	case errors.As(err, &record):
		return "tls: the server did not answer with TLS"
	case errors.As(err, &alert):
		return "tls: handshake failed (" + alert.Error() + ")"
	}
	return ""
}
