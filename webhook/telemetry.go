package webhook

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// OtherEventType is the type label of every event type Tally does not
// handle: the label's values stay a fixed, small set whatever is sent.
const OtherEventType = "other"

// Outcomes of a delivery beside the processor's own ("applied",
// "duplicate", "ignored", "deferred", "failed"): the event could not be
// decided because a dependency was unavailable (503), or because of a bug
// (500).
const (
	OutcomeUnavailable = "unavailable"
	OutcomeError       = "error"
)

// Reasons a delivery is refused before its event is processed.
const (
	RejectedMethod       = "method"
	RejectedUnconfigured = "unconfigured"
	RejectedTooLarge     = "too_large"
	RejectedUnreadable   = "unreadable"
	RejectedSignature    = "signature"
	RejectedMalformed    = "malformed"
	RejectedAPIVersion   = "api_version"
)

// Metrics count deliveries: events by type and outcome, and refusals by
// reason. Both label sets are bounded: types Tally does not handle count as
// OtherEventType, and outcomes and reasons are the constants above.
type Metrics struct {
	events   *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// NewMetrics registers the webhook's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_webhook_events_total",
			Help: "Verified Stripe events by type (\"other\" for types Tally does not handle) and outcome (applied, duplicate, ignored, deferred, failed, unavailable, error).",
		}, []string{"type", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_webhook_rejected_total",
			Help: "Stripe webhook deliveries refused before processing, by reason (signature, api_version, malformed, too_large, unreadable, unconfigured, method).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.events, m.rejected)
	return m
}

// event counts an event; typ is already a label (typeLabel).
func (m *Metrics) event(typ, outcome string) {
	if m != nil {
		m.events.WithLabelValues(typ, outcome).Inc()
	}
}

func (m *Metrics) reject(reason string) {
	if m != nil {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

const tracerName = "github.com/tally-billing/tally/webhook"

// startEvent starts the span of an event's processing, below the HTTP
// server's span, when tracing is on. The event's id and type are Stripe's
// (they name no customer; typ is a typeLabel); the payload is not recorded.
func (h Handler) startEvent(ctx context.Context, id, typ string) (context.Context, trace.Span) {
	if h.tracer == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return h.tracer.Start(ctx, "stripe.event "+typ, trace.WithAttributes(
		attribute.String("stripe.event.id", id),
		attribute.String("stripe.event.type", typ),
	))
}

// typeLabel is typ when Tally handles it, OtherEventType otherwise.
func (h Handler) typeLabel(typ string) string {
	if h.known[typ] {
		return typ
	}
	return OtherEventType
}

func endEvent(span trace.Span, outcome string) {
	if span.IsRecording() {
		span.SetAttributes(attribute.String("tally.webhook.outcome", outcome))
		if outcome == OutcomeUnavailable || outcome == OutcomeError {
			span.SetStatus(codes.Error, outcome)
		}
	}
	span.End()
}
