package payments

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/riverqueue/river"
	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/stripecustomer"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
)

// saveCardAttempts bounds the job's tries at a Stripe that cannot be
// reached. Each is a read, harmless to repeat; River's backoff (attempt⁴
// seconds) puts the last about a day after the first.
const saveCardAttempts = 14

// SaveCardArgs is the job that saves a card for auto-recharge: the card
// of a purchase made with saveCard, once paid (PaymentIntentID), or of a
// completed card setup session (SetupIntentID). It reads the intent from
// Stripe and keeps what SaveCard keeps; running it twice saves the same
// card twice, which changes nothing.
type SaveCardArgs struct {
	UserID          string `json:"user_id"`
	PaymentIntentID string `json:"payment_intent_id,omitempty"`
	SetupIntentID   string `json:"setup_intent_id,omitempty"`
}

// Kind names the job in River's table.
func (SaveCardArgs) Kind() string { return "save_card" }

// InsertOpts: one job per intent while it waits or runs, in the queue of
// the jobs that wait on Stripe.
func (SaveCardArgs) InsertOpts() river.InsertOpts {
	unique := river.UniqueOpts{ByArgs: true, ByState: jobs.UniqueWhileLive.ByState}
	return river.InsertOpts{Queue: RechargeQueue, MaxAttempts: saveCardAttempts, UniqueOpts: unique}
}

// queueSaveCard inserts the job in the transaction of its cause (the
// grant of a purchase, the record of a setup session's event). Without a
// job inserter (a process that writes no jobs) nothing is queued.
func (s *Service) queueSaveCard(ctx context.Context, t *ledger.Tx, args SaveCardArgs) error {
	if s.jobs == nil {
		return nil
	}
	if _, err := s.jobs.InsertTx(ctx, t.SQL(), args); err != nil {
		return fmt.Errorf("payments: queueing the saving of the card of %s: %w", args.UserID, err)
	}
	return nil
}

// purchaseCard is the job that saves the card of a purchase made with
// saveCard, now paid; false when there is none to save (the purchase did
// not ask, or no payment intent is known).
func purchaseCard(p *ent.Payment, sess *stripe.CheckoutSession) (SaveCardArgs, bool) {
	if !p.SaveCard {
		return SaveCardArgs{}, false
	}
	intent := ""
	if sess.PaymentIntent != nil {
		intent = sess.PaymentIntent.ID
	}
	if intent == "" && p.StripePaymentIntentID != nil {
		intent = *p.StripePaymentIntentID // from the event that left it awaiting payment
	}
	if intent == "" {
		return SaveCardArgs{}, false
	}
	return SaveCardArgs{UserID: p.UserID, PaymentIntentID: intent}, true
}

type saveCardWorker struct {
	river.WorkerDefaults[SaveCardArgs]
	s *Service
}

