package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/outbound"
)

// local lets the sender reach httptest servers, which listen on 127.0.0.1.
var local = outbound.Policy{AllowHTTP: true, AllowPrivate: true}

// counted returns a server running h and the number of requests it saw.
func counted(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestSendDelivers(t *testing.T) {
	secret, _ := outbound.NewSecret()
	body := []byte(`{"type":"ping"}`)
	var gotMethod, gotSig, gotID, gotTS, gotCT string
	var gotBody []byte
	srv, n := counted(t, func(w http.ResponseWriter, r *http.Request) {
		gotMethod, gotSig = r.Method, r.Header.Get("webhook-signature")
		gotID, gotTS, gotCT = r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("Content-Type")
		gotBody, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"ok":true}`)
	})
	h, err := outbound.Headers("msg_send", time.Now(), body, secret)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := outbound.NewSender(local, 5*time.Second).Send(context.Background(), srv.URL+"/hook", h, body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Body != `{"ok":true}` {
		t.Errorf("Send = %+v, want 200 {\"ok\":true}", resp)
	}
	if n.Load() != 1 || gotMethod != http.MethodPost || string(gotBody) != string(body) || gotCT != "application/json" {
		t.Errorf("server saw %d requests, %s %q %q", n.Load(), gotMethod, gotBody, gotCT)
	}
	if !verify(t, secret, gotID, gotTS, gotBody, gotSig) {
		t.Errorf("the received signature %q does not verify", gotSig)
	}
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	target, hits := counted(t, func(w http.ResponseWriter, r *http.Request) {})
	srv, _ := counted(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusFound)
	})
	resp, err := outbound.NewSender(local, 5*time.Second).Send(context.Background(), srv.URL, nil, []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusFound {
		t.Errorf("status %d, want 302", resp.Status)
	}
	if hits.Load() != 0 {
		t.Errorf("the redirect's target saw %d requests", hits.Load())
	}
}

func TestSendCutsHugeBody(t *testing.T) {
	srv, _ := counted(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("é\x01\u202e", 4096)) // multi-byte, control and bidi override
		// Up to 1 GiB: a sender that read it all would hit its timeout.
		for written := 0; written < 1<<30; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	start := time.Now()
	resp, err := outbound.NewSender(local, 5*time.Second).Send(context.Background(), srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Send took %s on an endless body", elapsed)
	}
	if resp.Status != 200 || len(resp.Body) > 1024 || len(resp.Body) < 1000 {
		t.Errorf("status %d, body of %d bytes: want 200 and about 1,024 bytes", resp.Status, len(resp.Body))
	}
	if !utf8.ValidString(resp.Body) || strings.ContainsAny(resp.Body, "\x01\u202e") {
		t.Errorf("body not sanitised: %q", resp.Body[:40])
	}
}

func TestSendSanitisesBody(t *testing.T) {
	srv, _ := counted(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("bad\xff\xfe\x00 line\nnext\t\x1b[31mred\u202eevil"))
	})
	resp, err := outbound.NewSender(local, 5*time.Second).Send(context.Background(), srv.URL, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "bad\uFFFD\uFFFD\uFFFD line next \uFFFD[31mred\uFFFDevil"
	if resp.Status != 500 || resp.Body != want {
		t.Errorf("Send = %d %q, want 500 %q", resp.Status, resp.Body, want)
	}
}

func TestSendTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv, _ := counted(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	const timeout = 300 * time.Millisecond
	start := time.Now()
	_, err := outbound.NewSender(local, timeout).Send(context.Background(), srv.URL, nil, nil)
	elapsed := time.Since(start)
	if err == nil || err.Error() != "timeout after 300ms" {
		t.Errorf("err = %v, want timeout after 300ms", err)
	}
	if elapsed < timeout || elapsed > timeout+time.Second {
		t.Errorf("Send returned after %s, want about %s", elapsed, timeout)
	}
}

func TestSendCanceled(t *testing.T) {
	srv, _ := counted(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := outbound.NewSender(local, 5*time.Second).Send(ctx, srv.URL, nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want it to wrap context.Canceled", err)
	}
}

func TestSendRefusesPrivateAfterResolution(t *testing.T) {
	srv, hits := counted(t, func(w http.ResponseWriter, r *http.Request) {})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	sender := outbound.NewSender(outbound.Policy{AllowHTTP: true}, 2*time.Second)
	for _, url := range []string{
		srv.URL,                             // the literal 127.0.0.1
		"http://localhost:" + port + "/",    // a name that resolves to loopback
		"http://2130706433:" + port + "/",   // 127.0.0.1 in decimal: a name to Go
		"http://[::ffff:127.0.0.1]:" + port, // IPv4-mapped
	} {
		_, err := sender.Send(context.Background(), url, nil, []byte("{}"))
		if err == nil {
			t.Errorf("Send(%s): no error", url)
			continue
		}
		t.Logf("Send(%s): %v", url, err)
		if strings.Contains(url, "2130706433") {
			continue // refused by the resolver or by the check, depending on the resolver
		}
		if !errors.Is(err, outbound.ErrNotAllowed) || !strings.HasPrefix(err.Error(), "address ") ||
			!strings.HasSuffix(err.Error(), " is not allowed") {
			t.Errorf("Send(%s) = %q, want address ... is not allowed", url, err)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the server saw %d requests", hits.Load())
	}
}

func TestSendRefusesBadURL(t *testing.T) {
	srv, hits := counted(t, func(w http.ResponseWriter, r *http.Request) {})
	sender := outbound.NewSender(outbound.Policy{AllowPrivate: true}, 2*time.Second)
	for _, url := range []string{srv.URL, "ftp://example.com/", strings.Replace(srv.URL, "http://", "http://u:p@", 1)} {
		if _, err := sender.Send(context.Background(), url, nil, nil); err == nil {
			t.Errorf("Send(%s) without AllowHTTP: no error", url)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the server saw %d requests", hits.Load())
	}
}

func TestSendIgnoresProxyEnvironment(t *testing.T) {
	proxy, proxied := counted(t, func(w http.ResponseWriter, r *http.Request) {})
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	// Go never proxies loopback destinations, so the target is a name that
	// does not resolve: a proxy would answer for it, a direct dial fails.
	_, err := outbound.NewSender(local, 2*time.Second).Send(context.Background(), "http://tally-test.invalid/hook", nil, nil)
	if err == nil {
		t.Error("Send to an unresolvable name succeeded: it went through the proxy")
	}
	if proxied.Load() != 0 {
		t.Errorf("the proxy saw %d requests", proxied.Load())
	}
}

func TestSendConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = outbound.NewSender(local, 2*time.Second).Send(context.Background(), "http://"+addr+"/", nil, nil)
	if err == nil || err.Error() != "connection refused" {
		t.Errorf("err = %v, want connection refused", err)
	}
}

func TestSendTLS(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()

	plain := outbound.NewSender(outbound.Policy{AllowPrivate: true}, 2*time.Second)
	_, err := plain.Send(context.Background(), srv.URL, nil, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "tls: ") {
		t.Errorf("without the test CA: err = %v, want a tls error", err)
	}
	if hits.Load() != 0 {
		t.Errorf("the server saw %d requests over an unverified connection", hits.Load())
	}

	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	resp, err := plain.WithTLSConfig(&tls.Config{RootCAs: pool}).Send(context.Background(), srv.URL, nil, nil)
	if err != nil || resp.Status != http.StatusAccepted {
		t.Errorf("with the test CA: %+v, %v; want 202", resp, err)
	}

	// An old protocol version is still refused with a caller's config.
	old := httptest.NewUnstartedServer(srv.Config.Handler)
	old.TLS = &tls.Config{MaxVersion: tls.VersionTLS11}
	old.Config.ErrorLog = srv.Config.ErrorLog
	old.StartTLS()
	defer old.Close()
	pool.AddCert(old.Certificate())
	_, err = plain.WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10}).Send(context.Background(), old.URL, nil, nil)
	if err == nil {
		t.Error("a TLS 1.1 server was accepted")
	}
}

func TestSendKeepsStatusOfSlowBody(t *testing.T) {
	srv, _ := counted(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	const timeout = 300 * time.Millisecond
	start := time.Now()
	resp, err := outbound.NewSender(local, timeout).Send(context.Background(), srv.URL, nil, nil)
	if elapsed := time.Since(start); elapsed > timeout+time.Second {
		t.Errorf("Send returned after %s", elapsed)
	}
	if err != nil || resp.Status != http.StatusServiceUnavailable || resp.Body != "partial" {
		t.Errorf("Send = %+v, %v; want 503 \"partial\" and no error", resp, err)
	}
}
