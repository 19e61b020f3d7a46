package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/users"
)

func newUsersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Look at users' accounts (support)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newUsersShowCommand())
	return cmd
}

func newUsersShowCommand() *cobra.Command {
	var recent int
	cmd := &cobra.Command{
		Use:   "show <externalId>",
		Short: "Print a user's balances, lots, open reservations and last transactions",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().IntVar(&recent, "last", 10, fmt.Sprintf("how many recent transactions (1 to %d)", users.MaxRecent))
	addSettingFlags(cmd.Flags(), "database-url", "env")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if recent < 1 || recent > users.MaxRecent {
			return usageError{fmt.Errorf("--last must be from 1 to %d, not %d", users.MaxRecent, recent)}
		}
		_, db, err := openConfigured(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		defer db.Close()
		sum, err := users.New(db.Ent).Summarize(ctx, ledger.New(db), args[0], recent)
		if err != nil {
			return plain(err)
		}
		printSummary(cmd.OutOrStdout(), sum)
		return nil
	}
	return cmd
}

func printSummary(w io.Writer, s users.Summary) {
	u, b := s.User, s.Balance
	fmt.Fprintf(w, "user %s  external id %s  email %s  status %s  since %s\n",
		u.ID, strconv.Quote(u.ExternalID), orNone(u.Email), u.Status, stamp(u.CreatedAt))
	fmt.Fprintf(w, "balance %d  available %d  reserved %d  held %d\n", b.Balance, b.Available, b.Reserved, b.Held)

	fmt.Fprintf(w, "\nlots (%d, in spend order):\n", len(s.Lots))
	for _, l := range s.Lots {
		expiry := "never"
		if l.ExpiresAt != nil {
			expiry = stamp(*l.ExpiresAt)
		}
		payment := ""
		if l.PaymentID != nil {
			payment = "  payment " + *l.PaymentID
		}
		fmt.Fprintf(w, "  %s  %s  remaining %d of %d  held %d  priority %d  expires %s%s\n",
			l.ID, l.Source, l.Remaining, l.Original, l.Held, l.Priority, expiry, payment)
	}

	fmt.Fprintf(w, "\nopen reservations (%d):\n", len(s.Reservations))
	for _, r := range s.Reservations {
		fmt.Fprintf(w, "  %s  %d  expires %s  reason %s\n", r.ID, r.Amount, stamp(r.ExpiresAt), orNone(r.Reason))
	}

	fmt.Fprintf(w, "\nlast transactions (%d, newest first):\n", len(s.Recent))
	for _, t := range s.Recent {
		fmt.Fprintf(w, "  %s  %s  %-16s %+d  by %s  reason %s\n",
			stamp(t.CreatedAt), t.ID, t.Kind, balanceChange(t), t.Actor, orNone(t.Reason))
	}
}

// balanceChange is what the transaction did to its user's balance: the sum
// of its postings on the user's account.
func balanceChange(t *ent.CreditTransaction) int64 {
	var sum int64
	for _, p := range t.Edges.Postings {
		if p.Account == ledger.UserAccount(t.UserID) {
			sum += p.Amount
		}
	}
	return sum
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// orNone quotes free text, so that a reason cannot pass itself off as more
// of the listing.
func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return strconv.Quote(s)
}
