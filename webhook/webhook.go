// Package webhook is the REST endpoint Stripe posts events to. It is the
// transport only: body cap, signature check, API-version policy, dispatch to
// a Processor (internal/payments), and the status code that tells Stripe
// whether to retry.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/stripe/stripe-go/v76"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
)

// DefaultMaxBody caps a delivery's body. Stripe events embed whole objects
// but stay far below it.
const DefaultMaxBody = 1 << 20

// Processor decides on one verified Stripe event.
type Processor interface {
	// HandleEvent applies the event at most once. It returns the outcome
	// recorded ("applied", "duplicate", "ignored", "deferred", "failed") and a
	// nil error when Stripe should consider the delivery done (2xx), or an
	// error when the event could not be applied and Stripe must retry (5xx).
	HandleEvent(ctx context.Context, event *stripe.Event, payload []byte) (outcome string, err error)
}

// Options configure a Handler.
type Options struct {
	// Secrets are the endpoint's signing secrets (whsec_...). List the old
	// and the new one while a secret is rolled; a delivery signed with any of
	// them is accepted.
	Secrets []string
	// Tolerance is how far a signature's timestamp may be from now, in the
	// past or the future (default DefaultTolerance).
	Tolerance time.Duration
	// AcceptedAPIVersions are the event API versions processed (default: the
	// version stripe-go decodes, stripe.APIVersion).
	AcceptedAPIVersions []string
	// Processor applies verified events. Required.
	Processor Processor
	// Logger receives one line per delivery (default slog.Default()).
	Logger *slog.Logger
	// MaxBody caps the request body in bytes (default DefaultMaxBody).
	MaxBody int64
	// Now is the clock the signature timestamp is checked against (tests).
	Now func() time.Time
	// KnownEventTypes are the event types that metrics and spans name;
	// any other counts as OtherEventType, so that senders cannot grow the
	// number of series.
	KnownEventTypes []string
	// Metrics, when set, counts deliveries (see NewMetrics).
	Metrics *Metrics
	// TracerProvider, when set, traces each event's processing.
	TracerProvider trace.TracerProvider
}

// Handler answers Stripe's webhook deliveries. Build it with New. The zero
// Handler answers every delivery 503, so that an endpoint mounted before it
// is configured makes Stripe retry rather than lose events.
type Handler struct {
	secrets   []string
	tolerance time.Duration
	versions  map[string]bool
	processor Processor
	logger    *slog.Logger
	maxBody   int64
	now       func() time.Time
	known     map[string]bool
	metrics   *Metrics
	tracer    trace.Tracer // nil: tracing is off
}

// New returns a Handler. It panics without a Processor, which is a wiring
// mistake. Without secrets the handler answers 503: production may run
// without Stripe configured, and a 5xx keeps Stripe retrying until it is.
func New(opts Options) *Handler {
	if opts.Processor == nil {
		panic("webhook.New: Options.Processor is required")
	}
	h := &Handler{
		secrets:   append([]string(nil), opts.Secrets...),
		tolerance: opts.Tolerance,
		versions:  map[string]bool{},
		processor: opts.Processor,
		logger:    opts.Logger,
		maxBody:   opts.MaxBody,
		now:       opts.Now,
		known:     make(map[string]bool, len(opts.KnownEventTypes)),
		metrics:   opts.Metrics,
	}
	for _, t := range opts.KnownEventTypes {
		h.known[t] = true
	}
	if opts.TracerProvider != nil {
		h.tracer = opts.TracerProvider.Tracer(tracerName)
	}
	if h.tolerance <= 0 {
		h.tolerance = DefaultTolerance
	}
	versions := opts.AcceptedAPIVersions
	if len(versions) == 0 {
		versions = []string{stripe.APIVersion}
	}
	for _, v := range versions {
		h.versions[v] = true
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBody
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h
}

// ServeHTTP verifies, decodes and dispatches one delivery. Nothing reaches
// the Processor until the body is within the cap, the signature is valid
// and the event is in an accepted API version.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := delivery{h: h, w: w, r: r}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.metrics.reject(RejectedMethod)
		d.answer(http.StatusMethodNotAllowed, "method not allowed", slog.LevelWarn, slog.String("method", r.Method))
		return
	}
	if h.processor == nil || len(h.secrets) == 0 {
		h.metrics.reject(RejectedUnconfigured)
		d.answer(http.StatusServiceUnavailable, "webhook endpoint is not configured", slog.LevelError,
			slog.String("reason", "no processor or no signing secret configured"))
		return
	}
	body, ok := h.admit(&d)
	if !ok {
		return
	}
	h.dispatch(&d, body)
}

