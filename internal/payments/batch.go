package payments

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"entgo.io/ent/dialect/sql"
	"github.com/stripe/stripe-go/v76"
	"go.opentelemetry.io/otel/trace"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/batch"
	"github.com/tally-billing/tally/internal/database"
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

// purchase is one Checkout Session event on its way through a batch.
type purchase struct {
	ev       *stripe.Event
	payload  []byte
	sess     *stripe.CheckoutSession
	ref      string // the payment id the session names
	received time.Time
	// parent is the span of the delivery: the batch's transaction is traced
	// under its first event's.
	parent trace.SpanContext

	outcome string
	err     error
	// later is set when the batch held another event of its payment or its
	// user: it is applied on its own once the batch has committed.
	later bool
}

// key keeps two events of one payment out of one batch.
func (c *purchase) key() string {
	if c.ref != "" {
		return "payment:" + c.ref
	}
	return "session:" + c.sess.ID
}

func newPurchaseBatcher(s *Service) *batch.Batcher[*purchase] {
	return batch.New(s.runPurchases, (*purchase).key,
		batch.Options{MaxBatch: maxPurchaseBatch, MaxInFlight: maxPurchaseBatchesInFlight, Timeout: purchaseBatchTimeout, OnePerKey: true})
}

// errAlone sends a batch's events back to be applied one by one: one of them
// needs what only that path does (completing a deferred record).
var errAlone = errors.New("payments: an event of the batch is to be applied alone")

// runPurchases answers the redeliveries of decided events from one read of
// the batch's records, outside any transaction (a decided event's record
// never changes), applies the rest in one transaction, then the events it
// left for later, each on its own. When the transaction fails, its events
// are applied on their own, so that one event cannot fail the others.
//
// Except when the database is unavailable (unreachable, or the batch's
// COMMIT went unanswered): then every event of the batch gets that error,
// and Stripe, answered 503, delivers each again later; a redelivery of an
// event whose batch did commit finds its record. Applying them again at
// once would be retrying an unknown outcome, against a database that has
// just failed, once per event.
func (s *Service) runPurchases(ctx context.Context, calls []*purchase) {
	if sc := calls[0].parent; sc.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, sc)
	}
	pending, err := s.answerDecided(ctx, calls)
	if err != nil {
		pending, err = calls, database.Classify(err)
	} else if len(pending) > 0 {
		attempts := 0
		err = s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
			attempts++
			return s.applyPurchases(ctx, t, pending, attempts > 1)
		})
	}
	unavailable := apperr.CodeOf(err) == apperr.Unavailable
	if err != nil {
		if len(calls) == 1 && !errors.Is(err, errAlone) && !errors.Is(err, ledger.ErrKnownKey) {
			calls[0].outcome, calls[0].err = "", err
			return
		}
		for _, c := range pending {
			c.later = true
		}
	}
	for _, c := range calls {
		switch {
		case !c.later:
		case unavailable:
			c.outcome, c.err = "", err
		default:
			c.outcome, c.err = s.handleUnbatched(ctx, c.ev, c.payload, c.received, nil)
		}
	}
}

// answerDecided reads the records of the batch's events: a decided one is a
// duplicate, a deferred one is left for later (completing it is the single
// path's), and the others are returned. The read is trusted on the first
// attempt: a record written since makes the insert of the batch's records
// fail, and the retry reads them under the locks.
func (s *Service) answerDecided(ctx context.Context, calls []*purchase) ([]*purchase, error) {
	prior, err := eventOutcomes(ctx, s.db.Ent.ProcessedEvent, calls)
	if err != nil {
		return nil, err
	}
	var pending []*purchase
	for _, c := range calls {
		c.outcome, c.err, c.later = "", nil, false
		switch o, seen := prior[c.ev.ID]; {
		case !seen:
			pending = append(pending, c)
		case o == processedevent.OutcomeDeferred:
			c.later = true
		default:
			c.outcome = OutcomeDuplicate
		}
	}
	return pending, nil
}

