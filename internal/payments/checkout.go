package payments

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditpackage"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/stripecustomer"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
)

// CheckoutRequest asks to buy one credit pack through Stripe Checkout.
type CheckoutRequest struct {
	PackageID string
	// SuccessURL and CancelURL are where Stripe sends the buyer back; absolute
	// http(s) URLs. SuccessURL may contain Stripe's {CHECKOUT_SESSION_ID}.
	SuccessURL string
	CancelURL  string
	// IdempotencyKey is the caller's key, scoped to the user: the same key
	// with the same request returns the same purchase.
	IdempotencyKey string
	// SaveCard asks Checkout to keep the card for auto-recharge (Stripe
	// attaches it to the customer once the payment succeeds; the webhook
	// then queues the job that saves it, see savecard_job.go).
	SaveCard bool
}

// CheckoutResult is a started purchase.
type CheckoutResult struct {
	// Payment is the purchase, PENDING until Stripe reports it paid.
	Payment   *ent.Payment
	SessionID string
	// URL is Stripe's hosted payment page; empty once the session has
	// completed or expired (a replay of an old request).
	URL string
	// Replayed is true when an earlier request with the same idempotency key
	// made the purchase.
	Replayed bool
}

// checkoutOp names checkout in idempotency fingerprints, so that a key the
// user already spent on a ledger operation is refused here, and vice versa.
const checkoutOp = "checkout"

// maxReturnURL bounds success and cancel URLs well below Stripe's limit.
const maxReturnURL = 2048

// CreateCheckoutSession starts the purchase of a credit pack: it makes sure
// the user has a Stripe customer, writes a PENDING Payment with the pack's
// price and credits, and opens a Checkout Session for it whose
// client_reference_id is the payment id. Credits arrive later, from the
// webhook.
//
// Idempotency: the caller's key is recorded (scope "user:<id>", as the
// ledger's keys) in the same transaction as the pending Payment and points to
// it. A retry with the key returns that payment and its session, finishing
// the Stripe call first if the earlier request stopped before storing the
// session; because the Stripe idempotency key derives from the payment id, a
// finished retry meets the same session in Stripe. The key with another
// request is IDEMPOTENCY_KEY_REUSED.
//
// Failure: when Stripe refuses or cannot be reached, the pending Payment and
// the key's record are deleted together (a payment without a session is not
// a purchase anyone can pay), so the caller may retry with the same key. The
// next attempt is a new payment id, hence a new Stripe idempotency key:
// Stripe replays a failed answer for a reused key for 24 hours.
func (s *Service) CreateCheckoutSession(ctx context.Context, userID string, req CheckoutRequest) (*CheckoutResult, error) {
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
	prior, err := checkoutPrior(ctx, s.db.Ent, key)
	if err != nil {
		return nil, err
	}
	if prior != nil {
		return s.resumeCheckout(ctx, key.Key, req, prior)
	}
	// Checked before Stripe hears of the user, and again when writing.
	u, _, err := loadCheckout(ctx, s.db.Ent, userID, req.PackageID)
	if err != nil {
		return nil, err
	}
	customerID, err := s.ensureStripeCustomer(ctx, u)
	if err != nil {
		return nil, err
	}
	p, pkg, prior, err := s.insertPendingPayment(ctx, key, req, userID)
	if err != nil {
		return nil, err
	}
	if prior != nil {
		// A concurrent request with the key recorded its purchase first.
		return s.resumeCheckout(ctx, key.Key, req, prior)
	}
	return s.openCheckoutSession(ctx, key.Key, req, p, pkg, customerID, false)
}

// Validate checks a checkout request.
func (r CheckoutRequest) Validate() error {
	if r.PackageID == "" {
		return apperr.Invalid("packageId", "packageId is required")
	}
	if err := validateReturnURL("successUrl", r.SuccessURL); err != nil {
		return err
	}
	return validateReturnURL("cancelUrl", r.CancelURL)
}

