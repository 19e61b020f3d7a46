package payments

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/batch"
	"github.com/tally-billing/tally/internal/ledger"
)

// Checkout Session events delivered concurrently are applied together (see
// applyPurchases): at most maxPurchaseBatch in one transaction, at most
// maxPurchaseBatchesInFlight transactions at once.
const (
	maxPurchaseBatch           = 64
	maxPurchaseBatchesInFlight = 4
	purchaseBatchTimeout       = 30 * time.Second
)

// purchase is one new Checkout Session event on its way through a batch.
type purchase struct {
	ev       *stripe.Event
	payload  []byte
	sess     *stripe.CheckoutSession
	target   *ent.Payment // as matched before the transaction
	received time.Time

	outcome string
	err     error
}

func newPurchaseBatcher(s *Service) *batch.Batcher[*purchase] {
	// One event per user in a batch: a batch's grants start from the
	// balances read under the lock, one per user.
	return batch.New(s.runPurchases, func(c *purchase) string { return c.target.UserID },
		batch.Options{MaxBatch: maxPurchaseBatch, MaxInFlight: maxPurchaseBatchesInFlight, Timeout: purchaseBatchTimeout, OnePerKey: true})
}

// errAlone sends a batch's events back to be applied one by one: one of them
// needs what only that path does (completing a deferred record).
var errAlone = errors.New("payments: an event of the batch is to be applied alone")

// runPurchases applies a batch in one transaction. When that fails, each
// event is applied alone, so that one event cannot fail the others.
func (s *Service) runPurchases(ctx context.Context, calls []*purchase) {
	attempts := 0
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		attempts++
		return s.applyPurchases(ctx, t, calls, attempts == 1)
	})
	if err == nil {
		return
	}
	if len(calls) == 1 && !errors.Is(err, errAlone) && !errors.Is(err, ledger.ErrKnownKey) {
		calls[0].outcome, calls[0].err = "", err
		return
	}
	for _, c := range calls {
		c.outcome, c.err = s.handleAlone(ctx, c.ev, c.payload, matched{payment: c.target, session: c.sess}, nil, c.received, nil)
	}
}

// applyPurchases decides each event as applySession does, and writes the
// batch with one statement per table: the users' locks (in id order), the
// payments read again under them, the grants (see ledger.GrantMany), the
// payments' new states, and the events' records.
func (s *Service) applyPurchases(ctx context.Context, t *ledger.Tx, calls []*purchase, firstAttempt bool) error {
	userIDs := make([]string, len(calls))
	paymentIDs := make([]string, len(calls))
	eventIDs := make([]string, len(calls))
	for i, c := range calls {
		c.outcome, c.err = "", nil
		userIDs[i], paymentIDs[i], eventIDs[i] = c.target.UserID, c.target.ID, c.ev.ID
	}
	if _, err := t.LockUsers(ctx, userIDs); err != nil {
		return err
	}
	ps, err := t.Ent().Payment.Query().Where(payment.IDIn(paymentIDs...)).All(ctx)
	if err != nil {
		return fmt.Errorf("payments: reading %d payments: %w", len(paymentIDs), err)
	}
	byID := make(map[string]*ent.Payment, len(ps))
	for _, p := range ps {
		byID[p.ID] = p
	}
	// The first attempt trusts the reads made before the transaction (no
	// record), unless a payment moved since: most often a concurrent
	// delivery of its event, applied while this batch waited for the lock.
	// A record written since all the same makes the insert of the records
	// fail and the transaction run again, reading them under the lock.
	readRecords := !firstAttempt
	for _, c := range calls {
		p := byID[c.target.ID]
		if p == nil {
			return fmt.Errorf("payments: payment %s disappeared", c.target.ID)
		}
		if !p.UpdatedAt.Equal(c.target.UpdatedAt) {
			readRecords = true
		}
	}
	prior := map[string]processedevent.Outcome{}
	if readRecords {
		recs, err := t.Ent().ProcessedEvent.Query().Where(processedevent.StripeEventIDIn(eventIDs...)).
			Select(processedevent.FieldStripeEventID, processedevent.FieldOutcome).All(ctx)
		if err != nil {
			return fmt.Errorf("payments: reading %d events: %w", len(eventIDs), err)
		}
		for _, r := range recs {
			if r.Outcome == processedevent.OutcomeDeferred {
				return errAlone
			}
			prior[r.StripeEventID] = r.Outcome
		}
	}

	now := s.now().UTC()
	var grants []ledger.GrantRequest
	var records []*ent.ProcessedEventCreate
	var writes []sessionWrite
	for _, c := range calls {
		if _, seen := prior[c.ev.ID]; seen {
			c.outcome = OutcomeDuplicate
			continue
		}
		p := byID[c.target.ID]
		eff := decideSession(c.ev.Type, p, c.sess)
		if eff.grant {
			grants = append(grants, purchaseGrant(p))
		}
		if eff.write {
			writes = append(writes, newSessionWrite(p, c.sess, eff))
		}
		records = append(records, recordCreate(t.Ent(), c.ev, c.payload, &p.ID, eff.d, c.received, now))
		c.outcome = strings.ToLower(string(eff.d.outcome))
	}
	if err := s.writeSessions(ctx, t.Ent(), writes, now); err != nil {
		return err
	}
	if len(grants) > 0 {
		if _, err := t.GrantMany(ctx, webhookActor, grants); err != nil {
			return fmt.Errorf("payments: granting %d payments: %w", len(grants), err)
		}
	}
	if len(records) == 0 {
		return nil
	}
	err = t.Ent().ProcessedEvent.CreateBulk(records...).Exec(ctx)
	if ent.IsConstraintError(err) {
		// An event of the batch, delivered concurrently elsewhere, was
		// recorded first. Start over: the retry reads the records.
		return fmt.Errorf("payments: an event of the batch was recorded concurrently: %w", ledger.ErrRetry)
	}
	if err != nil {
		return fmt.Errorf("payments: recording %d events: %w", len(records), err)
	}
	return nil
}

