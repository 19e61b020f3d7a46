package ledger

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/idempotencykey"
	"github.com/tally-billing/tally/ent/predicate"
	"github.com/tally-billing/tally/internal/apperr"
)

// maxSpendBatch bounds how many spends share one database transaction
// (and so the size of its statements).
const maxSpendBatch = 64

// spendBatchTimeout bounds a batch's transaction. A batch runs on behalf of
// every caller in it, so no single caller's cancellation stops it.
const spendBatchTimeout = 30 * time.Second

// spendCall is one Spend on its way through a batch.
type spendCall struct {
	actor Actor
	req   SpendRequest
	fp    string
	res   *Result
	err   error
	// sameAs is an earlier call of the batch with the same key.
	sameAs *spendCall
	done   chan struct{} // closed once res or err is final
	lead   chan struct{} // receives when this call is to run the next batch
}

func newSpendCall(actor Actor, req SpendRequest) (*spendCall, error) {
	if err := actor.validate(); err != nil {
		return nil, err
	}
	if err := ValidateIdempotencyKey(req.IdempotencyKey); err != nil {
		return nil, err
	}
	if err := validateAmount("amount", req.Amount); err != nil {
		return nil, err
	}
	if err := validateText("reason", req.Reason, 1000); err != nil {
		return nil, err
	}
	fp, err := fingerprint("spend", req)
	if err != nil {
		return nil, err
	}
	return &spendCall{actor: actor, req: req, fp: fp, done: make(chan struct{}), lead: make(chan struct{}, 1)}, nil
}

func (c *spendCall) scopedKey() scopedKey {
	return scopedKey{scope: c.actor.String(), key: c.req.IdempotencyKey}
}

type scopedKey struct{ scope, key string }

// spendBatcher coalesces concurrent spends from one account. While a
// database transaction spends from an account, the spends that arrive for
// it queue; when it commits, the first of them runs the whole queue (up to
// maxSpendBatch) in the next transaction. Each spend keeps its own
// transaction, postings, idempotency record and refusal; they share the
// account's lock, the reads of its lots and the commit, which on a hot
// account is most of the cost. Nothing waits on purpose: a spend that
// finds its account idle runs at once, alone. Several server processes
// each coalesce their own callers; the row lock still orders them.
type spendBatcher struct {
	mu sync.Mutex
	// queues holds, for each account with a batch running, the calls
	// waiting for the next one.
	queues map[string][]*spendCall
}

// submit returns once the call's result is final.
func (b *spendBatcher) submit(ctx context.Context, s *Service, c *spendCall) {
	userID := c.req.UserID
	b.mu.Lock()
	if b.queues == nil {
		b.queues = map[string][]*spendCall{}
	}
	queue, busy := b.queues[userID]
	b.queues[userID] = append(queue, c)
	b.mu.Unlock()
	if busy {
		select {
		case <-c.done:
			return
		case <-c.lead:
		}
	}

	// c leads the next batch: the head of the queue, which is c itself.
	b.mu.Lock()
	queue = b.queues[userID]
	n := min(len(queue), maxSpendBatch)
	batch := queue[:n:n]
	b.queues[userID] = queue[n:]
	b.mu.Unlock()

	runCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), spendBatchTimeout)
	s.runSpends(runCtx, batch)
	cancel()
	for _, other := range batch[1:] {
		close(other.done)
	}

	b.mu.Lock()
	if rest := b.queues[userID]; len(rest) > 0 {
		rest[0].lead <- struct{}{}
	} else {
		delete(b.queues, userID)
	}
	b.mu.Unlock()
}

// runSpends spends a batch in one transaction. A failure that is not a
// refusal (a database error) fails the batch; each spend then runs alone,
// so that one request cannot fail the others.
func (s *Service) runSpends(ctx context.Context, calls []*spendCall) {
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
	if len(calls) > 1 {
		for _, c := range calls {
			s.runSpends(ctx, []*spendCall{c})
		}
		return
	}
	calls[0].res, calls[0].err = nil, err
}