// validateReturnURL accepts absolute http(s) URLs only: Stripe redirects the
// buyer's browser there, and a relative or javascript: URL is a bug or an
// attack.
func validateReturnURL(name, raw string) error {
	if raw == "" {
		return apperr.Invalid(name, "%s is required", name)
	}
	if len(raw) > maxReturnURL {
		return apperr.Invalid(name, "%s is longer than %d characters", name, maxReturnURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		strings.ContainsAny(raw, " \t\r\n") {
		return apperr.Invalid(name, "%s must be an absolute http or https URL", name)
	}
	return nil
}

// keyedRequest is the request's idempotency key, scoped to the user as the
// ledger's keys are, with what its fingerprint covers.
func (r CheckoutRequest) keyedRequest(userID string) (idempotency.Request, error) {
	scope := ledger.Actor{Kind: ledger.ActorUser, ID: userID}.String()
	// SaveCard is left out when false, so that keys recorded before it
	// existed keep their fingerprints.
	return idempotency.NewRequest(scope, r.IdempotencyKey, checkoutOp, struct {
		PackageID, SuccessURL, CancelURL string
		SaveCard                         bool `json:",omitempty"`
	}{r.PackageID, r.SuccessURL, r.CancelURL, r.SaveCard})
}

// checkoutRecord is what a checkout's idempotency record remembers.
type checkoutRecord struct {
	PaymentID string `json:"payment_id"`
}

// checkoutPrior returns the payment of an earlier request with the key,
// nil if there is none, or IDEMPOTENCY_KEY_REUSED if that request was
// another.
func checkoutPrior(ctx context.Context, c *ent.Client, key idempotency.Request) (*ent.Payment, error) {
	var stored checkoutRecord
	found, err := idempotency.Find(ctx, c, key, &stored)
	if !found || err != nil {
		return nil, err
	}
	if stored.PaymentID == "" {
		return nil, fmt.Errorf("payments: idempotency key %q does not name a payment", key.Key.Key)
	}
	p, err := c.Payment.Get(ctx, stored.PaymentID)
	if ent.IsNotFound(err) {
		// The failed attempt's cleanup committed between the two reads; the
		// key is free again.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading payment %s of idempotency key %q: %w", stored.PaymentID, key.Key.Key, err)
	}
	return p, nil
}

// resumeCheckout answers a retried request with its first purchase, opening
// the session first if the earlier request stopped before storing it.
func (s *Service) resumeCheckout(ctx context.Context, key idempotency.Key, req CheckoutRequest, p *ent.Payment) (*CheckoutResult, error) {
	if p.StripeCheckoutSessionID != nil {
		params := &stripe.CheckoutSessionParams{}
		params.Context = ctx
		sess, err := s.stripe.CheckoutSessions.Get(*p.StripeCheckoutSessionID, params)
		if err != nil {
			return nil, stripeError("reading Checkout Session "+*p.StripeCheckoutSessionID, err)
		}
		return &CheckoutResult{Payment: p, SessionID: sess.ID, URL: sess.URL, Replayed: true}, nil
	}
	// Finishing the first request: the pack may have been withdrawn since,
	// but the buyer was promised this purchase.
	u, err := s.db.Ent.User.Get(ctx, p.UserID)
	if err != nil {
		return nil, fmt.Errorf("payments: reading user %s of payment %s: %w", p.UserID, p.ID, err)
	}
	pkg, err := s.db.Ent.CreditPackage.Get(ctx, packageID(p))
	if err != nil {
		return nil, fmt.Errorf("payments: reading package %s of payment %s: %w", packageID(p), p.ID, err)
	}
	customerID, err := s.ensureStripeCustomer(ctx, u)
	if err != nil {
		return nil, err
	}
	return s.openCheckoutSession(ctx, key, req, p, pkg, customerID, true)
}

// loadCheckout reads the buyer and the pack and checks that the one may buy
// the other.
func loadCheckout(ctx context.Context, c *ent.Client, userID, packageID string) (*ent.User, *ent.CreditPackage, error) {
	u, err := loadBuyer(ctx, c, userID, "purchases are not possible")
	if err != nil {
		return nil, nil, err
	}
	pkg, err := c.CreditPackage.Query().Where(creditpackage.ID(packageID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil, apperr.New(apperr.NotFound, "no credit package with id %q", packageID)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("payments: reading credit package %s: %w", packageID, err)
	}
	if !pkg.Active {
		return nil, nil, apperr.Invalid("packageId", "credit package %q is no longer on sale", packageID)
	}
	return u, pkg, nil
}

// loadBuyer reads a user about to pay Stripe, or to save a card there: one
// that exists and is not frozen (refused is what is not possible then).
func loadBuyer(ctx context.Context, c *ent.Client, userID, refused string) (*ent.User, error) {
	u, err := c.User.Query().Where(user.ID(userID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no user with id %q", userID)
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading user %s: %w", userID, err)
	}
	if u.Status == user.StatusFrozen {
		return nil, apperr.New(apperr.AccountFrozen, "the account is frozen; %s", refused)
	}
	return u, nil
}

// ensureStripeCustomer returns the user's Stripe customer in the key's mode,
// creating it once. Concurrent first purchases all ask Stripe with the same
// idempotency key, so within Stripe's 24-hour window they get the same
// customer; the unique (user_id, livemode) index keeps one row, and the
// losers read the winner's. Only immutable fields are sent, so that the
// deterministic key never meets different parameters.
func (s *Service) ensureStripeCustomer(ctx context.Context, u *ent.User) (string, error) {
	livemode := s.livemode
	existing := func() (*ent.StripeCustomer, error) {
		return s.db.Ent.StripeCustomer.Query().
			Where(stripecustomer.UserID(u.ID), stripecustomer.Livemode(livemode)).
			Only(ctx)
	}
	sc, err := existing()
	if err == nil {
		return sc.StripeCustomerID, nil
	}
	if !ent.IsNotFound(err) {
		return "", fmt.Errorf("payments: reading the Stripe customer of user %s: %w", u.ID, err)
	}

	params := &stripe.CustomerParams{
		Metadata: map[string]string{"user_id": u.ID, "external_id": u.ExternalID},
	}
	params.Context = ctx
	params.SetIdempotencyKey("tally-customer-" + u.ID)
	cust, err := s.stripe.Customers.New(params)
	if err != nil {
		return "", stripeError("creating the Stripe customer of user "+u.ID, err)
	}

	err = s.db.Ent.StripeCustomer.Create().
		SetUserID(u.ID).
		SetStripeCustomerID(cust.ID).
		SetLivemode(livemode).
		Exec(ctx)
	if ent.IsConstraintError(err) {
		if sc, rerr := existing(); rerr == nil {
			return sc.StripeCustomerID, nil
		}
		return "", fmt.Errorf("payments: Stripe customer %s of user %s is already linked to another user: %w", cust.ID, u.ID, err)
	}
	if err != nil {
		return "", fmt.Errorf("payments: recording Stripe customer %s of user %s: %w", cust.ID, u.ID, err)
	}
	return cust.ID, nil
}

// insertPendingPayment writes the pending Payment and the key's record in
// one transaction, with the pack's price as it is now. When the key has a
// record by then (a concurrent request's), it returns that request's
// payment as prior instead.
func (s *Service) insertPendingPayment(ctx context.Context, key idempotency.Request, req CheckoutRequest, userID string,
) (p *ent.Payment, pkg *ent.CreditPackage, prior *ent.Payment, err error) {
	err = s.ledger.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
		c := tx.Ent().Client()
		// The key is in the user's scope, as the user's own movements' keys
		// are, which their transactions hold: no unique index spans the two
		// places, so the user's lock orders this lookup with theirs.
		if _, err := tx.LockUser(ctx, userID); err != nil {
			return err
		}
		var err error
		if prior, err = checkoutPrior(ctx, c, key); prior != nil || err != nil {
			return err
		}
		if _, pkg, err = loadCheckout(ctx, c, userID, req.PackageID); err != nil {
			return err
		}
		p, err = c.Payment.Create().
			SetUserID(userID).
			SetPackageID(pkg.ID).
			SetAmount(pkg.PriceAmount).
			SetCurrency(pkg.Currency).
			SetCredits(pkg.Credits).
			SetStatus(payment.StatusPending).
			SetLivemode(s.livemode).
			SetSaveCard(req.SaveCard).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("payments: writing the pending payment: %w", err)
		}
		return idempotency.Store(ctx, c.IdempotencyKey, tx.Now(), idempotency.Entry{Request: key, Result: checkoutRecord{PaymentID: p.ID}})
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if prior != nil {
		return nil, nil, prior.Unwrap(), nil
	}
	return p.Unwrap(), pkg.Unwrap(), nil, nil
}

// openCheckoutSession creates the Checkout Session of a pending payment and
// stores its id, or undoes the payment if Stripe says no.
func (s *Service) openCheckoutSession(ctx context.Context, key idempotency.Key, req CheckoutRequest,
	p *ent.Payment, pkg *ent.CreditPackage, customerID string, replayed bool,
) (*CheckoutResult, error) {
	metadata := map[string]string{"payment_id": p.ID, "user_id": p.UserID, "package_id": packageID(p)}
	item := &stripe.CheckoutSessionLineItemParams{Quantity: stripe.Int64(1)}
	if pkg.StripePriceID != "" {
		item.Price = stripe.String(pkg.StripePriceID)
	} else {
		// From the payment, not the pack: these are what the buyer was
		// quoted, and a resumed request must send what the first one did.
		item.PriceData = &stripe.CheckoutSessionLineItemPriceDataParams{
			Currency:    stripe.String(p.Currency),
			UnitAmount:  stripe.Int64(p.Amount),
			ProductData: &stripe.CheckoutSessionLineItemPriceDataProductDataParams{Name: stripe.String(pkg.Name)},
		}
	}
	params := &stripe.CheckoutSessionParams{
		Mode:              stripe.String(string(stripe.CheckoutSessionModePayment)),
		ClientReferenceID: stripe.String(p.ID),
		Customer:          stripe.String(customerID),
		SuccessURL:        stripe.String(req.SuccessURL),
		CancelURL:         stripe.String(req.CancelURL),
		LineItems:         []*stripe.CheckoutSessionLineItemParams{item},
		Metadata:          metadata,
		// Charge and refund events name the PaymentIntent, not the session.
		PaymentIntentData: &stripe.CheckoutSessionPaymentIntentDataParams{Metadata: metadata},
	}
	if p.SaveCard {
		// From the payment, as the rest: a resumed request sends what the
		// first one did, which the Stripe idempotency key requires.
		params.PaymentIntentData.SetupFutureUsage = stripe.String(string(stripe.PaymentIntentSetupFutureUsageOffSession))
	}
	params.Context = ctx
	params.SetIdempotencyKey("tally-checkout-" + p.ID)
	sess, err := s.stripe.CheckoutSessions.New(params)
	if err != nil {
		serr := stripeError("creating the Checkout Session of payment "+p.ID, err)
		// A 409 is a concurrent retry of this very payment still talking
		// to Stripe; it owns the payment now.
		if !stripeInFlight(err) {
			if cerr := s.abandonCheckout(ctx, key, p.ID); cerr != nil {
				return nil, errors.Join(serr, cerr)
			}
		}
		return nil, serr
	}

	// The payment intent is not stored here: in the API version Tally pins, a
	// payment-mode session has none until the buyer confirms, and the
	// checkout.session.completed event brings it. The store survives a
	// cancelled request, so that a session that exists is not forgotten.
	storeCtx := context.WithoutCancel(ctx)
	n, err := s.db.Ent.Payment.Update().
		Where(payment.ID(p.ID), payment.StripeCheckoutSessionIDIsNil()).
		SetStripeCheckoutSessionID(sess.ID).
		Save(storeCtx)
	if err != nil {
		return nil, fmt.Errorf("payments: storing Checkout Session %s on payment %s: %w", sess.ID, p.ID, err)
	}
	stored, err := s.db.Ent.Payment.Get(storeCtx, p.ID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.Conflict, "the purchase was abandoned by a concurrent attempt; try again")
	}
	if err != nil {
		return nil, fmt.Errorf("payments: reading payment %s: %w", p.ID, err)
	}
	if n == 0 && (stored.StripeCheckoutSessionID == nil || *stored.StripeCheckoutSessionID != sess.ID) {
		return nil, fmt.Errorf("payments: payment %s has Checkout Session %v, Stripe answered %s", p.ID, stored.StripeCheckoutSessionID, sess.ID)
	}
	return &CheckoutResult{Payment: stored, SessionID: sess.ID, URL: sess.URL, Replayed: replayed}, nil
}

// abandonCheckout deletes a pending payment that got no session, with its
// key's record so that the key may be used again. A payment that meanwhile
// got a session (a concurrent retry succeeded) is kept, with its key.
func (s *Service) abandonCheckout(ctx context.Context, key idempotency.Key, paymentID string) error {
	return s.abandonAttempt(ctx, key, "pending payment "+paymentID, func(ctx context.Context, tx *ent.Tx) (int, error) {
		return tx.Payment.Delete().
			Where(payment.ID(paymentID), payment.StripeCheckoutSessionIDIsNil(), payment.StatusEQ(payment.StatusPending)).
			Exec(ctx)
	})
}

// abandonAttempt deletes what a request wrote before Stripe refused it
// (del answers how many rows it deleted: none once a concurrent retry has
// stored its session), with its key's record, so that the key may be used
// again.
func (s *Service) abandonAttempt(ctx context.Context, key idempotency.Key, what string, del func(context.Context, *ent.Tx) (int, error)) error {
	// The cleanup must run even when the caller has gone away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := s.ledger.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
		n, err := del(ctx, tx.Ent())
		if err != nil || n == 0 {
			return err
		}
		return idempotency.Forget(ctx, tx.Ent().IdempotencyKey, key)
	})
	if err != nil {
		return fmt.Errorf("payments: deleting %s after Stripe failed (a retry with the same key finishes it): %w", what, err)
	}
	return nil
}

