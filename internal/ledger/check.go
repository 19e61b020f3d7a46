package ledger

import (
	"context"
	"fmt"
	"slices"
)

// Problem is one broken invariant.
type Problem struct {
	// Invariant names what is broken: unbalanced_transaction,
	// balance_mismatch, lot_remaining_mismatch, lot_held_mismatch,
	// lots_and_balance_disagree, transaction_count_mismatch, or the name of an invariant the caller
	// added (the payments package adds payment_grant_mismatch and
	// payment_clawback_mismatch).
	Invariant string
	// Subject is the id of the transaction, user, lot or payment concerned.
	Subject string
	Detail  string
}

// Invariant is a check of the caller's to run with the ledger's own, in the
// same read transaction: Query returns a (subject, detail) row for every
// violation and nothing on a healthy database.
type Invariant struct {
	Name  string
	Query string
}

// Report is the result of checking the ledger's invariants.
type Report struct {
	Users        int
	Transactions int
	Postings     int
	Lots         int
	Problems     []Problem
}

// OK says whether every invariant holds.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// invariantChecks are queries returning (subject, detail) rows for every
// violation; each must return nothing on a healthy ledger. They are plain
// SQL that PostgreSQL and SQLite both run.
var invariantChecks = []Invariant{
	{
		// 1. Double entry: every transaction's postings sum to zero.
		"unbalanced_transaction",
		`SELECT transaction_id, 'postings sum to ' || CAST(SUM(amount) AS TEXT)
		   FROM credit_ledgers GROUP BY transaction_id HAVING SUM(amount) <> 0`,
	},
	{
		// 2. The cached balance is the sum of the user's postings.
		"balance_mismatch",
		`SELECT u.id, 'balance ' || CAST(u.credits_balance AS TEXT) || ', postings sum to ' || CAST(COALESCE(p.total, 0) AS TEXT)
		   FROM users u
		   LEFT JOIN (SELECT user_id, SUM(amount) AS total FROM credit_ledgers WHERE user_id IS NOT NULL GROUP BY user_id) p
		     ON p.user_id = u.id
		  WHERE u.credits_balance <> COALESCE(p.total, 0)`,
	},
	{
		// A lot's remaining credits are what entered the user's account
		// through it minus what left.
		"lot_remaining_mismatch",
		`SELECT l.id, 'remaining ' || CAST(l.remaining AS TEXT) || ', postings sum to ' || CAST(COALESCE(p.total, 0) AS TEXT)
		   FROM credit_lots l
		   LEFT JOIN (SELECT lot_id, SUM(amount) AS total FROM credit_ledgers
		               WHERE lot_id IS NOT NULL AND user_id IS NOT NULL GROUP BY lot_id) p
		     ON p.lot_id = l.id
		  WHERE l.remaining <> COALESCE(p.total, 0)`,
	},
	{
		// A lot's held credits are its postings on system:held.
		"lot_held_mismatch",
		`SELECT l.id, 'held ' || CAST(l.held AS TEXT) || ', held postings sum to ' || CAST(COALESCE(p.total, 0) AS TEXT)
		   FROM credit_lots l
		   LEFT JOIN (SELECT lot_id, SUM(amount) AS total FROM credit_ledgers
		               WHERE lot_id IS NOT NULL AND account = 'system:held' GROUP BY lot_id) p
		     ON p.lot_id = l.id
		  WHERE l.held <> COALESCE(p.total, 0)`,
	},
	{
		// 3. Lots hold exactly the positive part of the balance: a user with
		// a debt has no spendable lot, and a user without one has every
		// credit of the balance in a lot.
		"lots_and_balance_disagree",
		`SELECT u.id, 'balance ' || CAST(u.credits_balance AS TEXT) || ', lots hold ' || CAST(COALESCE(l.total, 0) AS TEXT)
		   FROM users u
		   LEFT JOIN (SELECT user_id, SUM(remaining) AS total FROM credit_lots GROUP BY user_id) l
		     ON l.user_id = u.id
		  WHERE COALESCE(l.total, 0) <> CASE WHEN u.credits_balance > 0 THEN u.credits_balance ELSE 0 END`,
	},
	{
		// The user's count of transactions, which the history's totalCount
		// shows, is the number of their transactions.
		"transaction_count_mismatch",
		`SELECT u.id, 'transaction_count ' || CAST(u.transaction_count AS TEXT) || ', transactions ' || CAST(COALESCE(t.total, 0) AS TEXT)
		   FROM users u
		   LEFT JOIN (SELECT user_id, COUNT(*) AS total FROM credit_transactions GROUP BY user_id) t
		     ON t.user_id = u.id
		  WHERE u.transaction_count <> COALESCE(t.total, 0)`,
	},
}

// Check verifies the ledger's invariants over every user, and the extra
// ones given. It reads inside one transaction, so that it sees one
// consistent state.
func (s *Service) Check(ctx context.Context, extra ...Invariant) (Report, error) {
	var r Report
	err := s.read(ctx, func(ctx context.Context, t *Tx) error {
		r = Report{}
		counts := []struct {
			table string
			into  *int
		}{
			{"users", &r.Users}, {"credit_transactions", &r.Transactions},
			{"credit_ledgers", &r.Postings}, {"credit_lots", &r.Lots},
		}
		for _, c := range counts {
			rows, err := t.ent.QueryContext(ctx, "SELECT COUNT(*) FROM "+c.table)
			if err != nil {
				return fmt.Errorf("ledger: counting %s: %w", c.table, err)
			}
			if rows.Next() {
				err = rows.Scan(c.into)
			}
			rows.Close()
			if err != nil {
				return fmt.Errorf("ledger: counting %s: %w", c.table, err)
			}
		}
		for _, check := range slices.Concat(invariantChecks, extra) {
			rows, err := t.ent.QueryContext(ctx, check.Query)
			if err != nil {
				return fmt.Errorf("ledger: checking %s: %w", check.Name, err)
			}
			for rows.Next() {
				p := Problem{Invariant: check.Name}
				if err := rows.Scan(&p.Subject, &p.Detail); err != nil {
					rows.Close()
					return fmt.Errorf("ledger: checking %s: %w", check.Name, err)
				}
				r.Problems = append(r.Problems, p)
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return fmt.Errorf("ledger: checking %s: %w", check.Name, err)
			}
		}
		return nil
	})
	return r, err
}
