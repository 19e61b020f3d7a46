package main

import (
	"context"
	"fmt"
	"strings"
)

// verify checks the money invariants after a run, over everything the
// benchmark has written so far:
//   - ledger.Check over every user (double entry, cached balances, lots);
//   - no balance is negative (nothing in the benchmark may make a debt);
//   - every account set: each account's SPEND transactions number exactly
//     the successful spends reported (each key applied once: none lost, none
//     doubled), and its balance is the seed minus those;
//   - every webhook set: no event answered "applied" twice; the PURCHASE
//     transactions, paid payments and applied event records all equal the
//     "applied" answers; each buyer's balance is the credits of their paid
//     payments.
//
// It returns nil when all hold, an error naming (the first few) violations
// otherwise, and an error too when the checks themselves cannot run.
func (e *env) verify(ctx context.Context) error {
	var problems []string
	report, err := e.ledger.Check(ctx)
	if err != nil {
		return fmt.Errorf("checking the ledger: %w", err)
	}
	for _, p := range report.Problems {
		// The raw spends are the bare minimum of a spend: they do not draw
		// from the user's lots, so a baseline user's lots keep holding the
		// seed, nor count the user's transactions (nor do the raw
		// purchases, B4's). Those known differences are not Tally's; every
		// other problem is.
		if (p.Invariant == "lots_and_balance_disagree" || p.Invariant == "transaction_count_mismatch") && e.lotless[p.Subject] {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s %s: %s", p.Invariant, p.Subject, p.Detail))
	}
	snap, err := e.snapshot(ctx)
	if err != nil {
		return err
	}
	negative := 0
	for _, b := range snap.balance {
		if b < 0 {
			negative++
		}
	}
	if negative > 0 {
		problems = append(problems, fmt.Sprintf("overdraft: %d users with a negative balance", negative))
	}
	for _, s := range e.sets {
		problems = append(problems, s.verify(snap)...)
	}
	for _, h := range e.hooks {
		problems = append(problems, h.verify(snap)...)
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return &violation{strings.Join(problems, "; ")}
	}
	return nil
}

// violation is a broken invariant (as opposed to a check that could not
// run): reported in the run's check field.
type violation struct{ detail string }

func (v *violation) Error() string { return "invariants violated: " + v.detail }

// snapshot is what the checks compare with the harness's own counts, read
// as per-user (or per-payment) aggregates of one table each and joined
// here. Joins in SQL left the plan to the statistics of the moment, and
// with a table analyzed while still empty PostgreSQL chose one that took
// a minute.
type snapshot struct {
	balance     map[string]int64  // user → credits_balance
	spends      map[string]int64  // user → SPEND transactions
	purchases   map[string]int64  // user → PURCHASE transactions
	paid        map[string]int64  // user → SUCCEEDED payments
	paidCredits map[string]int64  // user → credits of those payments
	eventOf     map[string]string // payment → outcome of its event record (one per payment here)
	eventsOf    map[string]int    // payment → event records
}

func (e *env) snapshot(ctx context.Context) (*snapshot, error) {
	s := &snapshot{balance: map[string]int64{}, spends: map[string]int64{}, purchases: map[string]int64{},
		paid: map[string]int64{}, paidCredits: map[string]int64{}, eventOf: map[string]string{}, eventsOf: map[string]int{}}
	queries := []struct {
		what, q string
		row     func(scan func(...any) error) error
	}{
		{"balances", `SELECT id, credits_balance FROM users`, func(scan func(...any) error) error {
			var id string
			var b int64
			err := scan(&id, &b)
			s.balance[id] = b
			return err
		}},
		{"transactions", `SELECT user_id, kind, COUNT(*) FROM credit_transactions WHERE kind IN ('SPEND', 'PURCHASE') GROUP BY user_id, kind`,
			func(scan func(...any) error) error {
				var id, kind string
				var n int64
				err := scan(&id, &kind, &n)
				if kind == "SPEND" {
					s.spends[id] = n
				} else {
					s.purchases[id] = n
				}
				return err
			}},
		{"paid payments", `SELECT user_id, COUNT(*), SUM(credits) FROM payments WHERE status = 'SUCCEEDED' GROUP BY user_id`,
			func(scan func(...any) error) error {
				var id string
				var n, credits int64
				err := scan(&id, &n, &credits)
				s.paid[id], s.paidCredits[id] = n, credits
				return err
			}},
		{"event records", `SELECT payment_id, outcome FROM processed_events WHERE payment_id IS NOT NULL`,
			func(scan func(...any) error) error {
				var payment, outcome string
				err := scan(&payment, &outcome)
				s.eventOf[payment] = outcome
				s.eventsOf[payment]++
				return err
			}},
	}
	for _, q := range queries {
		rows, err := e.db.SQL.QueryContext(ctx, q.q)
		if err != nil {
			return nil, fmt.Errorf("reading the %s: %w", q.what, err)
		}
		for rows.Next() {
			if err := q.row(rows.Scan); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading the %s: %w", q.what, err)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the %s: %w", q.what, err)
		}
	}
	return s, nil
}

