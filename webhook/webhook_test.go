package webhook

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	stripewebhook "github.com/stripe/stripe-go/v76/webhook"

	"github.com/tally-billing/tally/internal/apperr"
)

const (
	secret      = "whsec_test_current"
	otherSecret = "whsec_test_other"
)

// now is the handler's clock in every test; signatures are made relative to it.
var now = time.Unix(1_700_000_000, 0)

// fakeProcessor records what reached it and answers as told.
type fakeProcessor struct {
	mu       sync.Mutex
	events   []*stripe.Event
	payloads [][]byte
	outcome  string
	err      error
}

func (p *fakeProcessor) HandleEvent(_ context.Context, event *stripe.Event, payload []byte) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, event)
	p.payloads = append(p.payloads, payload)
	return p.outcome, p.err
}

func (p *fakeProcessor) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.events)
}

type fixture struct {
	proc *fakeProcessor
	h    *Handler
	logs *bytes.Buffer
}

func newFixture(t *testing.T, edit func(*Options)) *fixture {
	t.Helper()
	f := &fixture{proc: &fakeProcessor{outcome: "applied"}, logs: &bytes.Buffer{}}
	opts := Options{
		Secrets:             []string{secret},
		AcceptedAPIVersions: []string{"2023-10-16"},
		Processor:           f.proc,
		Logger:              slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:                 func() time.Time { return now },
	}
	if edit != nil {
		edit(&opts)
	}
	f.h = New(opts)
	return f
}

func (f *fixture) post(body []byte, signature string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set(SignatureHeader, signature)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

// logLines decodes the JSON log lines written so far.
func (f *fixture) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, raw := range bytes.Split(bytes.TrimSpace(f.logs.Bytes()), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", raw, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func (f *fixture) onlyLogLine(t *testing.T) map[string]any {
	t.Helper()
	lines := f.logLines(t)
	if len(lines) != 1 {
		t.Fatalf("want one log line per delivery, got %d: %s", len(lines), f.logs)
	}
	return lines[0]
}

func event(id, typ, version string) []byte {
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": version, "livemode": false,
		"created": now.Unix(),
		"data":    map[string]any{"object": map[string]any{"id": "cs_test_1", "object": "checkout.session"}},
	})
	if err != nil {
		panic(err)
	}
	return b
}

func hexMAC(s string, t time.Time, body []byte) string {
	return hex.EncodeToString(mac(s, t.Unix(), body))
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var b map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("body %q is not JSON: %v", rec.Body, err)
	}
	msg, _ := b["error"].(string)
	if msg == "" {
		t.Fatalf("body %q has no error message", rec.Body)
	}
	return msg
}

func TestRefusedSignaturesAre400AndReachNothing(t *testing.T) {
	body := event("evt_1", "checkout.session.completed", "2023-10-16")
	ts := strconv.FormatInt(now.Unix(), 10)
	good := hexMAC(secret, now, body)
	tampered := bytes.Clone(body)
	tampered[len(tampered)-2] ^= 0x01

	cases := []struct {
		name      string
		body      []byte
		signature string
		want      error
	}{
		{"no header", body, "", ErrNoSignature},
		{"not key=value", body, "garbage", ErrMalformedSignature},
		{"no timestamp", body, "v1=" + good, ErrMalformedSignature},
		{"non-numeric timestamp", body, "t=soon,v1=" + good, ErrMalformedSignature},
		{"two timestamps", body, "t=" + ts + ",t=" + ts + ",v1=" + good, ErrMalformedSignature},
		{"no v1", body, "t=" + ts, ErrMalformedSignature},
		{"v1 not hex", body, "t=" + ts + ",v1=zz", ErrMalformedSignature},
		{"only v0", body, "t=" + ts + ",v0=" + good, ErrMalformedSignature},
		{"wrong secret", body, Sign(body, otherSecret, now), ErrSignatureMismatch},
		{"body altered by one byte", tampered, Sign(body, secret, now), ErrSignatureMismatch},
		{"signature for another timestamp", body, "t=" + strconv.FormatInt(now.Unix()+1, 10) + ",v1=" + good, ErrSignatureMismatch},
		{"stale", body, Sign(body, secret, now.Add(-DefaultTolerance-time.Second)), ErrTimestampOutside},
		{"future", body, Sign(body, secret, now.Add(DefaultTolerance+time.Second)), ErrTimestampOutside},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			rec := f.post(tc.body, tc.signature)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %s", rec.Code, rec.Body)
			}
			if msg := errorBody(t, rec); msg != "invalid signature: "+tc.want.Error() {
				t.Errorf("error = %q, want the %q reason", msg, tc.want)
			}
			if n := f.proc.calls(); n != 0 {
				t.Fatalf("processor called %d times for a refused signature", n)
			}
			line := f.onlyLogLine(t)
			if line["level"] != "WARN" || line["status"] != float64(400) || !strings.Contains(fmt.Sprint(line["error"]), tc.want.Error()) {
				t.Errorf("log line %v should be a warning naming %q", line, tc.want)
			}
		})
	}
}