// errStripeDisabled is the caller's view of ErrStripeDisabled.
func errStripeDisabled() error {
	return fmt.Errorf("%w: %w",
		apperr.New(apperr.Unavailable, "payments are not enabled on this server"), ErrStripeDisabled)
}

// stripeInFlight reports Stripe's answer to a request whose idempotency key
// another request is still using.
func stripeInFlight(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatusCode == http.StatusConflict
}

// stripeError gives a failed Stripe call a code for the caller. Stripe's own
// message is shown only when it is about the request (4xx); server-side and
// network failures say no more than that Stripe is unavailable. The original
// error stays in the chain, for the logs.
func stripeError(action string, err error) error {
	var ae *apperr.Error
	var se *stripe.Error
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("payments: %s: %w", action, err)
	case errors.Is(err, context.DeadlineExceeded):
		ae = apperr.New(apperr.Unavailable, "Stripe did not answer in time; try again")
	case !errors.As(err, &se):
		ae = apperr.New(apperr.Unavailable, "payments are temporarily unavailable; try again later")
	case se.Type == stripe.ErrorTypeIdempotency:
		ae = apperr.New(apperr.IdempotencyKeyReused, "the idempotency key was already used for a different request")
	case se.HTTPStatusCode == http.StatusConflict || se.Code == stripe.ErrorCodeLockTimeout:
		ae = apperr.New(apperr.Conflict, "a concurrent request is changing the same payment; try again")
	case se.HTTPStatusCode == http.StatusTooManyRequests:
		ae = apperr.New(apperr.Unavailable, "Stripe is limiting requests; try again shortly")
	case se.Type == stripe.ErrorTypeCard:
		ae = apperr.New(apperr.InvalidArgument, "the card was declined: %s", se.Msg)
	case se.HTTPStatusCode == http.StatusUnauthorized || se.HTTPStatusCode == http.StatusForbidden,
		se.HTTPStatusCode >= 500, se.HTTPStatusCode == 0:
		ae = apperr.New(apperr.Unavailable, "payments are temporarily unavailable; try again later")
	default:
		ae = apperr.New(apperr.InvalidArgument, "Stripe refused the request: %s", se.Msg)
	}
	return fmt.Errorf("payments: %s: %w: %w", action, ae, err)
}
