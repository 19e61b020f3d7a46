package payments

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/stripecustomer"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/pulid"
)

// CardSetupRequest asks for a Checkout Session that saves a card for
// auto-recharge without buying anything.
type CardSetupRequest struct {
	// SuccessURL and CancelURL are where Stripe sends the user back, as
	// for a purchase.
	SuccessURL string
	CancelURL  string
	// IdempotencyKey is the caller's key, scoped to the user: the same key
	// with the same request returns the same session.
	IdempotencyKey string
}

// CardSetupResult is a started card setup.
type CardSetupResult struct {
	SessionID string
	// URL is Stripe's hosted page; empty once the session has completed
	// or expired (a replay of an old request).
	URL string
	// Replayed is true when an earlier request with the same idempotency
	// key made the session.
	Replayed bool
}

// cardSetupOp names card setups in idempotency fingerprints.
const cardSetupOp = "card_setup"

// cardSetupPurpose is the metadata purpose of Tally's setup sessions: the
// webhook saves the cards of those only.
const cardSetupPurpose = "card_setup"

// cardSetupRecord is what a card setup's idempotency record remembers:
// the attempt that talks to Stripe (its Stripe idempotency key derives
// from it), and the session once Stripe has made it.
type cardSetupRecord struct {
	Attempt   string `json:"attempt"`
	SessionID string `json:"session_id,omitempty"`
}

// Validate checks a card setup request.
func (r CardSetupRequest) Validate() error {
	if err := validateReturnURL("successUrl", r.SuccessURL); err != nil {
		return err
	}
	return validateReturnURL("cancelUrl", r.CancelURL)
}

func (r CardSetupRequest) keyedRequest(userID string) (idempotency.Request, error) {
	scope := ledger.Actor{Kind: ledger.ActorUser, ID: userID}.String()
	return idempotency.NewRequest(scope, r.IdempotencyKey, cardSetupOp,
		struct{ SuccessURL, CancelURL string }{r.SuccessURL, r.CancelURL})
}

// CreateCardSetupSession opens a Checkout Session in setup mode for the
// user's Stripe customer. Nothing is saved here: when the user has entered
// a card, Stripe's checkout.session.completed names the session's
// SetupIntent, and the job it queues saves the card (see matchCardSetup).
//
// Idempotency, as for a purchase but without a payment: the caller's key
// is recorded first with a new attempt id, and the Stripe idempotency key
// derives from the user, the caller's key and that attempt, so that
// concurrent requests with the key, and a retry of one that stopped
// before storing its session, meet the same session in Stripe. The
// session's id is then stored in the key's record; a retry returns that
// session, and the key with another request is IDEMPOTENCY_KEY_REUSED.
// When Stripe refuses or cannot be reached, the attempt is forgotten with
// its record: Stripe replays a failed answer to a reused key for 24
// hours, so the caller's retry must be a new attempt.
func (s *Service) CreateCardSetupSession(ctx context.Context, userID string, req CardSetupRequest) (*CardSetupResult, error) {
	if s.stripe == nil {
		return nil, errStripeDisabled()
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	key, err := req.keyedRequest(userID)
	if err != nil {
		return nil, err
	}
	var prior cardSetupRecord
	if found, err := idempotency.Find(ctx, s.db.Ent, key, &prior); err != nil {
		return nil, err
	} else if found && prior.SessionID != "" {
		return s.resumeCardSetup(ctx, prior.SessionID)
	}
	u, err := loadBuyer(ctx, s.db.Ent, userID, "cards cannot be saved")
	if err != nil {
		return nil, err
	}
	customerID, err := s.ensureStripeCustomer(ctx, u)
	if err != nil {
		return nil, err
	}
	rec, resumed, err := s.beginCardSetup(ctx, u.ID, key)
	if err != nil {
		return nil, err
	}
	if rec.SessionID != "" {
		return s.resumeCardSetup(ctx, rec.SessionID)
	}
	sess, err := s.openSetupSession(ctx, u.ID, customerID, req, rec.Attempt)
	if err != nil {
		// A 409 is a concurrent request with this very attempt still
		// talking to Stripe; it owns the attempt.
		if !stripeInFlight(err) {
			if ferr := s.abandonCardSetup(ctx, u.ID, key, rec.Attempt); ferr != nil {
				return nil, errors.Join(err, ferr)
			}
		}
		return nil, err
	}
	stored, err := s.finishCardSetup(ctx, u.ID, key, cardSetupRecord{Attempt: rec.Attempt, SessionID: sess.ID})
	if err != nil {
		return nil, err
	}
	if stored != sess.ID {
		return s.resumeCardSetup(ctx, stored)
	}
	return &CardSetupResult{SessionID: sess.ID, URL: sess.URL, Replayed: resumed}, nil
}

// cardSetupTx runs fn under the user's lock: the key is in the user's
// scope, which their movements' keys share, and the lock orders these
// lookups with theirs (see insertPendingPayment).
func (s *Service) cardSetupTx(ctx context.Context, userID string, key idempotency.Request,
	fn func(context.Context, *ent.Client, *cardSetupRecord) error,
) error {
	return s.ledger.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
		if _, err := tx.LockUser(ctx, userID); err != nil {
			return err
		}
		c := tx.Ent().Client()
		var rec cardSetupRecord
		found, err := idempotency.Find(ctx, c, key, &rec)
		if err != nil {
			return err
		}
		if !found {
			return fn(ctx, c, nil)
		}
		if rec.Attempt == "" && rec.SessionID == "" {
			return fmt.Errorf("payments: the record of idempotency key %q names no card setup", key.Key.Key)
		}
		return fn(ctx, c, &rec)
	})
}

