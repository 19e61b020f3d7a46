package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/webhook"
)

// newSimulateCommand posts signed Stripe events to a running server, for
// trying purchases locally without Stripe.
func newSimulateCommand() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Walk a purchase, a recharge or a subscription through a running Tally without Stripe (development)",
		Long: `Writes what a Stripe Checkout would and posts the events Stripe would send,
signed with the webhook secret, to a running tally serve (same DATABASE_URL).
The server is --server, else $TALLY_ADDR, else 127.0.0.1:8080, as for serve.
Exits 0 only when the webhook applied the event (or had already); a command
that posts several stops at the first one not applied.
simulate card only writes to the database (a saved card); it posts nothing.`,
	}
	cmd.PersistentFlags().StringVar(&server, "server", "", "the running server, http://HOST:PORT or HOST:PORT (default: $TALLY_ADDR, else 127.0.0.1:8080)")
	addSettingFlags(cmd.PersistentFlags(), "database-url")

	cmd.AddCommand(newSimulatePurchase(&server), newSimulateRefund(&server), newSimulateDispute(&server),
		newSimulateCard(), newSimulateRecharge(&server),
		newSimulateSubscribe(&server), newSimulateRenew(&server), newSimulateFailRenewal(&server), newSimulateCancel(&server))
	return cmd
}

// The subcommands take the --server flag as a pointer: it is parsed after
// they are built, and read when one runs.
func newSimulatePurchase(server *string) *cobra.Command {
	var externalUser, packageID string
	purchase := &cobra.Command{
		Use:   "purchase",
		Short: "Buy a credit pack: a pending payment, then a paid checkout.session.completed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if externalUser == "" || packageID == "" {
				return usageError{errors.New("--user and --package are required")}
			}
			// The rule a token's sub follows, so the buyer can be signed in.
			if err := auth.CheckExternalID("--user", externalUser); err != nil {
				return usageError{err}
			}
			return withSimulation(cmd, *server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
				p, err := payments.SimulatedPayment(ctx, client, externalUser, packageID)
				if err != nil {
					return nil, nil, err
				}
				body, err := payments.SimulatedCheckoutCompleted(p)
				return p, body, err
			})
		},
	}
	purchase.Flags().StringVar(&externalUser, "user", "", "the buyer's external id (the sub of their tokens)")
	purchase.Flags().StringVar(&packageID, "package", "", "the credit pack's id (see the creditPackages query)")
	return purchase
}

func newSimulateRefund(server *string) *cobra.Command {
	var paymentID string
	var amount int64
	refund := &cobra.Command{
		Use:   "refund",
		Short: "Refund a simulated payment, to a cumulative amount in minor units (default: all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPaymentID(paymentID); err != nil {
				return err
			}
			if cmd.Flags().Changed("amount") && amount < 1 {
				return usageError{fmt.Errorf("--amount must be at least 1 (minor units), not %d", amount)}
			}
			return withSimulation(cmd, *server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
				p, err := simulatedPaymentByID(ctx, client, paymentID)
				if err != nil {
					return nil, nil, err
				}
				total := amount
				if total == 0 {
					total = p.Amount
				}
				body, err := payments.SimulatedRefund(p, total)
				return p, body, err
			})
		},
	}
	refund.Flags().StringVar(&paymentID, "payment", "", "the payment's id")
	refund.Flags().Int64Var(&amount, "amount", 0, "cumulative amount refunded, minor units (default: the whole payment)")
	return refund
}

func newSimulateDispute(server *string) *cobra.Command {
	var paymentID, outcome string
	dispute := &cobra.Command{
		Use:   "dispute",
		Short: "Open a dispute on a simulated payment, or close it with --outcome won|lost",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkPaymentID(paymentID); err != nil {
				return err
			}
			if outcome != "" && outcome != "won" && outcome != "lost" {
				return usageError{fmt.Errorf("--outcome is won or lost, not %q", outcome)}
			}
			return withSimulation(cmd, *server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
				p, err := simulatedPaymentByID(ctx, client, paymentID)
				if err != nil {
					return nil, nil, err
				}
				body, err := payments.SimulatedDispute(p, outcome)
				return p, body, err
			})
		},
	}
	dispute.Flags().StringVar(&paymentID, "payment", "", "the payment's id")
	dispute.Flags().StringVar(&outcome, "outcome", "", "close the dispute: won or lost (default: open it)")
	return dispute
}

// maxPaymentIDLen is the longest id Tally gives a payment (pay_ and a
// ULID are 30 bytes; the column holds 40).
const maxPaymentIDLen = 40

// checkPaymentID refuses, before the database sees it, an id no payment
// can have: PostgreSQL refuses a NUL byte with an error of its own.
func checkPaymentID(id string) error {
	switch {
	case id == "":
		return usageError{errors.New("--payment is required (simulate purchase prints the id)")}
	case len(id) > maxPaymentIDLen || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return usageError{fmt.Errorf("--payment %.50q is not a payment id such as pay_01…", id)}
	}
	return nil
}

