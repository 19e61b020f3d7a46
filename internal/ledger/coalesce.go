package ledger

import (
	"context"
	"slices"
	"time"

	"entgo.io/ent/dialect"
	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/idempotency"
	"go.opentelemetry.io/otel/trace"
)

// Spends are coalesced into shared transactions (see Service.Spend): at
// most maxSpendBatch in one, at most maxBatchesInFlight transactions at
// once, each bounded by spendBatchTimeout.
const (
	maxSpendBatch      = 64
	maxBatchesInFlight = 4
	spendBatchTimeout  = 30 * time.Second
)

// spendCall is one Spend on its way through a batch.
type spendCall struct {
	actor Actor
	req   SpendRequest
	key   idempotency.Request
	res   *Result
	err   error
	// parent is the span of the Spend that made the call: a batch's
	// transaction is traced under its first call's.
	parent trace.SpanContext
	// sameAs is an earlier call of the batch with the same key.
	sameAs *spendCall
}

func newSpendCall(actor Actor, req SpendRequest) (*spendCall, error) {
	key, err := keyedRequest(actor, req.IdempotencyKey, "spend", req)
	if err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return &spendCall{actor: actor, req: req, key: key}, nil
}

// runSpends spends a batch in one transaction. A failure that is not a
// refusal (a database error) fails the batch; each spend then runs alone,
// so that one request cannot fail the others.
//
// Except when the database is unavailable: then every spend of the batch
// gets that error and none runs again. After a COMMIT whose answer was lost
// the batch may have committed; running its spends again would not spend
// twice (each one's key was recorded with it, and the rerun would replay
// it), but it would be the ledger retrying an unknown outcome on its own,
// sixty-four times over, against a database that has just failed. The
// callers' own retries with their keys settle it (see database.ClassifyCommit).
func (s *Service) runSpends(ctx context.Context, calls []*spendCall) {
	ctx = withParent(ctx, calls[0].parent)
	err := s.Within(ctx, func(ctx context.Context, t *Tx) error { return t.spendMany(ctx, calls) })
	if err == nil {
		for _, c := range calls {
			if c.res != nil && c.sameAs == nil {
				c.res.Unwrap()
			}
		}
		settleDuplicates(calls)
		return
	}
	if len(calls) > 1 && apperr.CodeOf(err) != apperr.Unavailable {
		for _, c := range calls {
			s.runSpends(ctx, []*spendCall{c})
		}
		return
	}
	for _, c := range calls {
		c.res, c.err = nil, err
	}
}

// spendMany runs spends, from one user or several, in order, in this
// transaction. A spend that is refused gets its error in its call and
// changes nothing; the error returned is one that fails them all.
//
// Keys are not looked up before the work on a first attempt: nearly every
// key is new, and one that is not makes the insert of its transaction (or
// record) fail, which rolls the transaction back and retries it with the
// lookup. Users' keys are the exception (see toLookUpFirst). A
// refusal is checked against the keys at once, though: the retry of a spend
// that succeeded must get its result, not a refusal caused by its own
// effect.
func (t *Tx) spendMany(ctx context.Context, calls []*spendCall) error {
	users, read, err := t.lockSpenders(ctx, calls)
	if err != nil {
		return err
	}
	if err := t.replayKnown(ctx, users, t.toLookUpFirst(calls)); err != nil {
		return err
	}
	lots, standing, err := t.availableToSpend(ctx, users, read)
	if err != nil {
		return err
	}
	p := t.planSpends(users, lots, standing, calls)
	if len(p.refused) > 0 && t.attempt == 1 {
		if err := t.replayKnown(ctx, users, p.refused); err != nil {
			return err
		}
	}
	if len(p.writes) == 0 {
		return nil
	}
	if err := t.writeSpends(ctx, users, p); err != nil {
		return err
	}
	for _, c := range p.spent {
		t.standsAt(c.req.UserID, standing[c.req.UserID])
	}
	return nil
}

