package payments

import (
	"context"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// Check verifies the ledger's invariants and that every payment moved
// exactly the credits its state and refunds say (see paymentInvariants),
// in chunks (see ledger.Service.Check).
func (s *Service) Check(ctx context.Context) (ledger.Report, error) {
	return s.ledger.Check(ctx, s.Invariants()...)
}

// Invariants are the payments' checks, which the ledger's checks run with
// its own (tally reconcile, and the check jobs behind ledgerReport).
func (s *Service) Invariants() []ledger.Invariant { return paymentInvariants(s.db) }

// grantedStatuses is granted() in SQL: the states in which a payment's
// credits have been granted.
const grantedStatuses = `('SUCCEEDED', 'PARTIALLY_REFUNDED', 'REFUNDED', 'DISPUTED', 'CHARGED_BACK')`

// paymentMoves sums, per payment, the transactions that name it: how many
// purchase grants and how many credits they granted, and the credits
// clawed back by refunds and by lost disputes, for one chunk of payments
// (see ledger.Invariant). It reads their transactions through the
// payment_id index.
const paymentMoves = `WITH moved AS (
	SELECT payment_id,
	       COUNT(CASE WHEN kind = 'PURCHASE' THEN 1 END) AS grants,
	       COALESCE(SUM(CASE WHEN kind = 'PURCHASE' THEN amount END), 0) AS granted,
	       COALESCE(SUM(CASE WHEN kind = 'REFUND_CLAWBACK' THEN amount END), 0) AS by_refunds,
	       COALESCE(SUM(CASE WHEN kind = 'DISPUTE_CLAWBACK' THEN amount END), 0) AS by_disputes
	  FROM credit_transactions
	 WHERE payment_id IN ({ids}) AND kind IN ('PURCHASE', 'REFUND_CLAWBACK', 'DISPUTE_CLAWBACK')
	 GROUP BY payment_id
)
`

// paymentInvariants check each payment's credits against its amounts and
// state, as set-based queries over a chunk of payments and their
// transactions:
//
//   - payment_grant_mismatch: a payment whose credits were granted
//     (succeeded, partially refunded, refunded, disputed, charged back) has
//     exactly one purchase grant, of exactly its credits; any other
//     (pending, awaiting payment, failed, expired) has none.
//   - payment_clawback_mismatch: the refund clawbacks of a payment total
//     refundCredits(amount_refunded) (its credits times the share refunded,
//     rounded down; all of them once fully refunded) and it has no dispute
//     clawback; a charged-back payment has had all its credits clawed back,
//     at most that share of them by refunds (refunds after the chargeback
//     take nothing more); a payment never granted has nothing clawed back.
//
// The share is computed exactly (database.MulDiv), independently of the Go
// code that claws it back: an arithmetic error there (such as an int64
// overflow) shows up here.
func paymentInvariants(db *database.DB) []ledger.Invariant {
	share := `CASE WHEN p.status NOT IN ` + grantedStatuses + ` OR p.amount_refunded = 0 THEN 0
	               WHEN p.amount_refunded >= p.amount THEN p.credits
	               ELSE ` + db.MulDiv("p.credits", "p.amount_refunded", "p.amount") + ` END`
	return []ledger.Invariant{
		{
			Name: "payment_grant_mismatch", Over: ledger.Payments,
			Query: paymentMoves + `SELECT p.id,
			       'status ' || p.status || ': ' || CAST(COALESCE(m.grants, 0) AS TEXT) || ' purchase grants of '
			       || CAST(COALESCE(m.granted, 0) AS TEXT) || ' credits in all, expected '
			       || CASE WHEN p.status IN ` + grantedStatuses + ` THEN 'one of ' || CAST(p.credits AS TEXT) ELSE 'none' END
			  FROM payments p
			  LEFT JOIN moved m ON m.payment_id = p.id
			 WHERE p.id IN ({ids})
			   AND ((p.status IN ` + grantedStatuses + ` AND (COALESCE(m.grants, 0) <> 1 OR COALESCE(m.granted, 0) <> p.credits))
			    OR (p.status NOT IN ` + grantedStatuses + ` AND COALESCE(m.grants, 0) <> 0))`,
		},
		{
			Name: "payment_clawback_mismatch", Over: ledger.Payments,
			Query: paymentMoves + `, expected AS (
				SELECT p.id, p.status, p.credits, p.amount, p.amount_refunded,
				       COALESCE(m.by_refunds, 0) AS by_refunds, COALESCE(m.by_disputes, 0) AS by_disputes,
				       ` + share + ` AS share
				  FROM payments p
				  LEFT JOIN moved m ON m.payment_id = p.id
				 WHERE p.id IN ({ids})
			)
			SELECT id,
			       'status ' || status || ', ' || CAST(amount_refunded AS TEXT) || ' of ' || CAST(amount AS TEXT)
			       || ' refunded: ' || CAST(by_refunds AS TEXT) || ' credits clawed back by refunds and '
			       || CAST(by_disputes AS TEXT) || ' by disputes, expected '
			       || CASE WHEN status = 'CHARGED_BACK'
			               THEN 'all ' || CAST(credits AS TEXT) || ', at most ' || CAST(share AS TEXT) || ' by refunds'
			               ELSE CAST(share AS TEXT) || ' by refunds and none by disputes' END
			  FROM expected
			 WHERE CASE WHEN status = 'CHARGED_BACK'
			            THEN CASE WHEN by_refunds + by_disputes <> credits OR by_refunds > share THEN 1 ELSE 0 END
			            ELSE CASE WHEN by_refunds <> share OR by_disputes <> 0 THEN 1 ELSE 0 END
			       END = 1`,
		},
	}
}
