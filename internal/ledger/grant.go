package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/pulid"
)

// GrantRequest adds credits to a user as a new lot.
type GrantRequest struct {
	UserID string
	Amount int64
	// Purchase grants come from a payment (PaymentID required); the others
	// are admin or promotional grants.
	Purchase  bool
	PaymentID *string
	ExpiresAt *time.Time
	// Priority orders spending: lower is spent first.
	Priority       int
	Reason         string
	Metadata       map[string]string
	IdempotencyKey string
}

// Grant adds credits in a transaction of its own.
func (s *Service) Grant(ctx context.Context, actor Actor, req GrantRequest) (*Result, error) {
	return s.do(ctx, "grant", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Grant(ctx, actor, req) })
}

// Grant adds credits: a new lot, and postings from the purchases or grants
// account to the user's. A user in debt repays it from the new credits first.
func (t *Tx) Grant(ctx context.Context, actor Actor, req GrantRequest) (*Result, error) {
	if err := validateGrant(req); err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "grant", req, req.UserID, lookupOnRefusal, func(u *ent.User) (*Result, error) {
		m, err := t.grantMovement(u, req)
		if err != nil {
			return nil, err
		}
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Amount: req.Amount}, nil
	})
}

// GrantMany makes several grants, each to a different user, in this
// transaction, with one statement per table (the payments package applies a
// batch of purchase webhooks with it). It is all or nothing: any refusal,
// or a key that already has a record, fails it, and the caller then makes
// the grants one by one with Grant, which replays known keys.
func (t *Tx) GrantMany(ctx context.Context, actor Actor, reqs []GrantRequest) ([]*Result, error) {
	ids := make([]string, len(reqs))
	keys := make([]idempotency.Request, len(reqs))
	for i, req := range reqs {
		if err := validateGrant(req); err != nil {
			return nil, err
		}
		r, err := keyedRequest(actor, req.IdempotencyKey, "grant", req)
		if err != nil {
			return nil, err
		}
		ids[i], keys[i] = req.UserID, r
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		// credit reads the balance each grant starts from: two grants of one
		// user would both start from the same one.
		return nil, errors.New("ledger: GrantMany takes one grant per user")
	}
	users, err := t.lockUsers(ctx, ids)
	if err != nil {
		return nil, err
	}
	if t.attempt > 1 || actor.sharesScopeWithRecords() {
		// The first attempt found a key taken (or the keys may be held by
		// records no transaction's index sees): let Grant replay it.
		if err := t.noKnownKeys(ctx, keys); err != nil {
			return nil, err
		}
	}
	t.serve(keys...)
	ms := make([]pendingMovement, len(reqs))
	for i, req := range reqs {
		u := users[req.UserID]
		if u == nil {
			return nil, apperr.New(apperr.NotFound, "no user with id %q", req.UserID)
		}
		m, err := t.grantMovement(u, req)
		if err != nil {
			return nil, err
		}
		ms[i] = pendingMovement{actor: actor, key: req.IdempotencyKey, u: u, m: m}
	}
	txns, err := t.writeMany(ctx, ms)
	if err != nil {
		return nil, err
	}
	results := make([]*Result, len(reqs))
	for i, req := range reqs {
		u := users[req.UserID]
		results[i] = &Result{Transaction: txns[i], Amount: req.Amount, Balance: u.CreditsBalance, User: u}
	}
	if err := t.remember(ctx, keys, results); err != nil {
		return nil, err
	}
	return results, nil
}

func validateGrant(req GrantRequest) error {
	if err := req.Validate(); err != nil {
		return err
	}
	// A caller's mistake, not a client's: no API request sets these.
	if req.Purchase != (req.PaymentID != nil) {
		return fmt.Errorf("ledger: a purchase grant needs a payment, and only a purchase has one")
	}
	return nil
}

// grantMovement is a grant's movement and its new lot, not yet written.
func (t *Tx) grantMovement(u *ent.User, req GrantRequest) (*movement, error) {
	// Checked after the key: a retry of a grant that succeeded returns its
	// result even once its expiry has passed.
	if req.ExpiresAt != nil && !req.ExpiresAt.After(t.now) {
		return nil, apperr.Invalid("expiresAt", "expiresAt must be in the future")
	}
	kind, source, from := credittransaction.KindGrant, creditlot.SourceGrant, AccountGrants
	if req.Purchase {
		kind, source, from = credittransaction.KindPurchase, creditlot.SourcePurchase, AccountPurchases
	}
	m := newMovement(kind, req.Amount)
	m.reason, m.metadata, m.paymentID = req.Reason, req.Metadata, req.PaymentID
	lotID := pulid.New("lot")
	m.post(from, false, &lotID, -req.Amount)
	kept, err := credit(u, m, lotID, req.Amount)
	if err != nil {
		return nil, err
	}
	m.lot = &ent.CreditLot{
		ID:            lotID,
		UserID:        u.ID,
		Source:        source,
		Original:      req.Amount,
		Remaining:     kept,
		ExpiresAt:     utc(req.ExpiresAt),
		Priority:      req.Priority,
		PaymentID:     req.PaymentID,
		TransactionID: m.id,
		CreatedAt:     t.now,
		UpdatedAt:     t.now,
	}
	return m, nil
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