func TestAcceptedSignatures(t *testing.T) {
	body := event("evt_1", "checkout.session.completed", "2023-10-16")
	ts := strconv.FormatInt(now.Unix(), 10)
	cases := []struct {
		name      string
		secrets   []string
		signature string
	}{
		{"plain", []string{secret}, Sign(body, secret, now)},
		{"two v1, only the second valid", []string{secret},
			"t=" + ts + ",v1=" + hexMAC(otherSecret, now, body) + ",v1=" + hexMAC(secret, now, body)},
		{"two v1, only the first valid", []string{secret},
			"t=" + ts + ",v1=" + hexMAC(secret, now, body) + ",v1=" + hexMAC(otherSecret, now, body)},
		{"v0 and an unknown scheme beside a valid v1", []string{secret},
			"t=" + ts + ",v0=abcd,v9=whatever,v1=" + hexMAC(secret, now, body)},
		{"rotation: signed with the second configured secret", []string{otherSecret, secret}, Sign(body, secret, now)},
		{"just inside the tolerance, past", []string{secret}, Sign(body, secret, now.Add(-DefaultTolerance))},
		{"just inside the tolerance, future", []string{secret}, Sign(body, secret, now.Add(DefaultTolerance))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.Secrets = tc.secrets })
			rec := f.post(body, tc.signature)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
			}
			if n := f.proc.calls(); n != 1 {
				t.Fatalf("processor called %d times, want once", n)
			}
		})
	}
}

func TestToleranceIsConfigurable(t *testing.T) {
	body := event("evt_1", "checkout.session.completed", "2023-10-16")
	f := newFixture(t, func(o *Options) { o.Tolerance = 10 * time.Second })
	if rec := f.post(body, Sign(body, secret, now.Add(-11*time.Second))); rec.Code != http.StatusBadRequest {
		t.Fatalf("11 s old with a 10 s tolerance: status %d, want 400", rec.Code)
	}
	if rec := f.post(body, Sign(body, secret, now.Add(-9*time.Second))); rec.Code != http.StatusOK {
		t.Fatalf("9 s old with a 10 s tolerance: status %d, want 200", rec.Code)
	}
}

func TestOversizedBodyIs413AndReachesNothing(t *testing.T) {
	big := append(event("evt_big", "checkout.session.completed", "2023-10-16"), bytes.Repeat([]byte(" "), DefaultMaxBody)...)
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprintf("length declared %v", declared), func(t *testing.T) {
			f := newFixture(t, nil)
			req := httptest.NewRequest(http.MethodPost, "/api/webhooks/stripe", bytes.NewReader(big))
			req.Header.Set(SignatureHeader, Sign(big, secret, now))
			if !declared {
				req.ContentLength = -1 // chunked: only reading finds out
			}
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, req)
			if rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("status = %d, want 413", rec.Code)
			}
			errorBody(t, rec)
			if f.proc.calls() != 0 {
				t.Fatal("processor called for an oversized body")
			}
		})
	}
}

func TestMaxBodyIsConfigurable(t *testing.T) {
	body := event("evt_1", "checkout.session.completed", "2023-10-16")
	f := newFixture(t, func(o *Options) { o.MaxBody = int64(len(body) - 1) })
	if rec := f.post(body, Sign(body, secret, now)); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", rec.Code)
	}
	f = newFixture(t, func(o *Options) { o.MaxBody = int64(len(body)) })
	if rec := f.post(body, Sign(body, secret, now)); rec.Code != http.StatusOK {
		t.Fatalf("a body exactly at the cap: status = %d, want 200", rec.Code)
	}
}

