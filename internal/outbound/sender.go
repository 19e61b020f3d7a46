package outbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/tally-billing/tally/internal/apperr"
)

const (
	// defaultTimeout is used when NewSender is given none.
	defaultTimeout = 10 * time.Second
	// maxReadBytes is how much of a response body is read: enough to keep
	// the connection for the next attempt on ordinary replies, and no more.
	maxReadBytes = 64 << 10
	// maxHeaderBytes bounds a response's header block.
	maxHeaderBytes = 64 << 10
	// idlePerHost keeps connections to a busy endpoint open between attempts.
	idlePerHost = 16
)

// Sender posts webhook requests under a Policy. It is safe for concurrent
// use; connections are kept per host and reused.
type Sender struct {
	policy  Policy
	timeout time.Duration
	client  *http.Client
}

// Response is what an attempt got back.
type Response struct {
	Status int // HTTP status
	// Body is the first 1,024 bytes of the body at most, as text: invalid
	// UTF-8, control and format characters replaced (it is shown to admins).
	Body string
}

// NewSender returns a Sender whose timeout bounds a whole attempt (connect,
// TLS, headers, body read); 10 s in production, and 10 s when timeout ≤ 0.
func NewSender(p Policy, timeout time.Duration) *Sender {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	s := &Sender{policy: p, timeout: timeout}
	s.client = s.newClient(&tls.Config{MinVersion: tls.VersionTLS12})
	return s
}

// WithTLSConfig returns a copy using cfg as the TLS client config (tests that
// use httptest.NewTLSServer). The copy has its own connections; TLS 1.2
// stays the minimum.
func (s *Sender) WithTLSConfig(cfg *tls.Config) *Sender {
	c := cfg.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	cp := &Sender{policy: s.policy, timeout: s.timeout}
	cp.client = cp.newClient(c)
	return cp
}

func (s *Sender) newClient(tlsConfig *tls.Config) *http.Client {
	dialer := &net.Dialer{
		Timeout: s.timeout,
		// Control runs on every address the dialer is about to connect to,
		// after DNS: a name that resolves (or rebinds) to a refused address
		// is stopped here, whatever CheckURL saw when the URL was saved.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: unparsable address", ErrNotAllowed)
			}
			if !s.policy.Allowed(ap.Addr()) {
				return &refusedError{addr: ap.Addr().WithZone("")}
			}
			return nil
		},
	}
	transport := &http.Transport{
		Proxy:                  nil, // proxy environment variables would route around the policy
		DialContext:            dialer.DialContext,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    s.timeout,
		ResponseHeaderTimeout:  s.timeout,
		MaxResponseHeaderBytes: maxHeaderBytes,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    idlePerHost,
		IdleConnTimeout:        90 * time.Second,
		// The body is shown as received; and a compressed reply could
		// inflate far past what was read off the wire.
		DisableCompression: true,
		ForceAttemptHTTP2:  true,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   s.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			// A 3xx is the endpoint's answer; following it would let it
			// point us anywhere, and would re-send the signed body.
			return http.ErrUseLastResponse
		},
	}
}

// Send POSTs body to url with header (from Headers). It never follows
// redirects (a 3xx is returned as the Response), checks every address it
// connects to against the policy after DNS resolution, ignores proxy
// environment variables, and reads at most 64 KiB of the response body. The
// URL must pass the structural part of CheckURL (scheme, host, no user info).
//
// The error, when no HTTP response came back, has a short message fit to
// show an admin ("connection refused", "timeout after 10s", "address
// 127.0.0.1 is not allowed") and wraps the cause: errors.Is(err,
// ErrNotAllowed) for a refused address, context.Canceled when ctx ended it.
// A response whose body could not be read to the end is still a Response.
func (s *Sender) Send(ctx context.Context, url string, header http.Header, body []byte) (Response, error) {
	u, err := s.policy.parseURL(url)
	if err != nil {
		msg := "invalid url"
		if e, ok := apperr.As(err); ok {
			msg = e.Message
		}
		return Response{}, &sendError{msg: msg, err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Response{}, &sendError{msg: "invalid request", err: err}
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Response{}, s.describe(ctx, err)
	}
	defer resp.Body.Close()
	// A read cut by the timeout or a reset still leaves a status to report.
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxReadBytes))
	return Response{Status: resp.StatusCode, Body: displayBody(raw)}, nil
}
