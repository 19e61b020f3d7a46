package server_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

// scrape reads /metrics and returns the series of the metric named name,
// by their labels, with their values.
func (a *api) scrape(name string) map[string]string {
	a.t.Helper()
	resp, err := http.Get(a.ts.URL + "/metrics")
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	series := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		labels, value, _ := strings.Cut(strings.TrimPrefix(line, name), " ")
		series[labels] = value
	}
	if err := sc.Err(); err != nil {
		a.t.Fatal(err)
	}
	return series
}

// TestWebhookOutcomeMetrics: every delivery is counted, verified events by
// type and outcome, refusals by reason; a flood of made-up event types
// counts under "other" and makes no new series.
func TestWebhookOutcomeMetrics(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		_, _, purchase := pendingPurchase(t, db)
		sign := func(body []byte) string { return webhook.Sign(body, config.DevWebhookSecret, time.Now()) }
		for _, want := range []string{"applied", "duplicate"} {
			if code, out := a.webhook(purchase, sign(purchase)); code != 200 || out["outcome"] != want {
				t.Fatalf("purchase: %d %v, want %s", code, out, want)
			}
		}
		// A refund of a charge Tally does not know (yet): deferred, and
		// answered 5xx so that Stripe delivers it again.
		if code, _ := a.stripeEvent("evt_unknown_charge", "charge.refunded", false, map[string]any{
			"id": "ch_nobody", "object": "charge", "amount": 900, "amount_refunded": 900,
			"currency": "usd", "payment_intent": "pi_nobody",
		}); code < 500 {
			t.Fatalf("refund of an unknown charge: %d", code)
		}
		for i := range 200 {
			if code, outcome := a.stripeEvent(fmt.Sprintf("evt_flood_%d", i), fmt.Sprintf("made.up.type_%d", i), false,
				map[string]any{"id": "obj", "object": "thing"}); code != 200 || outcome != "ignored" {
				t.Fatalf("made-up event type: %d %s", code, outcome)
			}
		}
		if code, _ := a.webhook(purchase, webhook.Sign(purchase, "whsec_wrong", time.Now())); code != 400 {
			t.Fatalf("bad signature: %d", code)
		}
		if code, _ := a.webhook([]byte("{not json"), sign([]byte("{not json"))); code != 400 {
			t.Fatalf("malformed: %d", code)
		}

		events := a.scrape("tally_webhook_events_total")
		for labels, want := range map[string]string{
			`{outcome="applied",type="checkout.session.completed"}`:   "1",
			`{outcome="duplicate",type="checkout.session.completed"}`: "1",
			`{outcome="ignored",type="other"}`:                        "200",
		} {
			if events[labels] != want {
				t.Errorf("tally_webhook_events_total%s = %q, want %s; all: %v", labels, events[labels], want, events)
			}
		}
		if events[`{outcome="deferred",type="charge.refunded"}`] != "1" || len(events) != 4 {
			t.Errorf("series: %v", events)
		}
		rejected := a.scrape("tally_webhook_rejected_total")
		if rejected[`{reason="signature"}`] != "1" || rejected[`{reason="malformed"}`] != "1" || len(rejected) != 2 {
			t.Errorf("tally_webhook_rejected_total: %v", rejected)
		}
	})
}
