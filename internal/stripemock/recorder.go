package stripemock

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Request is one request the code under test sent to Stripe.
type Request struct {
	Method, Path, IdempotencyKey string
	Form                         url.Values
}

// Recorder sits between the code under test and stripe-mock. It records
// what is sent, honours idempotency keys as Stripe does (stripe-mock does
// not: the same key with the same parameters replays the first answer,
// with other parameters it is an idempotency_error), and can answer some
// requests itself (AnswerWith: a failure, or an object stripe-mock cannot give) or change stripe-mock's fixture answers
// (Rewrite) to play Stripe's outcomes: a declined card, an intent that
// succeeded. Requests it answers through stripe-mock are checked against
// Stripe's OpenAPI description there.
type Recorder struct {
	t   testing.TB
	srv *httptest.Server

	mu      sync.Mutex
	reqs    []Request
	fault   func(Request) (status int, body string)
	rewrite func(Request, map[string]any)
	keys    map[string]*replay
	// hold and released are Hold's.
	hold     func(Request) bool
	released chan struct{}
}

type replay struct {
	mu     sync.Mutex
	form   url.Values
	done   bool
	status int
	header http.Header
	body   []byte
}

// NewRecorder starts a recorder in front of this test binary's
// stripe-mock; it stops with the test.
func NewRecorder(t testing.TB) *Recorder {
	target, err := url.Parse(Start(t))
	if err != nil {
		t.Fatal(err)
	}
	f := &Recorder{t: t, keys: map[string]*replay{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		form, _ := url.ParseQuery(string(body))
		if r.Method == http.MethodGet {
			form = r.URL.Query()
		}
		req := Request{Method: r.Method, Path: r.URL.Path, IdempotencyKey: r.Header.Get("Idempotency-Key"), Form: form}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		fault := f.fault
		f.mu.Unlock()
		if fault != nil {
			if status, body := fault(req); status != 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, body)
				return
			}
		}
		forward := func(w http.ResponseWriter) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			rec := httptest.NewRecorder()
			proxy.ServeHTTP(rec, r)
			out := f.rewritten(req, rec.Code, rec.Body.Bytes())
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(out)))
			w.WriteHeader(rec.Code)
			_, _ = w.Write(out)
		}
		if r.Method != http.MethodPost || req.IdempotencyKey == "" {
			forward(w)
			return
		}
		f.mu.Lock()
		ans, ok := f.keys[req.IdempotencyKey]
		if !ok {
			ans = &replay{form: form}
			f.keys[req.IdempotencyKey] = ans
		}
		f.mu.Unlock()
		ans.mu.Lock() // a concurrent request with the key waits for the first
		defer ans.mu.Unlock()
		if !reflect.DeepEqual(ans.form, form) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}}`)
			return
		}
		if !ans.done {
			rec := httptest.NewRecorder()
			forward(rec)
			ans.done, ans.status, ans.header, ans.body = true, rec.Code, rec.Header(), rec.Body.Bytes()
			f.held(req, r.Context().Done())
		}
		for k, v := range ans.header {
			w.Header()[k] = v
		}
		w.WriteHeader(ans.status)
		_, _ = w.Write(ans.body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// URL is the recorder's base URL, to use as Stripe's API base.
func (f *Recorder) URL() string { return f.srv.URL }

// AnswerWith makes Stripe answer requests for which answer returns a status
// with that status and body, without asking stripe-mock.
func (f *Recorder) AnswerWith(answer func(Request) (int, string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = answer
}

// Rewrite changes stripe-mock's successful JSON answers before they are
// returned (and replayed for their idempotency key): change edits the
// decoded object in place.
func (f *Recorder) Rewrite(change func(Request, map[string]any)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rewrite = change
}

func (f *Recorder) rewritten(req Request, status int, body []byte) []byte {
	f.mu.Lock()
	change := f.rewrite
	f.mu.Unlock()
	if change == nil || status != http.StatusOK {
		return body
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		return body
	}
	change(req, obj)
	out, err := json.Marshal(obj)
	if err != nil {
		f.t.Errorf("stripemock: encoding a rewritten answer: %v", err)
		return body
	}
	return out
}

// Requests returns what was sent with method to path (every method or
// path if empty).
func (f *Recorder) Requests(method, path string) []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Request
	for _, r := range f.reqs {
		if (method == "" || r.Method == method) && (path == "" || r.Path == path) {
			out = append(out, r)
		}
	}
	return out
}

// IntentsAnswer makes the PaymentIntents created through the recorder come
// back with status and with what was asked of them (amount, currency,
// customer, metadata), as Stripe's would: stripe-mock's fixture says
// requires_payment_method for a fixed amount whatever was sent.
func (f *Recorder) IntentsAnswer(status string) {
	f.Rewrite(func(r Request, obj map[string]any) {
		if r.Method != http.MethodPost || r.Path != "/v1/payment_intents" {
			return
		}
		amount, _ := strconv.ParseInt(r.Form.Get("amount"), 10, 64)
		obj["status"] = status
		obj["amount"] = amount
		obj["currency"] = r.Form.Get("currency")
		obj["customer"] = r.Form.Get("customer")
		metadata := map[string]any{}
		for k, v := range r.Form {
			if name, ok := strings.CutPrefix(k, "metadata["); ok && len(v) > 0 {
				metadata[strings.TrimSuffix(name, "]")] = v[0]
			}
		}
		obj["metadata"] = metadata
		obj["latest_charge"] = "ch_" + obj["id"].(string)
		obj["client_secret"] = obj["id"].(string) + "_secret_sim"
	})
}

// Hold makes the answers to requests that match wait, once Stripe's side
// of them is done (answered by stripe-mock and kept for their idempotency
// key), until Release or until the caller goes away: a process killed
// while Stripe has acted but before it heard the answer.
func (f *Recorder) Hold(match func(Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold, f.released = match, make(chan struct{})
}

// Release lets held answers go.
func (f *Recorder) Release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.released != nil {
		close(f.released)
		f.hold, f.released = nil, nil
	}
}

// held waits, for a request that Hold matches, until Release or done.
func (f *Recorder) held(req Request, done <-chan struct{}) {
	f.mu.Lock()
	match, released := f.hold, f.released
	f.mu.Unlock()
	if match == nil || !match(req) {
		return
	}
	select {
	case <-released:
	case <-done:
	}
}