// eventOutcomes are the outcomes of the events' records, by event id.
func eventOutcomes(ctx context.Context, c *ent.ProcessedEventClient, calls []*purchase) (map[string]processedevent.Outcome, error) {
	ids := make([]string, len(calls))
	for i, call := range calls {
		ids[i] = call.ev.ID
	}
	recs, err := c.Query().Where(processedevent.StripeEventIDIn(ids...)).
		Select(processedevent.FieldStripeEventID, processedevent.FieldOutcome).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("payments: reading %d events: %w", len(ids), err)
	}
	outcomes := make(map[string]processedevent.Outcome, len(recs))
	for _, r := range recs {
		outcomes[r.StripeEventID] = r.Outcome
	}
	return outcomes, nil
}

// applyPurchases decides each event of the batch as applySession decides
// one, with one statement per step for the whole batch: lock the users of
// the payments the sessions name (in id order), read those payments under
// the locks (and, on a retry, the events' records), then write the
// payments' new states, the grants (see ledger.GrantMany) and the records.
func (s *Service) applyPurchases(ctx context.Context, t *ledger.Tx, calls []*purchase, readRecords bool) error {
	ps, prior, err := s.readPurchases(ctx, t, calls, readRecords)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	w := decidePurchases(t.Ent(), calls, ps, prior, now)
	return s.writePurchases(ctx, t, w, now)
}

// readPurchases locks the users of the payments the batch's sessions name
// and reads those payments under the locks; with readRecords (a retry) it
// also reads the events' records. A record still deferred is errAlone: the
// batch does not complete deferred records.
func (s *Service) readPurchases(ctx context.Context, t *ledger.Tx, calls []*purchase, readRecords bool,
) ([]*ent.Payment, map[string]processedevent.Outcome, error) {
	var refs, sessionIDs []any
	for _, c := range calls {
		c.outcome, c.err, c.later = "", nil, false
		if c.ref != "" {
			refs = append(refs, c.ref)
		}
		if c.sess.ID != "" {
			sessionIDs = append(sessionIDs, c.sess.ID)
		}
	}
	named := func(id, sessionID string) *sql.Predicate {
		return sql.Or(sql.In(id, refs...), sql.In(sessionID, sessionIDs...))
	}
	ps, err := s.lockPurchases(ctx, t, named)
	if err != nil {
		return nil, nil, fmt.Errorf("payments: reading the payments of %d events: %w", len(calls), err)
	}
	prior := map[string]processedevent.Outcome{}
	if readRecords {
		if prior, err = eventOutcomes(ctx, t.Ent().ProcessedEvent, calls); err != nil {
			return nil, nil, err
		}
		for _, o := range prior {
			if o == processedevent.OutcomeDeferred {
				return nil, nil, errAlone
			}
		}
	}
	return ps, prior, nil
}

// purchaseWrites is what a batch decided to write: the payments' new
// states, the grants and the events' records.
type purchaseWrites struct {
	grants  []ledger.GrantRequest
	records []*ent.ProcessedEventCreate
	writes  []sessionWrite
	cards   []SaveCardArgs // the cards of paid purchases made with saveCard
}

// decidePurchases decides each event of the batch on the payments read
// under the locks, setting each call's outcome (or later), and collects
// what the decisions write. It reads and writes nothing itself.
func decidePurchases(tx *ent.Tx, calls []*purchase, ps []*ent.Payment, prior map[string]processedevent.Outcome, now time.Time) purchaseWrites {
	var w purchaseWrites
	taken := map[string]bool{} // payments and users with an event in this batch
	for _, c := range calls {
		if _, seen := prior[c.ev.ID]; seen {
			c.outcome = OutcomeDuplicate
			continue
		}
		var p *ent.Payment
		var d decision
		switch matches := paymentsNamed(ps, c); len(matches) {
		case 0:
			d = failed("no payment matches this event")
		case 1:
			p = matches[0]
			if taken[p.ID] || taken[p.UserID] {
				// Its grant would start from a balance this batch changes.
				c.later = true
				continue
			}
			taken[p.ID], taken[p.UserID] = true, true
			eff := decideSession(c.ev.Type, p, c.sess)
			if eff.grant {
				w.grants = append(w.grants, purchaseGrant(p))
				if job, ok := purchaseCard(p, c.sess); ok {
					w.cards = append(w.cards, job)
				}
			}
			if eff.write {
				w.writes = append(w.writes, newSessionWrite(p, c.sess, eff))
			}
			d = eff.d
		default:
			d = failed("the event matches more than one payment")
		}
		var paymentID *string
		if p != nil {
			paymentID = &p.ID
		}
		w.records = append(w.records, recordCreate(tx, c.ev, c.payload, paymentID, d, c.received, now))
		c.outcome = strings.ToLower(string(d.outcome))
	}
	return w
}