func simulatedPaymentByID(ctx context.Context, client *ent.Client, id string) (*ent.Payment, error) {
	p, err := client.Payment.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, fmt.Errorf("--payment: no payment %q in this database (simulate purchase prints the id)", id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading payment %q: %w", id, err)
	}
	return p, nil
}

// withSimulation prepares an event with the database and posts it, signed,
// to the server's webhook. It succeeds only when the event was applied
// (now or before): a webhook that answered 200 may still have refused it.
func withSimulation(cmd *cobra.Command, server string,
	prepare func(context.Context, *ent.Client) (*ent.Payment, []byte, error),
) error {
	return simulateEvents(cmd, server, false, func(ctx context.Context, client *ent.Client) (string, [][]byte, error) {
		p, body, err := prepare(ctx, client)
		if err != nil {
			return "", nil, err
		}
		return p.ID, [][]byte{body}, nil
	})
}

// simulateEvents prepares events with the database and posts them, signed,
// in order, to the server's webhook, printing a line for each (with its
// type when typed), and stops at the first one not applied.
func simulateEvents(cmd *cobra.Command, server string, typed bool,
	prepare func(context.Context, *ent.Client) (id string, bodies [][]byte, err error),
) error {
	cfg, err := simulationConfig(cmd)
	if err != nil {
		return err
	}
	base, err := serverBase(server, cfg.Addr)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	db, err := openCurrent(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	id, bodies, err := prepare(ctx, db.Ent)
	if err != nil {
		return err
	}
	for _, body := range bodies {
		label := id
		if typed {
			label += " " + eventType(body)
		}
		if err := postEvent(cmd, db.Ent, base+"/api/webhooks/stripe", cfg.StripeWebhookSecrets[0], label, body); err != nil {
			return err
		}
	}
	return nil
}

// postEvent posts one signed event and says whether it was applied (now or
// before).
func postEvent(cmd *cobra.Command, client *ent.Client, url, secret, label string, body []byte) error {
	ctx := cmd.Context()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("posting to %s: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", webhook.Sign(body, secret, time.Now()))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("posting to %s (is tally serve running there? set --server or TALLY_ADDR): %w", url, err)
	}
	defer resp.Body.Close()
	var answer struct {
		Outcome string `json:"outcome"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = json.Unmarshal(raw, &answer)
	outcome := answer.Outcome
	if outcome == "" {
		outcome = "none"
	}
	// The id first, alone, so that scripts can take it with cut -d' ' -f1.
	fmt.Fprintf(cmd.OutOrStdout(), "%s outcome %s (webhook answered %d)\n", label, outcome, resp.StatusCode)
	switch {
	case resp.StatusCode >= 300:
		return fmt.Errorf("the webhook at %s answered %d: %s", url, resp.StatusCode, oneLine(raw))
	case outcome != payments.OutcomeApplied && outcome != payments.OutcomeDuplicate:
		return fmt.Errorf("the event was not applied (outcome %s)%s", outcome, eventReason(ctx, client, body))
	}
	return nil
}

// serverBase is the URL of the server to post to: --server, else the
// address serve listens on (TALLY_ADDR or its default).
func serverBase(flag, addr string) (string, error) {
	if flag == "" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "0" {
			return "", fmt.Errorf("TALLY_ADDR %q names no port a server listens on; pass --server", addr)
		}
		// serve's wildcard addresses are reached on the loopback.
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		return "http://" + net.JoinHostPort(host, port), nil
	}
	raw := flag
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := neturl.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return "", usageError{fmt.Errorf("--server %q is not a server address such as http://127.0.0.1:8080 or 127.0.0.1:8080", flag)}
	}
	return u.Scheme + "://" + u.Host, nil
}

// eventType is the type of an event the simulation made.
func eventType(body []byte) string {
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &ev)
	return ev.Type
}

// eventReason is why the server did not apply the event, as it recorded it.
func eventReason(ctx context.Context, client *ent.Client, body []byte) string {
	var ev struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &ev) != nil {
		return ""
	}
	rec, err := client.ProcessedEvent.Query().Where(processedevent.StripeEventID(ev.ID)).Only(ctx)
	if err != nil || rec.Error == "" {
		return ""
	}
	return ": " + oneLine([]byte(rec.Error))
}

func oneLine(b []byte) string {
	return strings.Join(strings.Fields(string(b)), " ")
}

// simulationConfig loads the configuration and refuses production.
func simulationConfig(cmd *cobra.Command) (config.Config, error) {
	cfg, err := loadConfig(cmd.Flags())
	if err == nil && cfg.Env == config.Production {
		err = errors.New("simulate is for development; it refuses TALLY_ENV=production")
	}
	return cfg, err
}
