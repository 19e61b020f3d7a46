package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/ent"
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
		Short: "Walk a purchase through a running Tally without Stripe (development)",
		Long: `Writes what a Stripe Checkout would and posts the events Stripe would send,
signed with the webhook secret, to a running tally serve (same DATABASE_URL).`,
	}
	cmd.PersistentFlags().StringVar(&server, "server", "http://127.0.0.1:8080", "the running server")
	addSettingFlags(cmd.PersistentFlags(), "database-url")

	var externalUser, packageID string
	purchase := &cobra.Command{
		Use:   "purchase",
		Short: "Buy a credit pack: a pending payment, then a paid checkout.session.completed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if externalUser == "" || packageID == "" {
				return usageError{errors.New("--user and --package are required")}
			}
			return withSimulation(cmd, server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
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

	var paymentID string
	var amount int64
	refund := &cobra.Command{
		Use:   "refund",
		Short: "Refund a simulated payment, to a cumulative amount in minor units (default: all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if paymentID == "" {
				return usageError{errors.New("--payment is required")}
			}
			return withSimulation(cmd, server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
				p, err := client.Payment.Get(ctx, paymentID)
				if err != nil {
					return nil, nil, fmt.Errorf("reading payment %s: %w", paymentID, err)
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
	refund.Flags().Int64Var(&amount, "amount", 0, "cumulative amount refunded, minor units")

	var outcome string
	dispute := &cobra.Command{
		Use:   "dispute",
		Short: "Open a dispute on a simulated payment, or close it with --outcome won|lost",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if paymentID == "" {
				return usageError{errors.New("--payment is required")}
			}
			if outcome != "" && outcome != "won" && outcome != "lost" {
				return usageError{fmt.Errorf("--outcome is won or lost, not %q", outcome)}
			}
			return withSimulation(cmd, server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
				p, err := client.Payment.Get(ctx, paymentID)
				if err != nil {
					return nil, nil, fmt.Errorf("reading payment %s: %w", paymentID, err)
				}
				body, err := payments.SimulatedDispute(p, outcome)
				return p, body, err
			})
		},
	}
	dispute.Flags().StringVar(&paymentID, "payment", "", "the payment's id")
	dispute.Flags().StringVar(&outcome, "outcome", "", "close the dispute: won or lost (default: open it)")

	cmd.AddCommand(purchase, refund, dispute)
	return cmd
}

// withSimulation prepares an event with the database and posts it, signed,
// to the server's webhook.
func withSimulation(cmd *cobra.Command, server string,
	prepare func(context.Context, *ent.Client) (*ent.Payment, []byte, error),
) error {
	cfg, err := loadConfig(cmd.Flags())
	if err != nil {
		return err
	}
	if cfg.Env == config.Production {
		return errors.New("simulate is for development; it refuses TALLY_ENV=production")
	}
	ctx := cmd.Context()
	db, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	p, body, err := prepare(ctx, db.Ent)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+"/api/webhooks/stripe", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("--server %q: %w", server, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", webhook.Sign(body, cfg.StripeWebhookSecrets[0], time.Now()))
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("posting to %s (is tally serve running?): %w", server, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(cmd.OutOrStdout(), "payment %s: webhook answered %d %s\n", p.ID, resp.StatusCode, bytes.TrimSpace(answer))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("the webhook answered %d", resp.StatusCode)
	}
	return nil
}
