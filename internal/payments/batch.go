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
			update := t.Ent().Payment.Update().Where(payment.ID(p.ID)).
				SetStripeCheckoutSessionID(c.sess.ID).SetLivemode(c.sess.Livemode).SetUpdatedAt(now)
			if pi := c.sess.PaymentIntent; pi != nil && pi.ID != "" {
				update.SetStripePaymentIntentID(pi.ID)
			}
			if eff.status != "" {
				update.SetStatus(eff.status)
			}
			if eff.grant {
				update.SetPaidAt(now)
			}
			if err := update.Exec(ctx); err != nil {
				return fmt.Errorf("payments: updating payment %s: %w", p.ID, err)
			}
		}
		records = append(records, recordCreate(t.Ent(), c.ev, c.payload, &p.ID, eff.d, c.received, now))
		c.outcome = strings.ToLower(string(eff.d.outcome))
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