// admit reads and checks a delivery's body: within the cap, signed, a
// Stripe event in an accepted API version, which it sets as d.event. When
// the body is refused it answers, counts the rejection and returns false.
func (h Handler) admit(d *delivery) ([]byte, bool) {
	w, r := d.w, d.r
	body, err := h.readBody(w, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.metrics.reject(RejectedTooLarge)
			d.answer(http.StatusRequestEntityTooLarge, "request body too large", slog.LevelWarn, slog.Int64("limit", h.maxBody))
			return nil, false
		}
		h.metrics.reject(RejectedUnreadable)
		d.answer(http.StatusBadRequest, "could not read the request body", slog.LevelWarn, slog.String("error", err.Error()))
		return nil, false
	}

	if err := verify(r.Header.Get(SignatureHeader), body, h.secrets, h.tolerance, h.now()); err != nil {
		h.metrics.reject(RejectedSignature)
		d.answer(http.StatusBadRequest, "invalid signature: "+publicReason(err), slog.LevelWarn, slog.String("error", err.Error()))
		return nil, false
	}

	var event stripe.Event
	if err := json.Unmarshal(body, &event); err != nil {
		h.metrics.reject(RejectedMalformed)
		d.answer(http.StatusBadRequest, "payload is not a Stripe event", slog.LevelWarn, slog.String("error", err.Error()))
		return nil, false
	}
	if why := envelopeProblem(&event, body); why != "" {
		h.metrics.reject(RejectedMalformed)
		d.answer(http.StatusBadRequest, "payload is not a Stripe event", slog.LevelWarn, slog.String("error", why))
		return nil, false
	}
	d.event = &event

	// An event in another API version is refused with a 400 rather than
	// recorded as ignored. Stripe renders `data` in the endpoint's API version,
	// and decoding a shape we were not written for could apply a wrong
	// amount or miss a refund. A 2xx would make Stripe drop the event for
	// good; a non-2xx keeps it failing visibly in the Stripe dashboard and
	// retried for three days, time for an operator to review the version and
	// add it to STRIPE_WEBHOOK_API_VERSIONS (or pin the endpoint's version),
	// after which the event is redelivered or resent. 400, not 5xx: the
	// server is healthy, the event is what we cannot take yet.
	if !h.versions[event.APIVersion] {
		h.metrics.reject(RejectedAPIVersion)
		d.answer(http.StatusBadRequest, fmt.Sprintf("unsupported API version %q", event.APIVersion), slog.LevelWarn,
			slog.String("reason", "API version not in STRIPE_WEBHOOK_API_VERSIONS"))
		return nil, false
	}
	return body, true
}

