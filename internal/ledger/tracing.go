package ledger

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/internal/apperr"
)

// The ledger's spans: one per operation ("ledger.spend", "ledger.grant", …,
// the operation's constant name) and one per database transaction
// ("ledger.transaction", with the attempts it took), so that a webhook's
// own transaction shows in its trace too. They carry the kind of operation
// and of actor and, on failure, the error code: never amounts, user ids,
// keys or reasons, which are the customer's business and stay in the
// database. The SQL statements are children of the transaction.
//
// Without a tracer provider (tracing off) nothing here allocates: the span
// is the no-op one and the context is returned as it came.

const tracerName = "github.com/tally-billing/tally/internal/ledger"

// WithTracerProvider traces the ledger's operations; nil leaves them
// untraced.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *Service) {
		if tp != nil {
			s.tracer = tp.Tracer(tracerName)
		}
	}
}

var noSpan = trace.SpanFromContext(context.Background())

func (s *Service) startOp(ctx context.Context, name string, actor ActorKind) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, noSpan
	}
	return s.tracer.Start(ctx, "ledger."+name, trace.WithAttributes(
		attribute.String("tally.ledger.operation", name),
		attribute.String("tally.actor.kind", string(actor)),
	))
}

func (s *Service) startTransaction(ctx context.Context) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, noSpan
	}
	return s.tracer.Start(ctx, "ledger.transaction")
}

func endTransaction(span trace.Span, attempts int, err error) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("tally.ledger.attempts", attempts))
	}
	endSpan(span, err)
}

// endSpan records err's code. A refusal (not enough credits, a bad
// argument) is the operation working as meant: only the codes that say
// something went wrong mark the span as an error.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		code := apperr.CodeOf(err)
		span.SetAttributes(attribute.String("tally.error.code", string(code)))
		if code == apperr.Internal || code == apperr.Unavailable || code == apperr.Conflict {
			span.SetStatus(codes.Error, string(code))
		}
	}
	span.End()
}

// withParent makes sc the parent of the spans started under ctx, for work
// that runs on behalf of a caller in a context of its own (a batch).
func withParent(ctx context.Context, sc trace.SpanContext) context.Context {
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, sc)
}