// writePurchases writes what decidePurchases decided: the payments and
// the events' records (on PostgreSQL carried by the grants' statement),
// the grants, and the jobs that save cards. A record written concurrently
// fails the whole batch, which is tried again.
func (s *Service) writePurchases(ctx context.Context, t *ledger.Tx, w purchaseWrites, now time.Time) error {
	if err := s.writeSessionsAndRecords(ctx, t, sessionUpdates(t, w.writes, now), w.records); err != nil {
		return err
	}
	if len(w.grants) > 0 {
		if _, err := t.GrantMany(ctx, webhookActor, w.grants); err != nil {
			return fmt.Errorf("payments: granting %d payments: %w", len(w.grants), err)
		}
	}
	// Few purchases ask to save the card: one insert each.
	for _, job := range w.cards {
		if err := s.queueSaveCard(ctx, t, job); err != nil {
			return err
		}
	}
	return nil
}

// paymentsNamed are the payments a session names, by id or by session id
// (as match finds them).
func paymentsNamed(ps []*ent.Payment, c *purchase) []*ent.Payment {
	var out []*ent.Payment
	for _, p := range ps {
		if (c.ref != "" && p.ID == c.ref) || (c.sess.ID != "" && p.StripeCheckoutSessionID != nil && *p.StripeCheckoutSessionID == c.sess.ID) {
			out = append(out, p)
		}
	}
	return out
}

// sessionWrite is what a Checkout Session event writes on its payment: the
// session's id and payment intent, and the new state if any. Not its mode:
// a payment's livemode is the server's, set when it is created, and an
// event of the other mode is refused before it gets here.
type sessionWrite struct {
	paymentID, sessionID, intentID string
	status                         payment.Status // "" leaves it
	paid                           bool           // paid_at becomes now
	facts                          paymentFacts   // for the outbound event of the move
}

func newSessionWrite(p *ent.Payment, sess *stripe.CheckoutSession, eff sessionEffect) sessionWrite {
	w := sessionWrite{paymentID: p.ID, sessionID: sess.ID, status: eff.status, paid: eff.grant, facts: factsOf(p)}
	if sess.PaymentIntent != nil {
		w.intentID = sess.PaymentIntent.ID
	}
	return w
}

// sessionUpdates are the updates that write payments' session details,
// one per kind of change (a batch of paid sessions is one): what differs
// from row to row, the session and payment intent ids, is set by a CASE on
// the id. The moves they make are told (outbound events).
func sessionUpdates(t *ledger.Tx, ws []sessionWrite, now time.Time) []*database.RowUpdate {
	for _, w := range ws {
		if typ, ok := sessionEvent(w.status); ok && w.status != w.facts.status {
			f := w.facts
			f.status = w.status
			tell(t, typ, f, nil)
		}
	}
	type kind struct {
		paid   bool
		status payment.Status
	}
	var kinds []kind
	var updates []*database.RowUpdate
	groups := map[kind][]sessionWrite{}
	for _, w := range ws {
		k := kind{paid: w.paid, status: w.status}
		if _, ok := groups[k]; !ok {
			kinds = append(kinds, k)
		}
		groups[k] = append(groups[k], w)
	}
	for _, k := range kinds {
		g := groups[k]
		ids := make([]string, len(g))
		sessions := make(map[string]any, len(g))
		intents := map[string]any{} // a session without one leaves the payment's
		for i, w := range g {
			ids[i], sessions[w.paymentID] = w.paymentID, w.sessionID
			if w.intentID != "" {
				intents[w.paymentID] = w.intentID
			}
		}
		u := database.UpdateRows(payment.Table, ids).Set(payment.FieldUpdatedAt, now)
		if k.status != "" {
			u.Set(payment.FieldStatus, string(k.status))
		}
		if k.paid {
			u.Set(payment.FieldPaidAt, now)
		}
		u.SetEach(payment.FieldStripeCheckoutSessionID, "", sessions)
		if len(intents) > 0 {
			u.SetEach(payment.FieldStripePaymentIntentID, "", intents)
		}
		updates = append(updates, u)
	}
	return updates
}