// sessionWrite is what a Checkout Session event writes on its payment: the
// session's id, mode and payment intent, and the new state if any.
type sessionWrite struct {
	paymentID, sessionID, intentID string
	livemode                       bool
	status                         payment.Status // "" leaves it
	paid                           bool           // paid_at becomes now
}

func newSessionWrite(p *ent.Payment, sess *stripe.CheckoutSession, eff sessionEffect) sessionWrite {
	w := sessionWrite{paymentID: p.ID, sessionID: sess.ID, livemode: sess.Livemode, status: eff.status, paid: eff.grant}
	if sess.PaymentIntent != nil {
		w.intentID = sess.PaymentIntent.ID
	}
	return w
}

// writeSessions writes payments' session details with one statement per
// kind of change (a batch of paid sessions is one): what differs from row to
// row, the session and payment intent ids, is set by a CASE on the id.
func (s *Service) writeSessions(ctx context.Context, tx *ent.Tx, ws []sessionWrite, now time.Time) error {
	type kind struct {
		livemode, paid bool
		status         payment.Status
	}
	var kinds []kind
	groups := map[kind][]sessionWrite{}
	for _, w := range ws {
		k := kind{livemode: w.livemode, paid: w.paid, status: w.status}
		if _, ok := groups[k]; !ok {
			kinds = append(kinds, k)
		}
		groups[k] = append(groups[k], w)
	}
	for _, k := range kinds {
		g := groups[k]
		var q strings.Builder
		var args []any
		fmt.Fprintf(&q, "UPDATE %s SET %s = ?, %s = ?", payment.Table, payment.FieldLivemode, payment.FieldUpdatedAt)
		args = append(args, k.livemode, now)
		if k.status != "" {
			fmt.Fprintf(&q, ", %s = ?", payment.FieldStatus)
			args = append(args, string(k.status))
		}
		if k.paid {
			fmt.Fprintf(&q, ", %s = ?", payment.FieldPaidAt)
			args = append(args, now)
		}
		fmt.Fprintf(&q, ", %s = CASE %s", payment.FieldStripeCheckoutSessionID, payment.FieldID)
		withIntent := false
		for _, w := range g {
			q.WriteString(" WHEN ? THEN ?")
			args = append(args, w.paymentID, w.sessionID)
			withIntent = withIntent || w.intentID != ""
		}
		q.WriteString(" END")
		if withIntent {
			// A session without a payment intent leaves the payment's.
			fmt.Fprintf(&q, ", %s = CASE %s", payment.FieldStripePaymentIntentID, payment.FieldID)
			for _, w := range g {
				if w.intentID != "" {
					q.WriteString(" WHEN ? THEN ?")
					args = append(args, w.paymentID, w.intentID)
				}
			}
			fmt.Fprintf(&q, " ELSE %s END", payment.FieldStripePaymentIntentID)
		}
		fmt.Fprintf(&q, " WHERE %s IN (", payment.FieldID)
		for i, w := range g {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("?")
			args = append(args, w.paymentID)
		}
		q.WriteString(")")
		res, err := tx.ExecContext(ctx, s.db.Rebind(q.String()), args...)
		if err != nil {
			return fmt.Errorf("payments: updating %d payments: %w", len(g), err)
		}
		if n, err := res.RowsAffected(); err == nil && n != int64(len(g)) {
			return fmt.Errorf("payments: %d of %d payments updated", n, len(g))
		}
	}
	return nil
}