// toLookUpFirst are the calls whose keys are looked up before the work:
// all of them on a retry, else those of actors whose scope may hold keys
// no transaction holds (see Actor.sharesScopeWithRecords).
func (t *Tx) toLookUpFirst(calls []*spendCall) []*spendCall {
	if t.attempt > 1 {
		return calls
	}
	var first []*spendCall
	for _, c := range calls {
		if c.actor.sharesScopeWithRecords() {
			first = append(first, c)
		}
	}
	return first
}

// lockSpenders locks the users the calls spend from, in one statement; a
// call naming no user gets NOT_FOUND. On PostgreSQL the statement reads
// their lots too, when it can (see lockread.go); read is nil otherwise.
func (t *Tx) lockSpenders(ctx context.Context, calls []*spendCall) (_ map[string]*ent.User, read map[string]lotsOf, _ error) {
	ids := make([]string, 0, len(calls))
	for _, c := range calls {
		c.res, c.err, c.sameAs = nil, nil, nil
		ids = append(ids, c.req.UserID)
	}
	var users map[string]*ent.User
	var err error
	if t.s.db.Dialect == dialect.Postgres && len(t.locked) == 0 {
		users, read, err = t.lockUsersWithLots(ctx, slices.Compact(slices.Sorted(slices.Values(ids))))
	} else {
		users, err = t.lockUsers(ctx, ids)
	}
	if err != nil {
		return nil, nil, err
	}
	for _, c := range calls {
		if users[c.req.UserID] == nil {
			c.err = apperr.New(apperr.NotFound, "no user with id %q", c.req.UserID)
		}
	}
	return users, read, nil
}

// availableToSpend reads the lots of every account that may spend, in one
// statement (unless the lock read them already), and where each stands
// now: its balance, reservations and what it may spend (not what disputes
// hold, which no spend looks at).
func (t *Tx) availableToSpend(ctx context.Context, users map[string]*ent.User, read map[string]lotsOf) (map[string][]*ent.CreditLot, map[string]Balance, error) {
	var readable []string
	for id, u := range users {
		if spendable(u) == nil {
			readable = append(readable, id)
		}
	}
	lots, reserved := make(map[string][]*ent.CreditLot, len(read)), make(map[string]int64, len(read))
	if read != nil {
		for id, r := range read {
			lots[id], reserved[id] = r.lots, r.reserved
		}
	} else {
		var err error
		if lots, reserved, err = t.lotsAndReserved(ctx, readable, ""); err != nil {
			return nil, nil, err
		}
	}
	standing := make(map[string]Balance, len(readable))
	for _, id := range readable {
		b := Balance{Balance: users[id].CreditsBalance, Reserved: reserved[id]}
		b.Available = availableOf(b.Balance, b.Reserved, sumRemaining(lots[id]))
		standing[id] = b
	}
	return lots, standing, nil
}

// spendPlan is what a batch will write: the movements of the spends that
// go through, in order, and the spends refused.
type spendPlan struct {
	writes  []pendingMovement
	spent   []*spendCall
	refused []*spendCall
}