// beginCardSetup records the key with a new attempt, or returns the
// record a request with the key left: finished (with its session) or
// still talking to Stripe (resumed is then true).
func (s *Service) beginCardSetup(ctx context.Context, userID string, key idempotency.Request) (rec cardSetupRecord, resumed bool, err error) {
	err = s.cardSetupTx(ctx, userID, key, func(ctx context.Context, c *ent.Client, prior *cardSetupRecord) error {
		if prior != nil {
			rec, resumed = *prior, true
			return nil
		}
		rec, resumed = cardSetupRecord{Attempt: pulid.New("csa")}, false
		return idempotency.Store(ctx, c.IdempotencyKey, s.now().UTC(), idempotency.Entry{Request: key, Result: rec})
	})
	return rec, resumed, err
}

// finishCardSetup stores the session of an attempt in the key's record
// and returns the session the record names: this one, or one a
// concurrent attempt stored first.
func (s *Service) finishCardSetup(ctx context.Context, userID string, key idempotency.Request, done cardSetupRecord) (string, error) {
	sessionID := done.SessionID
	// The session exists in Stripe: it is stored even when the caller has
	// gone away, so that a retry finds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := s.cardSetupTx(ctx, userID, key, func(ctx context.Context, c *ent.Client, prior *cardSetupRecord) error {
		if prior != nil && prior.SessionID != "" {
			sessionID = prior.SessionID
			return nil
		}
		if prior != nil {
			if err := idempotency.Forget(ctx, c.IdempotencyKey, key.Key); err != nil {
				return err
			}
		}
		return idempotency.Store(ctx, c.IdempotencyKey, s.now().UTC(), idempotency.Entry{Request: key, Result: done})
	})
	return sessionID, err
}

// abandonCardSetup forgets an attempt Stripe did not answer with a
// session, so that the caller's retry is a new one.
func (s *Service) abandonCardSetup(ctx context.Context, userID string, key idempotency.Request, attempt string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := s.cardSetupTx(ctx, userID, key, func(ctx context.Context, c *ent.Client, prior *cardSetupRecord) error {
		if prior == nil || prior.SessionID != "" || prior.Attempt != attempt {
			return nil
		}
		return idempotency.Forget(ctx, c.IdempotencyKey, key.Key)
	})
	if err != nil {
		return fmt.Errorf("payments: forgetting card setup attempt %s after Stripe failed (a retry with the same key finishes it): %w", attempt, err)
	}
	return nil
}

// openSetupSession asks Stripe for the setup-mode session of an attempt.
// Only what the request fixes is sent, so that the attempt's idempotency
// key never meets other parameters.
func (s *Service) openSetupSession(ctx context.Context, userID, customerID string, req CardSetupRequest, attempt string) (*stripe.CheckoutSession, error) {
	metadata := map[string]string{"user_id": userID, "purpose": cardSetupPurpose}
	params := &stripe.CheckoutSessionParams{
		Mode:               stripe.String(string(stripe.CheckoutSessionModeSetup)),
		Customer:           stripe.String(customerID),
		SuccessURL:         stripe.String(req.SuccessURL),
		CancelURL:          stripe.String(req.CancelURL),
		PaymentMethodTypes: stripe.StringSlice([]string{string(stripe.PaymentMethodTypeCard)}),
		Metadata:           metadata,
		SetupIntentData:    &stripe.CheckoutSessionSetupIntentDataParams{Metadata: metadata},
	}
	params.Context = ctx
	params.SetIdempotencyKey(cardSetupStripeKey(userID, req.IdempotencyKey, attempt))
	sess, err := s.stripe.CheckoutSessions.New(params)
	if err != nil {
		return nil, stripeError("creating the card setup session of user "+userID, err)
	}
	return sess, nil
}

