package graph

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestACancelledRequestIsNotAServerFault: a subscription stopped while its
// resolver was still reading answered INTERNAL and logged an error.
func TestACancelledRequestIsNotAServerFault(t *testing.T) {
	var logs bytes.Buffer
	p := errorPresenter{logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := p.present(ctx, fmt.Errorf("events: subscribing: %w", context.Canceled))
	if got.Extensions["code"] != "UNAVAILABLE" || got.Extensions["retryable"] != true || strings.Contains(got.Message, "events") {
		t.Fatalf("presented %+v", got)
	}
	if logs.Len() > 0 {
		t.Fatalf("logged at info or above: %s", logs.String())
	}
	// A cancellation the client did not ask for is still the server's.
	got = p.present(context.Background(), fmt.Errorf("wrapped: %w", context.Canceled))
	if got.Extensions["code"] != "INTERNAL" || !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("presented %+v, logged %s", got, logs.String())
	}
}
