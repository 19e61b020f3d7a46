package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/outbound"
	"github.com/tally-billing/tally/internal/payments"
)

func newReconcileCommand() *cobra.Command {
	var since time.Duration
	var apply bool
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check the ledger and compare Stripe with what Tally applied; --apply repairs",
		Long: `Checks the ledger's invariants over every user and that every payment granted and
clawed back exactly what its state and refunds say (in chunks, with its progress
on standard error every few seconds and memory that does not grow with the ledger), then reads Stripe (paid Checkout
Sessions and events of the handled types created in the last --since) and lists
what Tally has not applied. With --apply, each missing item is processed exactly
as a webhook delivery would be, so running it again repairs nothing twice.
Exits 1 when a problem remains.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().DurationVar(&since, "since", 30*24*time.Hour, "how far back to read Stripe")
	cmd.Flags().BoolVar(&apply, "apply", false, "repair what is missing")
	addSettingFlags(cmd.Flags(), "database-url", "env")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if since <= 0 {
			return usageError{errors.New("--since must be positive, such as 72h")}
		}
		cfg, db, err := openConfigured(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		defer db.Close()
		out := cmd.OutOrStdout()
		svc, err := reconcileService(cfg, db)
		if err != nil {
			return err
		}
		r, err := svc.Reconcile(ctx, payments.ReconcileOptions{
			Since: since, Apply: apply,
			Progress: func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), "… "+format+"\n", args...) },
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "ledger: %d users, %d transactions, %d postings, %d lots, %d payments: ",
			r.Ledger.Users, r.Ledger.Transactions, r.Ledger.Postings, r.Ledger.Lots, r.Ledger.Payments)
		if r.Ledger.OK() {
			fmt.Fprintln(out, "every invariant holds")
		} else {
			fmt.Fprintf(out, "%d problems", r.Ledger.ProblemCount)
			if int64(len(r.Ledger.Problems)) < r.Ledger.ProblemCount {
				fmt.Fprintf(out, " (the first %d:)", len(r.Ledger.Problems))
			}
			fmt.Fprintln(out)
			for _, p := range r.Ledger.Problems {
				fmt.Fprintf(out, "  %s %s: %s\n", p.Invariant, p.Subject, p.Detail)
			}
		}
		if !r.StripeChecked {
			fmt.Fprintln(out, "stripe: not checked (no STRIPE_SECRET_KEY)")
		} else {
			fmt.Fprintf(out, "stripe: %d paid sessions and %d events checked since %s\n",
				r.SessionsChecked, r.EventsChecked, time.Now().Add(-since).UTC().Format(time.RFC3339))
			for _, id := range r.PaidNotGranted {
				fmt.Fprintf(out, "  paid in Stripe, credits not granted: %s\n", id)
			}
			for _, id := range r.Unprocessed {
				fmt.Fprintf(out, "  event not applied: %s\n", id)
			}
			if apply {
				fmt.Fprintf(out, "repaired: %d\n", r.Repaired)
			}
			for _, f := range r.Failures {
				fmt.Fprintf(out, "  repair failed: %s\n", f)
			}
		}
		missing := len(r.PaidNotGranted) + len(r.Unprocessed)
		if !r.Ledger.OK() || len(r.Failures) > 0 || (!apply && missing > 0) {
			return errors.New("reconciliation found problems (see above)")
		}
		return nil
	}
	return cmd
}

// reconcileService is the payments service reconcile works with. --apply
// moves credits as a webhook delivery would, and writes the outbound
// events those moves cause, for the server's workers to deliver.
func reconcileService(cfg config.Config, db *database.DB) (*payments.Service, error) {
	inserter, err := jobs.NewInserter(db)
	if err != nil {
		return nil, err
	}
	l := ledger.New(db, outbound.LedgerEvents(db, cfg.Outbound.LowBalanceThreshold, inserter))
	return payments.New(db, l, payments.Config{
		SecretKey: cfg.StripeSecretKey, APIBase: cfg.StripeAPIBase, Livemode: payments.LiveKey(cfg.StripeSecretKey),
		// Repairs queue what the webhook would have: the saving of cards.
		Jobs: inserter,
	}), nil
}