// planSpends decides each call in order, drawing from the lots in memory:
// a later spend of an account sees what the earlier ones took, and
// standing ends as the spends leave each account. A call that repeats an
// earlier call's key waits for that call's answer (sameAs).
func (t *Tx) planSpends(users map[string]*ent.User, lots map[string][]*ent.CreditLot, standing map[string]Balance, calls []*spendCall) spendPlan {
	var p spendPlan
	first := map[idempotency.Key]*spendCall{}
	for _, c := range calls {
		if c.res != nil || c.err != nil {
			continue // replayed, or no such user
		}
		if f, ok := first[c.key.Key]; ok {
			c.sameAs = f
			continue
		}
		u := users[c.req.UserID]
		b := standing[u.ID]
		if c.err = spendable(u); c.err == nil && c.req.Amount > b.Available {
			c.err = apperr.New(apperr.InsufficientCredits, "%d credits needed, %d available", c.req.Amount, b.Available)
		}
		if c.err != nil {
			p.refused = append(p.refused, c)
			continue
		}
		m := newMovement(credittransaction.KindSpend, c.req.Amount)
		m.reason, m.metadata = c.req.Reason, c.req.Metadata
		t.drawLots(u, m, lots[u.ID], c.req.Amount)
		m.post(AccountSpent, false, nil, c.req.Amount)
		// The amount is at most what is available, so available less it
		// is what availableOf gives for the balance and lots less it.
		b.Balance -= c.req.Amount
		b.Available -= c.req.Amount
		standing[u.ID] = b
		t.serve(c.key)
		p.writes = append(p.writes, pendingMovement{actor: c.actor, key: c.req.IdempotencyKey, u: u, m: m})
		p.spent = append(p.spent, c)
		first[c.key.Key] = c
	}
	return p
}

// writeSpends writes the planned movements and their keys' records, and
// gives each spend its result: the balance right after it, as a spend made
// alone would have answered.
func (t *Tx) writeSpends(ctx context.Context, users map[string]*ent.User, p spendPlan) error {
	balances := make(map[string]int64, len(users))
	for id, u := range users {
		balances[id] = u.CreditsBalance
	}
	txns, err := t.writeMany(ctx, p.writes)
	if err != nil {
		return err
	}
	keys := make([]idempotency.Request, len(p.spent))
	results := make([]*Result, len(p.spent))
	for i, c := range p.spent {
		u := users[c.req.UserID]
		balances[u.ID] -= c.req.Amount
		after := *u
		after.CreditsBalance = balances[u.ID]
		c.res = &Result{Transaction: txns[i], Amount: c.req.Amount, Balance: balances[u.ID], User: &after}
		keys[i], results[i] = c.key, c.res
	}
	return t.remember(ctx, keys, results)
}

func sumRemaining(lots []*ent.CreditLot) int64 {
	sum := int64(0)
	for _, l := range lots {
		sum += l.Remaining
	}
	return sum
}

// settleDuplicates answers the calls that repeated the key of an earlier
// call of their batch, once the batch is done (and its entities detached
// from the transaction, which the copies share).
func settleDuplicates(calls []*spendCall) {
	for _, c := range calls {
		switch f := c.sameAs; {
		case f == nil:
		case f.key.Fingerprint != c.key.Fingerprint:
			c.res, c.err = nil, apperr.New(apperr.IdempotencyKeyReused,
				"idempotency key %q was already used for a different request", c.req.IdempotencyKey)
		case f.err != nil:
			c.res, c.err = nil, f.err
		default:
			replayed := *f.res
			replayed.Replayed = true
			c.res, c.err = &replayed, nil
		}
	}
}

// replayKnown gives each call whose key already has a record that record's
// result (or IDEMPOTENCY_KEY_REUSED), in place of whatever it had.
func (t *Tx) replayKnown(ctx context.Context, users map[string]*ent.User, calls []*spendCall) error {
	if len(calls) == 0 {
		return nil
	}
	keys := make([]idempotency.Request, len(calls))
	for i, c := range calls {
		keys[i] = c.key
	}
	records, err := idempotency.FindMany(ctx, t.ent.Client(), keys)
	if err != nil {
		return err
	}
	for _, c := range calls {
		rec, ok := records[c.key.Key]
		if !ok || users[c.req.UserID] == nil {
			continue // new, or NOT_FOUND already
		}
		var stored StoredResult
		if stored, c.err = storedOfRecord(rec, c.key); c.err != nil {
			if _, refused := apperr.As(c.err); !refused {
				return c.err
			}
			c.res = nil
			continue
		}
		now := *users[c.req.UserID]
		if c.res, c.err = t.resultOf(ctx, stored, &now); c.err != nil {
			return c.err
		}
	}
	return nil
}