// verify compares an account set with the snapshot: each account's SPEND
// transactions are its successful spends, its balance the seed minus them.
func (s *accountSet) verify(snap *snapshot) []string {
	var problems []string
	for i, id := range s.ids {
		spent := s.spent[i].Load()
		if n := snap.spends[id]; n != spent {
			problems = append(problems, fmt.Sprintf("%s: %d SPEND transactions for %d successful spends", s.external[i], n, spent))
		}
		balance, ok := snap.balance[id]
		if want := s.seed - spent; !ok || balance != want {
			problems = append(problems, fmt.Sprintf("%s: balance %d, want %d", s.external[i], balance, want))
		}
	}
	return problems
}

// verify compares a webhook set with the snapshot.
func (h *hookSet) verify(snap *snapshot) []string {
	t := h.tally()
	problems := t.overApplied
	var purchases, paid int64
	for _, id := range h.userIDs {
		purchases += snap.purchases[id]
		paid += snap.paid[id]
		if b := snap.balance[id]; b != snap.paidCredits[id] {
			problems = append(problems, fmt.Sprintf("%s buyer %s: balance %d, paid payments bought %d", h.name, id, b, snap.paidCredits[id]))
		}
	}
	records, appliedRecords := 0, 0
	h.mu.Lock()
	sent := h.sent
	h.mu.Unlock()
	for _, ev := range sent {
		n := snap.eventsOf[ev.paymentID]
		records += n
		if n > 1 {
			problems = append(problems, fmt.Sprintf("%s*: payment %s has %d event records for one event", h.name, ev.paymentID, n))
		}
		if snap.eventOf[ev.paymentID] == "APPLIED" {
			appliedRecords++
		}
	}
	// An event whose every delivery failed may or may not have committed:
	// those widen the range; with no failures it is exact.
	lo, hi := int64(t.applied), int64(t.applied+t.unknown)
	for _, c := range []struct {
		what string
		n    int64
	}{{"PURCHASE transactions", purchases}, {"paid payments", paid}, {"applied event records", int64(appliedRecords)}} {
		if c.n < lo || c.n > hi {
			problems = append(problems, fmt.Sprintf("%s*: %d %s for %d events answered applied", h.name, c.n, c.what, t.applied))
		}
	}
	if purchases != paid || paid != int64(appliedRecords) {
		problems = append(problems, fmt.Sprintf("%s*: %d PURCHASE transactions, %d paid payments, %d applied event records",
			h.name, purchases, paid, appliedRecords))
	}
	if records < t.acked || records > t.sent {
		problems = append(problems, fmt.Sprintf("%s*: %d event records for %d events sent (%d acknowledged)", h.name, records, t.sent, t.acked))
	}
	return problems
}