// spendMany runs spends from one user in order, in this transaction. A
// spend that is refused gets its error in its call and changes nothing;
// the error returned is one that fails them all.
//
// Keys are not looked up before the work on a first attempt: nearly every
// key is new, and one that is not makes the insert of its record fail,
// which rolls the transaction back and retries it with the lookup. A
// refusal is checked against the keys at once, though: the retry of a spend
// that succeeded must get its result, not a refusal caused by its own
// effect.
func (t *Tx) spendMany(ctx context.Context, calls []*spendCall) error {
	for _, c := range calls {
		c.res, c.err, c.sameAs = nil, nil, nil
	}
	u, err := t.lockUser(ctx, calls[0].req.UserID)
	if _, refused := apperr.As(err); refused {
		for _, c := range calls {
			c.err = err
		}
		return nil
	}
	if err != nil {
		return err
	}
	if t.attempt > 1 {
		if err := t.replayKnown(ctx, u, calls); err != nil {
			return err
		}
	}

	var (
		lots      []*ent.CreditLot
		available int64
		loaded    bool
		writes    []keyed
		spent     []*spendCall
		first     = map[scopedKey]*spendCall{}
		refused   []*spendCall
	)
	for _, c := range calls {
		if c.res != nil || c.err != nil {
			continue // replayed
		}
		if f, ok := first[c.scopedKey()]; ok {
			c.sameAs = f
			continue
		}
		if c.err = spendable(u); c.err == nil && !loaded {
			if available, _, lots, err = t.available(ctx, u, ""); err != nil {
				return err
			}
			loaded = true
		}
		if c.err == nil && c.req.Amount > available {
			c.err = apperr.New(apperr.InsufficientCredits, "%d credits needed, %d available", c.req.Amount, available)
		}
		if c.err != nil {
			refused = append(refused, c)
			continue
		}
		m := newMovement(credittransaction.KindSpend, c.req.Amount)
		m.reason, m.metadata = c.req.Reason, c.req.Metadata
		t.drawLots(u, m, lots, c.req.Amount)
		m.post(AccountSpent, false, nil, c.req.Amount)
		available -= c.req.Amount
		writes = append(writes, keyed{actor: c.actor, key: c.req.IdempotencyKey, m: m})
		spent = append(spent, c)
		first[c.scopedKey()] = c
	}
	if len(refused) > 0 && t.attempt == 1 {
		if err := t.replayKnown(ctx, u, refused); err != nil {
			return err
		}
	}

	if len(writes) > 0 {
		balance := u.CreditsBalance
		txns, err := t.writeMany(ctx, u, writes)
		if err != nil {
			return err
		}
		records := make([]remembered, len(spent))
		for i, c := range spent {
			balance -= c.req.Amount
			after := *u
			after.CreditsBalance = balance
			c.res = &Result{Transaction: txns[i], Amount: c.req.Amount, Balance: balance, User: &after}
			records[i] = remembered{actor: c.actor, key: c.req.IdempotencyKey, fp: c.fp, res: c.res}
		}
		if err := t.rememberMany(ctx, records); err != nil {
			return err
		}
	}
	return nil
}

// settleDuplicates answers the calls that repeated the key of an earlier
// call of their batch, once the batch is done (and its entities detached
// from the transaction, which the copies share).
func settleDuplicates(calls []*spendCall) {
	for _, c := range calls {
		switch f := c.sameAs; {
		case f == nil:
		case f.fp != c.fp:
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
func (t *Tx) replayKnown(ctx context.Context, u *ent.User, calls []*spendCall) error {
	byKey := make(map[scopedKey][]*spendCall, len(calls))
	matches := make([]predicate.IdempotencyKey, 0, len(calls))
	for _, c := range calls {
		k := c.scopedKey()
		if _, ok := byKey[k]; !ok {
			matches = append(matches, idempotencykey.And(idempotencykey.Scope(k.scope), idempotencykey.Key(k.key)))
		}
		byKey[k] = append(byKey[k], c)
	}
	records, err := t.ent.IdempotencyKey.Query().Where(idempotencykey.Or(matches...)).All(ctx)
	if err != nil {
		return fmt.Errorf("ledger: reading idempotency keys: %w", err)
	}
	for _, rec := range records {
		for _, c := range byKey[scopedKey{scope: rec.Scope, key: rec.Key}] {
			c.res, c.err = t.replay(ctx, rec, c.fp)
			if _, refused := apperr.As(c.err); c.err != nil && !refused {
				return c.err
			}
			if c.res != nil {
				now := *u
				c.res.User = &now
			}
		}
	}
	return nil
}