// Work reads the intent with its payment method and saves the card. An
// answer that says nothing (no answer, a 5xx, a rate limit) is retried by
// River; a refusal (a 4xx: the intent does not exist, say) or an intent
// whose card cannot be kept is given up at once, logged and left on the
// job as its error.
func (w *saveCardWorker) Work(ctx context.Context, job *river.Job[SaveCardArgs]) error {
	card, err := w.s.fetchCard(ctx, job.Args)
	var refused *cardRefused
	if errors.As(err, &refused) {
		w.s.logger.WarnContext(ctx, "a card was not saved", "user", job.Args.UserID,
			"payment_intent", job.Args.PaymentIntentID, "setup_intent", job.Args.SetupIntentID, "error", err.Error())
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	return w.s.SaveCard(ctx, job.Args.UserID, card)
}

// cardRefused says a card will not be saved, whatever a retry does.
type cardRefused struct{ reason string }

func (e *cardRefused) Error() string { return "payments: the card is not saved: " + e.reason }

func refuseCard(format string, args ...any) error {
	return &cardRefused{reason: fmt.Sprintf(format, args...)}
}

// fetchCard reads the card the job's intent set up, and checks it may be
// kept for the user: the intent succeeded (a card is set up for later use
// only then), it is a card, and it belongs to the user's Stripe customer
// in this mode (a card of another customer cannot be charged for them).
func (s *Service) fetchCard(ctx context.Context, args SaveCardArgs) (Card, error) {
	if s.stripe == nil {
		return Card{}, refuseCard("payments are not enabled on this server")
	}
	sc, err := s.db.Ent.StripeCustomer.Query().
		Where(stripecustomer.UserID(args.UserID), stripecustomer.Livemode(s.livemode)).
		Only(ctx)
	if ent.IsNotFound(err) {
		return Card{}, refuseCard("user %s has no Stripe customer in %s mode", args.UserID, modeName(s.livemode))
	}
	if err != nil {
		return Card{}, fmt.Errorf("payments: reading the Stripe customer of user %s: %w", args.UserID, err)
	}
	got, err := s.readIntent(ctx, args)
	if err != nil {
		return Card{}, err
	}
	pm := got.method
	switch {
	case !got.succeeded:
		return Card{}, refuseCard("%s has not succeeded", got.id)
	case got.userID != "" && got.userID != args.UserID:
		return Card{}, refuseCard("%s is of another user", got.id)
	case got.customer == nil || got.customer.ID == "":
		return Card{}, refuseCard("%s names no customer", got.id)
	case got.customer.ID != sc.StripeCustomerID:
		return Card{}, refuseCard("%s is of customer %s, not the user's %s", got.id, got.customer.ID, sc.StripeCustomerID)
	case pm == nil || pm.ID == "":
		return Card{}, refuseCard("%s has no payment method", got.id)
	case pm.Type != stripe.PaymentMethodTypeCard || pm.Card == nil:
		return Card{}, refuseCard("the payment method %s of %s is not a card", pm.ID, got.id)
	case pm.Customer != nil && pm.Customer.ID != sc.StripeCustomerID:
		return Card{}, refuseCard("the payment method %s is attached to customer %s, not the user's %s", pm.ID, pm.Customer.ID, sc.StripeCustomerID)
	}
	return Card{
		CustomerID: sc.StripeCustomerID, PaymentMethodID: pm.ID,
		Brand: string(pm.Card.Brand), Last4: pm.Card.Last4,
		ExpMonth: int(pm.Card.ExpMonth), ExpYear: int(pm.Card.ExpYear),
	}, nil
}

// intentCard is what fetchCard needs of a PaymentIntent or a SetupIntent.
type intentCard struct {
	id        string
	succeeded bool
	userID    string // the intent's metadata user_id, when it has one
	customer  *stripe.Customer
	method    *stripe.PaymentMethod
}

// readIntent reads the job's intent with its payment method expanded.
func (s *Service) readIntent(ctx context.Context, args SaveCardArgs) (intentCard, error) {
	switch {
	case args.SetupIntentID != "":
		params := &stripe.SetupIntentParams{}
		params.Context = ctx
		params.AddExpand("payment_method")
		si, err := s.stripe.SetupIntents.Get(args.SetupIntentID, params)
		if err != nil {
			return intentCard{}, cardFetchError("SetupIntent "+args.SetupIntentID, err)
		}
		return intentCard{id: "SetupIntent " + si.ID, succeeded: si.Status == stripe.SetupIntentStatusSucceeded,
			userID: si.Metadata["user_id"], customer: si.Customer, method: si.PaymentMethod}, nil
	case args.PaymentIntentID != "":
		params := &stripe.PaymentIntentParams{}
		params.Context = ctx
		params.AddExpand("payment_method")
		pi, err := s.stripe.PaymentIntents.Get(args.PaymentIntentID, params)
		if err != nil {
			return intentCard{}, cardFetchError("PaymentIntent "+args.PaymentIntentID, err)
		}
		return intentCard{id: "PaymentIntent " + pi.ID, succeeded: pi.Status == stripe.PaymentIntentStatusSucceeded,
			userID: pi.Metadata["user_id"], customer: pi.Customer, method: pi.PaymentMethod}, nil
	}
	return intentCard{}, refuseCard("the job names no intent")
}

// cardFetchError sorts a failed read: Stripe's refusal of the request is
// final; anything that says nothing of Stripe's answer is tried again.
func cardFetchError(what string, err error) error {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return fmt.Errorf("payments: reading %s: %w", what, err)
	}
	switch {
	case se.HTTPStatusCode >= 500, se.HTTPStatusCode == 0, se.HTTPStatusCode == http.StatusConflict,
		se.HTTPStatusCode == http.StatusTooManyRequests, se.Code == stripe.ErrorCodeLockTimeout,
		se.HTTPStatusCode == http.StatusUnauthorized, se.HTTPStatusCode == http.StatusForbidden:
		return fmt.Errorf("payments: reading %s: %w", what, err)
	}
	return refuseCard("Stripe refused to read %s: %s", what, se.Msg)
}
