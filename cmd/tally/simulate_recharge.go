package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/payments"
)

// checkSimulatedUser refuses, before the database sees it, a --user no
// token's sub could be, so that the user can be signed in.
func checkSimulatedUser(externalUser string) error {
	if externalUser == "" {
		return usageError{errors.New("--user is required")}
	}
	if err := auth.CheckExternalID("--user", externalUser); err != nil {
		return usageError{err}
	}
	return nil
}

// newSimulateCard saves a card without Stripe: what a Checkout with
// saveCard (or createCardSetupSession) leaves once its events arrive.
// Nothing is posted; the server reads the card from the database.
func newSimulateCard() *cobra.Command {
	var externalUser string
	card := &cobra.Command{
		Use:   "card",
		Short: "Save a test card (Visa 4242) for the user's auto-recharge, as a Checkout with saveCard would",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSimulatedUser(externalUser); err != nil {
				return err
			}
			cfg, err := simulationConfig(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			db, err := openCurrent(ctx, cfg)
			if err != nil {
				return err
			}
			defer db.Close()
			svc, err := paymentsService(cfg, db)
			if err != nil {
				return err
			}
			u, err := payments.SimulatedUser(ctx, db.Ent, externalUser)
			if err != nil {
				return err
			}
			c := payments.SimulatedCard(u.ID, time.Now())
			if err := svc.SaveCard(ctx, u.ID, c); err != nil {
				return fmt.Errorf("saving the card of %s: %w", externalUser, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s card saved: %s %s, expires %02d/%d (customer %s, payment method %s)\n",
				u.ID, c.Brand, c.Last4, c.ExpMonth, c.ExpYear, c.CustomerID, c.PaymentMethodID)
			return nil
		},
	}
	card.Flags().StringVar(&externalUser, "user", "", "the card owner's external id (the sub of their tokens); created if new")
	return card
}

// newSimulateRecharge ends the user's recharge in flight as Stripe would
// tell it: the recharge job, without a Stripe key, leaves it waiting for
// these events.
func newSimulateRecharge(server *string) *cobra.Command {
	var externalUser, outcome string
	recharge := &cobra.Command{
		Use:   "recharge",
		Short: "End the user's recharge in flight: payment_intent.succeeded, or payment_failed (declined, authentication_required)",
		Long: `Posts the payment_intent event of the user's recharge in flight (PENDING, or
AWAITING_PAYMENT while the customer is asked to authenticate):
  succeeded                payment_intent.succeeded: the pack is granted, auto-recharge ACTIVE
                           (also completes a recharge that waits for authentication)
  declined                 payment_intent.payment_failed, card_declined: FAILING, DISABLED after 3 in a row
  authentication_required  payment_intent.payment_failed, authentication_required: ACTION_REQUIRED`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSimulatedUser(externalUser); err != nil {
				return err
			}
			if !slices.Contains(payments.RechargeOutcomes, payments.RechargeOutcome(outcome)) {
				return usageError{fmt.Errorf("--outcome is succeeded, declined or authentication_required, not %q", outcome)}
			}
			return withSimulation(cmd, *server, func(ctx context.Context, client *ent.Client) (*ent.Payment, []byte, error) {
				u, err := client.User.Query().Where(user.ExternalID(externalUser)).Only(ctx)
				if ent.IsNotFound(err) {
					return nil, nil, fmt.Errorf("--user: no user %q in this database (simulate card makes one)", externalUser)
				}
				if err != nil {
					return nil, nil, fmt.Errorf("reading user %q: %w", externalUser, err)
				}
				p, a, err := payments.SimulatedRechargeOf(ctx, client, u.ID)
				if err != nil {
					return nil, nil, err
				}
				body, err := payments.SimulatedRechargeEvent(p, a, payments.RechargeOutcome(outcome))
				return p, body, err
			})
		},
	}
	recharge.Flags().StringVar(&externalUser, "user", "", "the user's external id (the sub of their tokens)")
	recharge.Flags().StringVar(&outcome, "outcome", string(payments.RechargeSucceeded), "succeeded, declined or authentication_required")
	return recharge
}
