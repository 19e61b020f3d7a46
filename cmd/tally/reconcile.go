package main

import (
	"errors"
	"fmt"
	"io"
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
	var since, grace time.Duration
	var apply bool
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check the ledger and compare Stripe with what Tally applied; --apply repairs",
		Long: `Checks the ledger's invariants over every user and that every payment granted and
clawed back exactly what its state and refunds say (in chunks, with its progress
on standard error every few seconds and memory that does not grow with the ledger), then reads Stripe (paid Checkout
Sessions, events of the handled types and paid subscription invoices created in
the last --since) and lists what Tally has not applied. Then it lists the recharges in flight for longer than
--recharge-grace and, with a Stripe key, what Stripe says of their payment intents.
With --apply, each missing item (a recharge whose intent succeeded too) is processed
exactly as a webhook delivery would be, so running it again repairs nothing twice.
Exits 1 when a problem remains (a PENDING recharge past the grace that Stripe does
not say was paid is stuck: its job settles one within minutes).`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().DurationVar(&since, "since", 30*24*time.Hour, "how far back to read Stripe")
	cmd.Flags().DurationVar(&grace, "recharge-grace", payments.DefaultRechargeGrace, "how long a recharge may be in flight before it is reported")
	cmd.Flags().BoolVar(&apply, "apply", false, "repair what is missing")
	addSettingFlags(cmd.Flags(), "database-url", "env")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if since <= 0 {
			return usageError{errors.New("--since must be positive, such as 72h")}
		}
		if grace <= 0 {
			return usageError{errors.New("--recharge-grace must be positive, such as 15m")}
		}
		cfg, db, err := openConfigured(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		defer db.Close()
		svc, err := paymentsService(cfg, db)
		if err != nil {
			return err
		}
		r, err := svc.Reconcile(ctx, payments.ReconcileOptions{
			Since: since, Apply: apply, RechargeGrace: grace,
			Progress: func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), "… "+format+"\n", args...) },
		})
		if err != nil {
			return err
		}
		if !printReconcile(cmd.OutOrStdout(), r, since, apply) {
			return errors.New("reconciliation found problems (see above)")
		}
		return nil
	}
	return cmd
}

// printReconcile writes the report and says whether it is clean: every
// invariant holds, nothing is missing (or it was all repaired) and no
// recharge is stuck.
func printReconcile(out io.Writer, r payments.ReconcileReport, since time.Duration, apply bool) bool {
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
		fmt.Fprintf(out, "stripe: %d paid sessions, %d events and %d paid invoices checked since %s\n",
			r.SessionsChecked, r.EventsChecked, r.InvoicesChecked, time.Now().Add(-since).UTC().Format(time.RFC3339))
		for _, id := range r.PaidNotGranted {
			fmt.Fprintf(out, "  paid in Stripe, credits not granted: %s\n", id)
		}
		for _, id := range r.Unprocessed {
			fmt.Fprintf(out, "  event not applied: %s\n", id)
		}
		for _, inv := range r.UngrantedInvoices {
			what := "credits not granted"
			if inv.Repaired {
				what = "credits granted now"
			}
			fmt.Fprintf(out, "  invoice paid in Stripe, %s: %s (subscription %s)\n", what, inv.InvoiceID, inv.SubscriptionID)
		}
	}
	missing := len(r.PaidNotGranted) + len(r.Unprocessed) + len(r.UngrantedInvoices)
	stuck := printRecharges(out, r)
	for _, s := range r.StaleRecharges {
		if s.Paid {
			missing++
		}
	}
	if r.StripeChecked && apply {
		fmt.Fprintf(out, "repaired: %d\n", r.Repaired)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(out, "  repair failed: %s\n", f)
	}
	return r.Ledger.OK() && len(r.Failures) == 0 && stuck == 0 && (apply || missing == 0)
}

// printRecharges lists the recharges in flight past the grace and returns
// how many of them are stuck.
func printRecharges(out io.Writer, r payments.ReconcileReport) (stuck int) {
	fmt.Fprintf(out, "recharges: %d in flight for more than %s\n", len(r.StaleRecharges), r.RechargeGrace)
	for _, s := range r.StaleRecharges {
		var what string
		switch {
		case !r.StripeChecked:
			what = "Stripe not checked"
		case s.Mismatch != "":
			what = s.Mismatch
		case s.Repaired:
			what = "paid in Stripe (" + s.Intent + "), credits granted now"
		case s.Paid:
			what = "paid in Stripe (" + s.Intent + "), credits not granted"
		case s.Intent == "":
			what = "Stripe has no payment intent for it"
		default:
			what = "its payment intent " + s.Intent + " is " + s.IntentStatus
		}
		if s.Stuck() {
			stuck++
			what = "stuck (" + what + ")"
		}
		fmt.Fprintf(out, "  recharge %s %s since %s: %s\n", s.PaymentID, s.Status, s.CreatedAt.UTC().Format(time.RFC3339), what)
	}
	return stuck
}

// paymentsService is the payments service of the commands that write
// (reconcile --apply, simulate card), built as the server builds its own:
// their moves write the outbound events they cause and start the
// recharges they call for (a clawback below a user's threshold), with
// their jobs, for the server's workers to run.
func paymentsService(cfg config.Config, db *database.DB) (*payments.Service, error) {
	inserter, err := jobs.NewInserter(db)
	if err != nil {
		return nil, err
	}
	livemode := payments.LiveKey(cfg.StripeSecretKey)
	l := ledger.New(db, outbound.LedgerEvents(db, cfg.Outbound.LowBalanceThreshold, inserter),
		ledger.WithRecharges(payments.NewRecharger(db, inserter, livemode)))
	return payments.New(db, l, payments.Config{
		SecretKey: cfg.StripeSecretKey, APIBase: cfg.StripeAPIBase, Livemode: livemode,
		RechargeRetryAfter: cfg.RechargeRetryAfter,
		// Repairs queue what the webhook would have: the saving of cards,
		// recharges.
		Jobs: inserter,
	}), nil
}
