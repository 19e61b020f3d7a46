// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables. Without an OTLP endpoint nothing is set up at all:
// the other packages then receive no tracer provider and add no
// instrumentation, so tracing that is off costs nothing per request.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// ServiceName is the service.name spans carry unless OTEL_SERVICE_NAME (or
// OTEL_RESOURCE_ATTRIBUTES) names another.
const ServiceName = "tally"

// Tracing is the process's tracing: a tracer provider when an OTLP endpoint
// is configured, nothing otherwise.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// Enabled says whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// Provider is the tracer provider to instrument with, or nil when tracing is
// off (callers then add no instrumentation).
func (t *Tracing) Provider() trace.TracerProvider {
	if !t.Enabled() {
		return nil
	}
	return t.provider
}

// Shutdown flushes the spans not yet exported and stops the exporter. It
// does nothing when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("flushing traces: %w", err)
	}
	return nil
}

// LogErrorsTo sends the SDK's own errors (an export that failed) to logger,
// as one structured line each, instead of the standard logger's plain text.
// OpenTelemetry reports them through a process-wide handler; it is set only
// when tracing is on.
func (t *Tracing) LogErrorsTo(logger *slog.Logger) {
	if !t.Enabled() {
		return
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("tracing", "error", err.Error())
	}))
}

// Propagator reads and writes the W3C trace context (traceparent), so that
// a trace begun by a gateway or a frontend continues in Tally.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Setup configures tracing from the environment (getenv is os.Getenv
// outside tests). Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and OTEL_SDK_DISABLED is not
// "true" nor OTEL_TRACES_EXPORTER "none". The exporter speaks OTLP over
// HTTP (protobuf) and reads the rest of its settings (headers, timeout,
// compression, certificates) from the standard variables itself; the SDK
// reads the sampler (OTEL_TRACES_SAMPLER) and the batching (OTEL_BSP_*).
func Setup(ctx context.Context, getenv func(string) string) (*Tracing, error) {
	if !enabled(getenv) {
		return &Tracing{}, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(name)); p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("%s=%q: only http/protobuf is supported", name, p)
		}
	}
	endpoint, err := tracesURL(getenv)
	if err != nil {
		return nil, err
	}
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// Later sources win: the default name, then OTEL_RESOURCE_ATTRIBUTES
	// and OTEL_SERVICE_NAME.
	detectors := []resource.Option{
		resource.WithAttributes(semconv.ServiceName(ServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	}
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		detectors = append(detectors, resource.WithAttributes(semconv.ServiceName(name)))
	}
	res, err := resource.New(ctx, detectors...)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exporter.Shutdown(ctx)
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return &Tracing{provider: sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithResource(res),
	)}, nil
}

// tracesURL is where spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is,
// or OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended, as the
// specification says. They are read here, through getenv, rather than by
// the exporter from the process's environment, so that what Setup was
// given decides (and tests need not change the environment).
func tracesURL(getenv func(string) string) (string, error) {
	name, raw := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	if raw == "" {
		name, raw = "OTEL_EXPORTER_OTLP_ENDPOINT", strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s=%q: not an http:// or https:// URL", name, raw)
	}
	if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
		u = u.JoinPath("v1", "traces")
	}
	return u.String(), nil
}

func enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none") {
		return false
	}
	return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) != "" ||
		strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) != ""
}

// NewForTest wraps a tracer provider the caller made (an in-memory exporter
// in tests).
func NewForTest(p *sdktrace.TracerProvider) *Tracing { return &Tracing{provider: p} }
