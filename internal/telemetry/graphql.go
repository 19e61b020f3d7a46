package telemetry

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// maxOperationName bounds the operation name a span carries: the client
// chooses it, and backends index span names.
const maxOperationName = 64

// GraphQL is a gqlgen extension that makes a span per GraphQL response (one
// per query or mutation, one per event of a subscription), a child of the
// HTTP server's span, around the resolvers' work. It records the operation's
// type and name and the error codes of the response, not the document or
// its variables (which carry amounts, ids and reasons). Operations refused
// before they run (parse, validation, the limits) have no span of their own:
// the HTTP span and the response say what happened.
type GraphQL struct{ tracer trace.Tracer }

// NewGraphQL returns the extension over tp.
func NewGraphQL(tp trace.TracerProvider) GraphQL {
	return GraphQL{tracer: tp.Tracer("github.com/tally-billing/tally/graph")}
}

var (
	_ graphql.HandlerExtension    = GraphQL{}
	_ graphql.ResponseInterceptor = GraphQL{}
)

// ExtensionName implements graphql.HandlerExtension.
func (GraphQL) ExtensionName() string { return "OpenTelemetry" }

// Validate implements graphql.HandlerExtension.
func (GraphQL) Validate(graphql.ExecutableSchema) error { return nil }

// InterceptResponse implements graphql.ResponseInterceptor.
func (g GraphQL) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	oc := graphql.GetOperationContext(ctx)
	kind, name := "unknown", oc.OperationName
	if oc.Operation != nil {
		kind = string(oc.Operation.Operation)
		if name == "" {
			name = oc.Operation.Name
		}
	}
	if len(name) > maxOperationName {
		name = name[:maxOperationName]
	}
	spanName := kind
	if name != "" {
		spanName += " " + name
	}
	ctx, span := g.tracer.Start(ctx, spanName, trace.WithAttributes(
		attribute.String("graphql.operation.type", kind),
		attribute.String("graphql.operation.name", name),
	))
	defer span.End()
	resp := next(ctx)
	if resp == nil || len(resp.Errors) == 0 {
		return resp
	}
	codesSeen := make([]string, 0, len(resp.Errors))
	failed := false
	for _, e := range resp.Errors {
		code, _ := e.Extensions["code"].(string)
		if code == "" {
			code = "UNKNOWN"
		}
		if code == "INTERNAL" || code == "UNAVAILABLE" {
			failed = true
		}
		codesSeen = append(codesSeen, code)
	}
	span.SetAttributes(attribute.StringSlice("graphql.error.codes", codesSeen))
	if failed {
		span.SetStatus(codes.Error, "the operation failed")
	}
	return resp
}
