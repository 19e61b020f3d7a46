package main

import (
	"context"
	"fmt"
	"strings"
)

// spendLedger tracks one spending account across runs, so that each run
// can be checked against exactly what it reported.
type spendLedger struct {
	userID string
	spent  int64 // successful spends reported so far, over every run
}

// verify checks the money invariants after a run: ledger.Check over every
// user, and for a spending workload, that the account's SPEND transactions
// number exactly the successes reported (none lost, none doubled) and that
// its balance is the seed minus those spends and never negative.
func (e *env) verify(ctx context.Context, acct *spendLedger, successes int) error {
	var problems []string
	report, err := e.ledger.Check(ctx)
	if err != nil {
		return err
	}
	for _, p := range report.Problems {
		// B1 is the bare minimum of a spend: it does not draw from the
		// user's lots, so the baseline user's lots keep holding the seed.
		// That one known difference is not Tally's; every other problem is.
		if p.Invariant == "lots_and_balance_disagree" && p.Subject == e.rawUserID {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s %s: %s", p.Invariant, p.Subject, p.Detail))
	}
	if acct != nil {
		acct.spent += int64(successes)
		var count, balance int64
		if err := e.db.SQL.QueryRowContext(ctx,
			`SELECT COUNT(*) FROM credit_transactions WHERE user_id = $1 AND kind = 'SPEND'`, acct.userID).Scan(&count); err != nil {
			return err
		}
		if err := e.db.SQL.QueryRowContext(ctx,
			`SELECT credits_balance FROM users WHERE id = $1`, acct.userID).Scan(&balance); err != nil {
			return err
		}
		if count != acct.spent {
			problems = append(problems, fmt.Sprintf("%d SPEND transactions for %d successful spends", count, acct.spent))
		}
		if balance < 0 {
			problems = append(problems, fmt.Sprintf("overdraft: balance %d", balance))
		}
		if want := seedBalance - acct.spent; balance != want {
			problems = append(problems, fmt.Sprintf("balance %d, want %d", balance, want))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return fmt.Errorf("invariants violated: %s", strings.Join(problems, "; "))
	}
	return nil
}
