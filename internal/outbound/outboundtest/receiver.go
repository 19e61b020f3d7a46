// Package outboundtest is a receiver of Tally's outbound events for
// tests: a real HTTP server that checks every request's signature with an
// implementation of the Standard Webhooks specification of its own (not
// the one Tally signs with), and answers as a test tells it to.
package outboundtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Delivery is one request the receiver got.
type Delivery struct {
	ID        string
	Timestamp int64
	Type      string
	Body      []byte
	Data      map[string]any
	// Signatures are the webhook-signature values, and VerifiedBy the
	// secrets (by position in the receiver's list) that verify them.
	Signatures []string
	VerifiedBy []int
	// Answer is the status the receiver gave (0: it held the request
	// open and gave none).
	Answer int
}

// Receiver records deliveries.
type Receiver struct {
	*httptest.Server
	t       testing.TB
	mu      sync.Mutex
	secrets []string
	got     []Delivery
	// answer decides the status of each request (nil: 200).
	answer func(d Delivery, attempt int) int
	tries  map[string]int
	// block holds requests open until the test ends; hangAll holds every
	// one, hangNext the next few.
	block    chan struct{}
	hangAll  bool
	hangNext int
}

// New starts a receiver verifying with secrets (more can be added).
func New(t testing.TB) *Receiver {
	r := &Receiver{t: t, tries: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

// Trust adds a secret signatures may verify with.
func (r *Receiver) Trust(secret string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = append(r.secrets, secret)
}

// AnswerWith sets how the receiver answers: f gets each delivery and how
// many times its id was seen (1 the first time).
func (r *Receiver) AnswerWith(f func(d Delivery, attempt int) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = f
}

// Hang makes every request wait until the test ends (a slow endpoint).
func (r *Receiver) Hang() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blocking()
	r.hangAll = true
}

// HangFirst holds the next request open, unanswered, until the test ends
// or its sender goes (a delivery in flight when its sender dies); the
// requests after it are answered as usual.
func (r *Receiver) HangFirst() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blocking()
	r.hangNext++
}

// blocking makes the channel held requests wait on; r.mu is held.
func (r *Receiver) blocking() {
	if r.block != nil {
		return
	}
	block := make(chan struct{})
	r.block = block
	r.t.Cleanup(func() { close(block) })
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	d := Delivery{ID: req.Header.Get("webhook-id"), Body: body, Signatures: strings.Fields(req.Header.Get("webhook-signature"))}
	d.Timestamp, _ = strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
	var envelope struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	_ = json.Unmarshal(body, &envelope)
	d.Type, d.Data = envelope.Type, envelope.Data
	r.mu.Lock()
	var block chan struct{}
	if r.hangAll || r.hangNext > 0 {
		block = r.block
		r.hangNext = max(r.hangNext-1, 0)
	}
	for i, s := range r.secrets {
		if Verify(s, d.ID, d.Timestamp, body, d.Signatures) {
			d.VerifiedBy = append(d.VerifiedBy, i)
		}
	}
	r.tries[d.ID]++
	d.Answer = http.StatusOK
	switch {
	case block != nil:
		d.Answer = 0
	case r.answer != nil:
		d.Answer = r.answer(d, r.tries[d.ID])
	}
	r.got = append(r.got, d)
	r.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-req.Context().Done():
		}
		return
	}
	w.WriteHeader(d.Answer)
	_, _ = io.WriteString(w, "answered "+strconv.Itoa(d.Answer))
}

// All is every request so far, in the order they came.
func (r *Receiver) All() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

// Accepted is the requests answered 2xx, in order.
func (r *Receiver) Accepted() []Delivery {
	var out []Delivery
	for _, d := range r.All() {
		if d.Answer >= 200 && d.Answer < 300 {
			out = append(out, d)
		}
	}
	return out
}

// WaitRequests waits until n requests arrived, answered or not, and
// returns them.
func (r *Receiver) WaitRequests(n int, within time.Duration) []Delivery {
	r.t.Helper()
	return r.wait(n, within, "arrived", r.All)
}

// WaitAccepted waits until n requests were accepted, and returns them.
func (r *Receiver) WaitAccepted(n int, within time.Duration) []Delivery {
	r.t.Helper()
	return r.wait(n, within, "accepted", r.Accepted)
}

func (r *Receiver) wait(n int, within time.Duration, what string, list func() []Delivery) []Delivery {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := list()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d requests %s at the receiver in %s, want %d: %+v", len(got), what, within, n, r.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Verify checks signatures as the Standard Webhooks specification says:
// base64 of HMAC-SHA256, keyed by the base64-decoded part of the secret
// after "whsec_", over "<id>.<timestamp>.<body>"; any one "v1," signature
// matching is enough.
func Verify(secret, id string, timestamp int64, body []byte, signatures []string) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range signatures {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}