func TestSignedButNotAnEventIs400(t *testing.T) {
	cases := map[string][]byte{
		"malformed JSON": []byte(`{"id": "evt_1", "type": `),
		"not an object":  []byte(`["evt_1"]`),
		"no id":          []byte(`{"object":"event","type":"checkout.session.completed","api_version":"2023-10-16"}`),
		"no type":        []byte(`{"id":"evt_1","object":"event","api_version":"2023-10-16"}`),
		// Found by FuzzStripeEvents: an event without data made the
		// processor dereference nil (a 500 on every delivery), and a NUL
		// that PostgreSQL refuses answered 500 for ever.
		"no data":            []byte(`{"id":"evt_1","object":"event","type":"checkout.session.completed","api_version":"2023-10-16"}`),
		"null data":          []byte(`{"id":"evt_1","object":"event","type":"charge.refunded","api_version":"2023-10-16","data":null}`),
		"data not an object": []byte(`{"id":"evt_1","object":"event","type":"charge.refunded","api_version":"2023-10-16","data":{"object":"cs_1"}}`),
		"NUL in the id":      []byte(`{"id":"evt_\u0000","object":"event","type":"charge.refunded","api_version":"2023-10-16","data":{"object":{}}}`),
		"NUL in the type":    []byte(`{"id":"evt_1","object":"event","type":"charge.\u0000","api_version":"2023-10-16","data":{"object":{}}}`),
		"NUL in the object":  []byte(`{"id":"evt_1","object":"event","type":"checkout.session.completed","api_version":"2023-10-16","data":{"object":{"id":"cs_\u0000"}}}`),
		"a space in the id":  []byte(`{"id":"evt 1","object":"event","type":"charge.refunded","api_version":"2023-10-16","data":{"object":{}}}`),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil)
			rec := f.post(body, Sign(body, secret, now))
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400", rec.Code)
			}
			if msg := errorBody(t, rec); msg != "payload is not a Stripe event" {
				t.Errorf("error = %q", msg)
			}
			if f.proc.calls() != 0 {
				t.Fatal("processor called for a payload that is not an event")
			}
		})
	}
}

func TestUnacceptedAPIVersionIs400AndLogged(t *testing.T) {
	for _, version := range []string{"2020-08-27", ""} {
		t.Run("version "+strconv.Quote(version), func(t *testing.T) {
			f := newFixture(t, nil)
			body := event("evt_old", "charge.refunded", version)
			rec := f.post(body, Sign(body, secret, now))
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400", rec.Code)
			}
			if msg := errorBody(t, rec); !strings.Contains(msg, "unsupported API version") {
				t.Errorf("error = %q", msg)
			}
			if f.proc.calls() != 0 {
				t.Fatal("processor called for an unaccepted API version")
			}
			line := f.onlyLogLine(t)
			if line["event_id"] != "evt_old" || line["type"] != "charge.refunded" || line["api_version"] != version ||
				!strings.Contains(fmt.Sprint(line["reason"]), "API version") {
				t.Errorf("log line %v should name the event, its type, its version and the reason", line)
			}
		})
	}
}

func TestAcceptedAPIVersionsAreConfigurable(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.AcceptedAPIVersions = []string{"2023-10-16", "2024-04-10"} })
	for _, v := range []string{"2023-10-16", "2024-04-10"} {
		body := event("evt_"+v, "checkout.session.completed", v)
		if rec := f.post(body, Sign(body, secret, now)); rec.Code != http.StatusOK {
			t.Fatalf("version %s listed as accepted: status = %d", v, rec.Code)
		}
	}
	body := event("evt_other", "checkout.session.completed", "2022-11-15")
	if rec := f.post(body, Sign(body, secret, now)); rec.Code != http.StatusBadRequest {
		t.Fatalf("unlisted version: status = %d, want 400", rec.Code)
	}
}

func TestDefaultAcceptedVersionIsTheOneStripeGoDecodes(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.AcceptedAPIVersions = nil })
	body := event("evt_1", "checkout.session.completed", stripe.APIVersion)
	if rec := f.post(body, Sign(body, secret, now)); rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200 for %s", rec.Code, stripe.APIVersion)
	}
}

