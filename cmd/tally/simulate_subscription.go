package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/payments"
)

// The subscription simulations print one line per event posted: the
// subscription's id, the event's type and its outcome.

func newSimulateSubscribe(server *string) *cobra.Command {
	var externalUser, planID string
	subscribe := &cobra.Command{
		Use:   "subscribe",
		Short: "Subscribe to a plan: an INCOMPLETE subscription, then its paid Checkout and first invoice",
		Long: `Writes the INCOMPLETE subscription createSubscriptionCheckout would, then posts
checkout.session.completed (mode subscription) and invoice.paid (subscription_create)
for a first period from now to one interval later: the subscription is ACTIVE and the
plan's credits are granted, expiring at the period's end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSimulatedUser(externalUser); err != nil {
				return err
			}
			if err := checkSimulatedID("--plan", planID, "a plan id such as pln_01… (see the creditPlans query)"); err != nil {
				return err
			}
			return simulateEvents(cmd, *server, true, func(ctx context.Context, client *ent.Client) (string, [][]byte, error) {
				sub, err := payments.SimulatedSubscription(ctx, client, externalUser, planID)
				if err != nil {
					return "", nil, err
				}
				plan, err := client.CreditPlan.Get(ctx, sub.PlanID)
				if err != nil {
					return "", nil, fmt.Errorf("reading plan %s: %w", sub.PlanID, err)
				}
				bodies, err := payments.SimulatedSubscriptionStart(sub, plan, time.Now())
				return sub.ID, bodies, err
			})
		},
	}
	subscribe.Flags().StringVar(&externalUser, "user", "", "the subscriber's external id (the sub of their tokens); created if new")
	subscribe.Flags().StringVar(&planID, "plan", "", "the credit plan's id (see the creditPlans query)")
	return subscribe
}

func newSimulateRenew(server *string) *cobra.Command {
	return subscriptionSimulation(server, "renew",
		"Pay the next period: invoice.paid (subscription_cycle) and customer.subscription.updated",
		`Posts invoice.paid (subscription_cycle) for the period that starts where the
subscription's current period ends, and customer.subscription.updated with that period.
The plan's credits are granted; the period that ended closes: its unspent credits
expire and the plan's rollover rule (NONE, CAPPED, ALL) brings some back. After
fail-renewal it pays the invoice that failed (Stripe's retry succeeding): ACTIVE again.`,
		func(sub *ent.CreditSubscription, plan *ent.CreditPlan) ([][]byte, error) {
			return payments.SimulatedRenewal(sub, plan)
		})
}

func newSimulateFailRenewal(server *string) *cobra.Command {
	return subscriptionSimulation(server, "fail-renewal",
		"Fail the next period's payment: invoice.payment_failed (PAST_DUE, no credits)",
		`Posts invoice.payment_failed for the next period's invoice: the subscription is
PAST_DUE (a subscription.past_due event is sent) and no credits are granted.
simulate renew then pays that invoice.`,
		func(sub *ent.CreditSubscription, plan *ent.CreditPlan) ([][]byte, error) {
			return payments.SimulatedRenewalFailure(sub, plan)
		})
}

func newSimulateCancel(server *string) *cobra.Command {
	var atPeriodEnd bool
	cancel := subscriptionSimulation(server, "cancel",
		"Cancel: customer.subscription.deleted, or with --at-period-end customer.subscription.updated",
		`Posts customer.subscription.deleted (CANCELED now), or with --at-period-end
customer.subscription.updated with cancel_at_period_end (the period paid for runs on;
no renewal follows). Credits already granted stay until they expire.`,
		func(sub *ent.CreditSubscription, plan *ent.CreditPlan) ([][]byte, error) {
			return payments.SimulatedCancel(sub, plan, atPeriodEnd, time.Now())
		})
	cancel.Flags().BoolVar(&atPeriodEnd, "at-period-end", false, "cancel at the end of the period paid for")
	return cancel
}

// subscriptionSimulation is a command posting events about an existing
// subscription: --subscription, or the latest of --user.
func subscriptionSimulation(server *string, use, short, long string,
	events func(*ent.CreditSubscription, *ent.CreditPlan) ([][]byte, error),
) *cobra.Command {
	var externalUser, subscriptionID string
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Args: cobra.NoArgs}
	cmd.Flags().StringVar(&externalUser, "user", "", "the subscriber's external id: their latest subscription")
	cmd.Flags().StringVar(&subscriptionID, "subscription", "", "the subscription's id (default: the --user's latest)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if externalUser == "" && subscriptionID == "" {
			return usageError{errors.New("--user or --subscription is required")}
		}
		if externalUser != "" {
			if err := checkSimulatedUser(externalUser); err != nil {
				return err
			}
		}
		if subscriptionID != "" {
			if err := checkSimulatedID("--subscription", subscriptionID, "a subscription id such as sub_01…"); err != nil {
				return err
			}
		}
		return simulateEvents(cmd, *server, true, func(ctx context.Context, client *ent.Client) (string, [][]byte, error) {
			sub, plan, err := payments.SimulatedSubscriptionOf(ctx, client, externalUser, subscriptionID)
			if err != nil {
				return "", nil, err
			}
			bodies, err := events(sub, plan)
			return sub.ID, bodies, err
		})
	}
	return cmd
}

// checkSimulatedID refuses, before the database sees it, an id no row can
// have (PostgreSQL refuses a NUL byte with an error of its own).
func checkSimulatedID(flag, id, what string) error {
	switch {
	case id == "":
		return usageError{fmt.Errorf("%s is required", flag)}
	case len(id) > maxPaymentIDLen || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }):
		return usageError{fmt.Errorf("%s %.50q is not %s", flag, id, what)}
	}
	return nil
}