// cardSetupStripeKey is the Stripe idempotency key of a card setup
// attempt. The caller's key may be as long as Stripe's limit, so it is
// hashed with the user and the attempt rather than appended.
func cardSetupStripeKey(userID, key, attempt string) string {
	sum := sha256.Sum256([]byte(userID + "\x00" + key + "\x00" + attempt))
	return "tally-card-setup-" + hex.EncodeToString(sum[:])
}

// resumeCardSetup answers a retried request with its session.
func (s *Service) resumeCardSetup(ctx context.Context, sessionID string) (*CardSetupResult, error) {
	params := &stripe.CheckoutSessionParams{}
	params.Context = ctx
	sess, err := s.stripe.CheckoutSessions.Get(sessionID, params)
	if err != nil {
		return nil, stripeError("reading Checkout Session "+sessionID, err)
	}
	return &CardSetupResult{SessionID: sess.ID, URL: sess.URL, Replayed: true}, nil
}

// cardSetup is what the completion of a card setup session saves: the
// card its SetupIntent set up, for the user.
type cardSetup struct {
	userID, setupIntentID string
}

// matchCardSetup decides, before the event's transaction, whether a
// setup-mode Checkout Session event saves a card: only the completion of
// one of Tally's card setup sessions (metadata purpose card_setup) whose
// user has, in this mode, the session's customer as their Stripe customer.
// Anything else is recorded and saves nothing: a card of another customer
// could not be charged for this user, and a session Tally did not make
// (another integration of the same Stripe account) is not Tally's to use.
func (s *Service) matchCardSetup(ctx context.Context, ev *stripe.Event, sess *stripe.CheckoutSession) (matched, error) {
	refuse := func(d decision) (matched, error) { return matched{mismatch: &d}, nil }
	if ev.Type != "checkout.session.completed" {
		return refuse(ignored("a card setup session's %s saves nothing", ev.Type))
	}
	if sess.Metadata["purpose"] != cardSetupPurpose {
		return refuse(ignored("a setup-mode session that is not one of Tally's card setups"))
	}
	uid := sess.Metadata["user_id"]
	switch {
	case uid == "":
		return refuse(failed("the card setup session names no user"))
	case sess.Customer == nil || sess.Customer.ID == "":
		return refuse(failed("the card setup session has no customer"))
	case sess.SetupIntent == nil || sess.SetupIntent.ID == "":
		return refuse(failed("the card setup session has no SetupIntent"))
	}
	// The Stripe customer's row names an existing user (a foreign key).
	sc, err := s.db.Ent.StripeCustomer.Query().
		Where(stripecustomer.UserID(uid), stripecustomer.Livemode(s.livemode)).
		Only(ctx)
	if ent.IsNotFound(err) {
		return refuse(failed("no user %q with a Stripe customer in %s mode", apperr.Clip(uid, 64), modeName(s.livemode)))
	}
	if err != nil {
		return matched{}, fmt.Errorf("payments: reading the Stripe customer of user %s: %w", uid, err)
	}
	if sc.StripeCustomerID != sess.Customer.ID {
		return refuse(failed("session customer %q is not the user's Stripe customer", apperr.Clip(sess.Customer.ID, 64)))
	}
	return matched{cardSetup: &cardSetup{userID: uid, setupIntentID: sess.SetupIntent.ID}}, nil
}

// applyCardSetup queues the job that saves the card, in the transaction
// that records the event: once per event, and never a record without its
// job.
func (s *Service) applyCardSetup(ctx context.Context, t *ledger.Tx, c *cardSetup) (*decision, error) {
	if s.jobs == nil {
		d := failed("this process queues no jobs: the card was not saved")
		return &d, nil
	}
	if err := s.queueSaveCard(ctx, t, SaveCardArgs{UserID: c.userID, SetupIntentID: c.setupIntentID}); err != nil {
		return nil, err
	}
	d := applied()
	return &d, nil
}