func TestProcessedEventIs200WithTheOutcome(t *testing.T) {
	f := newFixture(t, nil)
	f.proc.outcome = "duplicate"
	body := event("evt_ok", "checkout.session.completed", "2023-10-16")
	rec := f.post(body, Sign(body, secret, now))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
	}
	var got struct {
		Received bool   `json:"received"`
		Outcome  string `json:"outcome"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || !got.Received || got.Outcome != "duplicate" {
		t.Fatalf("body %s (err %v), want received true and outcome duplicate", rec.Body, err)
	}
	if f.proc.calls() != 1 {
		t.Fatalf("processor called %d times", f.proc.calls())
	}
	ev := f.proc.events[0]
	if ev.ID != "evt_ok" || ev.Type != "checkout.session.completed" || ev.APIVersion != "2023-10-16" || ev.Data == nil {
		t.Errorf("processor got %+v", ev)
	}
	if !bytes.Equal(f.proc.payloads[0], body) {
		t.Error("processor must get the raw body that was signed")
	}
	line := f.onlyLogLine(t)
	if line["level"] != "INFO" || line["event_id"] != "evt_ok" || line["type"] != "checkout.session.completed" ||
		line["outcome"] != "duplicate" || line["livemode"] != false || line["status"] != float64(200) {
		t.Errorf("log line %v", line)
	}
}

func TestProcessorFailureIs500WithoutItsText(t *testing.T) {
	f := newFixture(t, nil)
	f.proc.outcome = "failed"
	f.proc.err = errors.New(`applying event: UNIQUE constraint failed: payments.stripe_session_id "cs_secret"`)
	body := event("evt_fail", "checkout.session.completed", "2023-10-16")
	rec := f.post(body, Sign(body, secret, now))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if msg := errorBody(t, rec); msg != "internal error" || strings.Contains(rec.Body.String(), "cs_secret") {
		t.Fatalf("body %s leaks or is not generic", rec.Body)
	}
	line := f.onlyLogLine(t)
	if line["level"] != "ERROR" || line["event_id"] != "evt_fail" || !strings.Contains(fmt.Sprint(line["error"]), "UNIQUE constraint") {
		t.Errorf("log line %v should carry the event id and the error", line)
	}
}

func TestTransientFailuresAre503(t *testing.T) {
	cases := map[string]error{
		"deadline":    fmt.Errorf("applying evt: %w", context.DeadlineExceeded),
		"canceled":    fmt.Errorf("applying evt: %w", context.Canceled),
		"unavailable": fmt.Errorf("applying evt: %w", apperr.New(apperr.Unavailable, "database busy")),
	}
	for name, procErr := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.proc.err = procErr
			body := event("evt_slow", "checkout.session.completed", "2023-10-16")
			rec := f.post(body, Sign(body, secret, now))
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("status = %d, want 503", rec.Code)
			}
			if strings.Contains(rec.Body.String(), "applying evt") {
				t.Fatalf("body %s leaks the error", rec.Body)
			}
		})
	}
}

func TestOnlyPostIsAllowed(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		f := newFixture(t, nil)
		req := httptest.NewRequest(method, "/api/webhooks/stripe", nil)
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != http.MethodPost {
			t.Fatalf("%s: status %d, Allow %q", method, rec.Code, rec.Header().Get("Allow"))
		}
		errorBody(t, rec)
		if f.proc.calls() != 0 {
			t.Fatalf("%s reached the processor", method)
		}
	}
}

func TestUnconfiguredEndpointIs503SoStripeRetries(t *testing.T) {
	body := event("evt_1", "checkout.session.completed", "2023-10-16")
	f := newFixture(t, func(o *Options) { o.Secrets = nil })
	if rec := f.post(body, Sign(body, secret, now)); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("no secrets: status = %d, want 503", rec.Code)
	}
	if f.proc.calls() != 0 {
		t.Fatal("processor called without a secret to verify against")
	}

	// The zero Handler has no logger of its own and logs to the default one.
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	t.Cleanup(func() { slog.SetDefault(prev) })
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/api/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set(SignatureHeader, Sign(body, secret, now))
	Handler{}.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("zero Handler: status = %d, want 503", rec.Code)
	}
}

func TestNewWithoutProcessorPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New without a Processor should panic")
		}
	}()
	New(Options{Secrets: []string{secret}})
}

func TestSignRoundTripsWithTheVerifier(t *testing.T) {
	body := event("evt_sign", "checkout.session.completed", "2023-10-16")
	header := Sign(body, secret, now)
	if err := verify(header, body, []string{secret}, DefaultTolerance, now); err != nil {
		t.Fatalf("verify(Sign(...)) = %v", err)
	}
	if err := verify(header, body, []string{otherSecret}, DefaultTolerance, now); !errors.Is(err, ErrSignatureMismatch) {
		t.Fatalf("verify with another secret = %v, want a mismatch", err)
	}
	// Stripe's own library agrees on both sides of the scheme.
	if err := stripewebhook.ValidatePayloadIgnoringTolerance(body, header, secret); err != nil {
		t.Fatalf("stripe-go refuses Sign's header: %v", err)
	}
	stripeHeader := fmt.Sprintf("t=%d,v1=%s", now.Unix(), hex.EncodeToString(stripewebhook.ComputeSignature(now, body, secret)))
	if stripeHeader != header {
		t.Fatalf("Sign = %q, stripe-go computes %q", header, stripeHeader)
	}
	signed := stripewebhook.GenerateTestSignedPayload(&stripewebhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: now})
	if err := verify(signed.Header, body, []string{secret}, DefaultTolerance, now); err != nil {
		t.Fatalf("verify refuses stripe-go's test header %q: %v", signed.Header, err)
	}
}