// dispatch hands an admitted event to the Processor and answers with its
// outcome: 200 when it is handled, 503 when the database or the deadline
// failed, 500 otherwise.
func (h Handler) dispatch(d *delivery, body []byte) {
	r, event := d.r, d.event
	typ := h.typeLabel(string(event.Type))
	ctx, span := h.startEvent(r.Context(), event.ID, typ)
	outcome, err := h.processor.HandleEvent(ctx, event, body)
	d.outcome = outcome
	counted := outcome
	switch {
	case err == nil:
	case unavailable(r.Context(), err):
		counted = OutcomeUnavailable
	case outcome != "deferred":
		counted = OutcomeError
	}
	h.metrics.event(typ, counted)
	endEvent(span, counted)
	switch {
	case err == nil:
		d.reply(http.StatusOK, map[string]any{"received": true, "outcome": outcome}, slog.LevelInfo)
	case unavailable(r.Context(), err):
		// The event may or may not have been applied (a commit whose answer
		// was lost); Stripe delivers it again, and by then the database or
		// the deadline has likely recovered: a redelivery of an event that
		// was applied finds its record and changes nothing.
		d.answer(http.StatusServiceUnavailable, "temporarily unavailable, retry later", slog.LevelWarn, slog.String("error", err.Error()))
	default:
		// The error text may name tables, amounts or customers: it goes to
		// the log only.
		d.answer(http.StatusInternalServerError, "internal error", slog.LevelError, slog.String("error", err.Error()))
	}
}

// envelopeProblem says why a signed body cannot be a Stripe event, or ""
// if it can be: an id and a type of Stripe's shape (printable ASCII, short)
// and an object in data. Nothing Stripe sends has a NUL character; one in
// an id PostgreSQL refuses to even compare, so such an event answered 500
// on every delivery.
func envelopeProblem(ev *stripe.Event, body []byte) string {
	printable := func(s string) bool {
		return s != "" && len(s) <= 255 && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e })
	}
	switch {
	case !printable(ev.ID) || !printable(string(ev.Type)):
		return "event id or type missing or not printable ASCII"
	case ev.Data == nil || len(ev.Data.Raw) == 0 || ev.Data.Raw[0] != '{':
		return "event has no data object"
	case bytes.Contains(body, []byte(`\u0000`)):
		return "event holds a NUL character"
	}
	return ""
}

// readBody reads the whole body within the cap. A declared length over the
// cap is refused before reading anything.
func (h Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > h.maxBody {
		return nil, &http.MaxBytesError{Limit: h.maxBody}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		return nil, fmt.Errorf("reading webhook body: %w", err)
	}
	return body, nil
}

// unavailable says whether err is a transient condition (deadline,
// cancellation, an unavailable dependency, a database that could not be
// reached or a commit whose outcome is unknown) rather than a fault in the
// event or the code. A read that failed to reach the database is
// classified here, the one place every error of a delivery passes.
func unavailable(ctx context.Context, err error) bool {
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) ||
		ctx.Err() != nil ||
		apperr.CodeOf(database.Classify(err)) == apperr.Unavailable
}

// publicReason is the part of a signature failure that is shown to the
// caller: the kind of failure, without echoing the header back.
func publicReason(err error) string {
	for _, known := range []error{ErrNoSignature, ErrMalformedSignature, ErrSignatureMismatch, ErrTimestampOutside} {
		if errors.Is(err, known) {
			return known.Error()
		}
	}
	return "rejected"
}

// delivery carries what is known about one request so that every way out
// writes the answer and exactly one log line.
type delivery struct {
	h       Handler
	w       http.ResponseWriter
	r       *http.Request
	event   *stripe.Event
	outcome string
}

func (d *delivery) answer(status int, message string, level slog.Level, extra ...slog.Attr) {
	d.reply(status, map[string]string{"error": message}, level, extra...)
}

func (d *delivery) reply(status int, body any, level slog.Level, extra ...slog.Attr) {
	d.w.Header().Set("Content-Type", "application/json")
	d.w.WriteHeader(status)
	_ = json.NewEncoder(d.w).Encode(body)

	attrs := []slog.Attr{slog.Int("status", status)}
	if id := middleware.GetReqID(d.r.Context()); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	if e := d.event; e != nil {
		attrs = append(attrs,
			slog.String("event_id", e.ID),
			slog.String("type", string(e.Type)),
			slog.String("api_version", e.APIVersion),
			slog.Bool("livemode", e.Livemode),
		)
	}
	if d.outcome != "" {
		attrs = append(attrs, slog.String("outcome", d.outcome))
	}
	attrs = append(attrs, extra...)
	logger := d.h.logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.LogAttrs(d.r.Context(), level, "stripe webhook", attrs...)
}
