package ledger

import (
	"context"
	"fmt"
	"strings"
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

// Subjects are what an invariant is checked over, a chunk at a time.
type Subjects string

// The subjects of the checks, in the order a full check walks them.
const (
	Users        Subjects = "users"
	Transactions Subjects = "transactions"
	Payments     Subjects = "payments"
)

// subjectTables are the tables whose ids the checks walk, in walking order.
var subjectTables = []struct {
	subjects Subjects
	table    string
}{
	{Users, "users"}, {Transactions, "credit_transactions"}, {Payments, "payments"},
}

// Invariant is a check over a chunk of subjects: Query returns a (subject,
// detail) row for every violation among the subjects whose ids it is given
// where it says {ids} (a list of placeholders), and nothing on a healthy
// database. Each is one statement, so that it sees one state of the
// database even at PostgreSQL's READ COMMITTED.
type Invariant struct {
	Name  string
	Over  Subjects
	Query string
}

// invariantChecks are the ledger's own, plain SQL that PostgreSQL and
// SQLite both run, each reading only the rows of the chunk's subjects
// through their indexes: a check's cost is what it checks, whatever the
// size of the ledger.
var invariantChecks = []Invariant{
	{
		// 1. Double entry: every transaction's postings sum to zero.
		"unbalanced_transaction", Transactions,
		`SELECT transaction_id, 'postings sum to ' || CAST(SUM(amount) AS TEXT)
		   FROM credit_ledgers WHERE transaction_id IN ({ids})
		  GROUP BY transaction_id HAVING SUM(amount) <> 0`,
	},
	{
		// 2. The cached balance is the sum of the user's postings.
		"balance_mismatch", Users,
		`SELECT u.id, 'balance ' || CAST(u.credits_balance AS TEXT) || ', postings sum to ' || CAST(COALESCE(p.total, 0) AS TEXT)
		   FROM users u
		   LEFT JOIN (SELECT user_id, SUM(amount) AS total FROM credit_ledgers
		               WHERE user_id IN ({ids}) GROUP BY user_id) p
		     ON p.user_id = u.id
		  WHERE u.id IN ({ids}) AND u.credits_balance <> COALESCE(p.total, 0)`,
	},
	{
		// A lot's remaining credits are what entered the user's account
		// through it minus what left.
		"lot_remaining_mismatch", Users,
		`SELECT l.id, 'remaining ' || CAST(l.remaining AS TEXT) || ', postings sum to ' || CAST(COALESCE(p.total, 0) AS TEXT)
		   FROM credit_lots l
		   LEFT JOIN (SELECT lot_id, SUM(amount) AS total FROM credit_ledgers
		               WHERE lot_id IN (SELECT id FROM credit_lots WHERE user_id IN ({ids}))
		                 AND user_id IS NOT NULL GROUP BY lot_id) p
		     ON p.lot_id = l.id
		  WHERE l.user_id IN ({ids}) AND l.remaining <> COALESCE(p.total, 0)`,
	},
	{
		// A lot's held credits are its postings on system:held.
		"lot_held_mismatch", Users,
		`SELECT l.id, 'held ' || CAST(l.held AS TEXT) || ', held postings sum to ' || CAST(COALESCE(p.total, 0) AS TEXT)
		   FROM credit_lots l
		   LEFT JOIN (SELECT lot_id, SUM(amount) AS total FROM credit_ledgers
		               WHERE lot_id IN (SELECT id FROM credit_lots WHERE user_id IN ({ids}))
		                 AND account = 'system:held' GROUP BY lot_id) p
		     ON p.lot_id = l.id
		  WHERE l.user_id IN ({ids}) AND l.held <> COALESCE(p.total, 0)`,
	},
	{
		// 3. Lots hold exactly the positive part of the balance: a user with
		// a debt has no spendable lot, and a user without one has every
		// credit of the balance in a lot.
		"lots_and_balance_disagree", Users,
		`SELECT u.id, 'balance ' || CAST(u.credits_balance AS TEXT) || ', lots hold ' || CAST(COALESCE(l.total, 0) AS TEXT)
		   FROM users u
		   LEFT JOIN (SELECT user_id, SUM(remaining) AS total FROM credit_lots
		               WHERE user_id IN ({ids}) GROUP BY user_id) l
		     ON l.user_id = u.id
		  WHERE u.id IN ({ids}) AND COALESCE(l.total, 0) <> CASE WHEN u.credits_balance > 0 THEN u.credits_balance ELSE 0 END`,
	},
	{
		// The user's count of transactions, which the history's totalCount
		// shows, is the number of their transactions.
		"transaction_count_mismatch", Users,
		`SELECT u.id, 'transaction_count ' || CAST(u.transaction_count AS TEXT) || ', transactions ' || CAST(COALESCE(t.total, 0) AS TEXT)
		   FROM users u
		   LEFT JOIN (SELECT user_id, COUNT(*) AS total FROM credit_transactions
		               WHERE user_id IN ({ids}) GROUP BY user_id) t
		     ON t.user_id = u.id
		  WHERE u.id IN ({ids}) AND u.transaction_count <> COALESCE(t.total, 0)`,
	},
}

// chunkCounts are the rows below a chunk's subjects that the report
// counts, read the same way.
var chunkCounts = map[Subjects]struct{ what, query string }{
	Users:        {"lots", `SELECT COUNT(*) FROM credit_lots WHERE user_id IN ({ids})`},
	Transactions: {"postings", `SELECT COUNT(*) FROM credit_ledgers WHERE transaction_id IN ({ids})`},
}

// forIDs puts n placeholders where the query says {ids} and repeats the
// ids once per place.
func (s *Service) forIDs(query string, ids []string) (string, []any) {
	marks := strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")
	places := strings.Count(query, "{ids}")
	args := make([]any, 0, places*len(ids))
	for range places {
		for _, id := range ids {
			args = append(args, id)
		}
	}
	return s.db.Rebind(strings.ReplaceAll(query, "{ids}", marks)), args
}

// chunkResult is what checking one chunk found.
type chunkResult struct {
	problems []Problem
	// below counts the rows under the subjects (lots of users, postings of
	// transactions).
	below int64
}

// checkChunk runs the invariants over one chunk of subjects.
func (s *Service) checkChunk(ctx context.Context, invariants []Invariant, over Subjects, ids []string) (chunkResult, error) {
	var res chunkResult
	if len(ids) == 0 {
		return res, nil
	}
	if c, ok := chunkCounts[over]; ok {
		q, args := s.forIDs(c.query, ids)
		if err := s.db.SQL.QueryRowContext(ctx, q, args...).Scan(&res.below); err != nil {
			return res, fmt.Errorf("ledger: counting %s: %w", c.what, err)
		}
	}
	for _, inv := range invariants {
		if inv.Over != over {
			continue
		}
		q, args := s.forIDs(inv.Query, ids)
		rows, err := s.db.SQL.QueryContext(ctx, q, args...)
		if err != nil {
			return res, fmt.Errorf("ledger: checking %s: %w", inv.Name, err)
		}
		for rows.Next() {
			p := Problem{Invariant: inv.Name}
			if err := rows.Scan(&p.Subject, &p.Detail); err != nil {
				rows.Close()
				return res, fmt.Errorf("ledger: checking %s: %w", inv.Name, err)
			}
			res.problems = append(res.problems, p)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return res, fmt.Errorf("ledger: checking %s: %w", inv.Name, err)
		}
	}
	return res, nil
}

// idsAfter reads up to n ids of table after the given one (and no later
// than through, when it is set), in order.
func (s *Service) idsAfter(ctx context.Context, table, after, through string, n int) ([]string, error) {
	q := `SELECT id FROM ` + table + ` WHERE id > ?`
	args := []any{after}
	if through != "" {
		q += ` AND id <= ?`
		args = append(args, through)
	}
	q += fmt.Sprintf(` ORDER BY id LIMIT %d`, n)
	return s.strings(ctx, q, args...)
}

// strings reads a one-column query.
func (s *Service) strings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.SQL.QueryContext(ctx, s.db.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading ids: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("ledger: reading ids: %w", err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: reading ids: %w", err)
	}
	return out, nil
}
