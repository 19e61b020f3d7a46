package ledger

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
)

// Outbound event types the ledger causes (the payments package and the
// sweeps add their own; package outbound delivers them all).
const (
	EventBalanceLow       = "balance.low"
	EventBalanceDepleted  = "balance.depleted"
	EventBalanceRecovered = "balance.recovered"
	EventCreditsExpiring  = "credits.expiring"
	EventCreditsExpired   = "credits.expired"
)

// Event is an outbound event caused by a ledger transaction, written in it
// by the EventWriter just before it commits.
type Event struct {
	Type string
	// User is the user the event is about, as locked by the transaction.
	User *ent.User
	// Balance is the user's balance as of the commit; nil has the writer
	// read it in the transaction.
	Balance *Balance
	// Data is what the type adds to the user and balances.
	Data map[string]any
	At   time.Time
}

// EventWriter writes outbound events in the transaction that causes them
// (package outbound: the event rows and the jobs that deliver them).
type EventWriter interface {
	WriteEvents(ctx context.Context, t *Tx, events []Event) error
}

// WithEvents has the ledger tell w of the events its transactions cause,
// and says which threshold is the low-balance one of the users who have
// none of their own (0: none).
func WithEvents(w EventWriter, defaultThreshold int64) Option {
	return func(s *Service) { s.events, s.defaultThreshold = w, defaultThreshold }
}

// Emit adds an event to those the transaction writes before it commits.
// Without an EventWriter, events are dropped.
func (t *Tx) Emit(ev Event) {
	if ev.At.IsZero() {
		ev.At = t.now
	}
	t.events = append(t.events, ev)
}

// Threshold is the low-balance threshold in force for u.
func (s *Service) Threshold(u *ent.User) int64 {
	if u.LowBalanceThreshold != nil {
		return *u.LowBalanceThreshold
	}
	return s.defaultThreshold
}

// levelOf says where available credits stand against a threshold.
func levelOf(available, threshold int64) user.BalanceLevel {
	switch {
	case available <= 0:
		return user.BalanceLevelDEPLETED
	case available < threshold:
		return user.BalanceLevelLOW
	}
	return user.BalanceLevelOK
}

// crossings are the events of a move from one level to another: going
// below the threshold is low (and depleted when it reaches 0), reaching 0
// from low is depleted, and coming back to the threshold is recovered.
// Moving between low and depleted upwards tells nothing: the credits are
// still below the threshold.
func crossings(from, to user.BalanceLevel) []string {
	switch {
	case from == to:
		return nil
	case from == user.BalanceLevelOK && to == user.BalanceLevelDEPLETED:
		return []string{EventBalanceLow, EventBalanceDepleted}
	case from == user.BalanceLevelOK:
		return []string{EventBalanceLow}
	case to == user.BalanceLevelDEPLETED:
		return []string{EventBalanceDepleted}
	case to == user.BalanceLevelOK:
		return []string{EventBalanceRecovered}
	}
	return nil
}

// lookAtBalances reads, in one statement, the balances after the
// transaction of every user it moved who has a low-balance threshold or
// auto-recharge, and hands them to the level events and the recharges.
func (t *Tx) lookAtBalances(ctx context.Context) error {
	if (len(t.moved) == 0 && len(t.lookForRecharge) == 0) || (t.s.events == nil && t.s.recharges == nil) {
		return nil
	}
	var ids []string
	for _, u := range t.moved {
		if t.watchesLevel(u) || t.watchesRecharge(u) {
			ids = append(ids, u.ID)
		}
	}
	for _, u := range t.lookForRecharge {
		if _, moved := t.moved[u.ID]; !moved && t.watchesRecharge(u) {
			ids = append(ids, u.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	balances, err := t.balancesAfter(ctx, ids)
	if err != nil {
		return err
	}
	if err := t.emitLevels(ctx, ids, balances); err != nil {
		return err
	}
	return t.triggerRecharges(ctx, ids, balances)
}

// standsAt says where a user's credits stand after the movement just
// written, as the movement worked it out, so that lookAtBalances need not
// read it: a batch of spends on thresholds costs no extra round trip. The
// next movement of the user forgets it (movedUser). Held is not known
// (0): neither the levels nor the recharges look at it.
func (t *Tx) standsAt(userID string, b Balance) {
	if t.standing == nil {
		t.standing = make(map[string]Balance)
	}
	t.standing[userID] = b
}

// balancesAfter are the balances of users after the transaction: those
// its movements worked out, and the others read in one statement.
func (t *Tx) balancesAfter(ctx context.Context, ids []string) (map[string]Balance, error) {
	var unknown []string
	for _, id := range ids {
		if _, known := t.standing[id]; !known {
			unknown = append(unknown, id)
		}
	}
	balances := make(map[string]Balance, len(ids))
	if len(unknown) > 0 {
		read, err := t.s.balancesAt(ctx, t.ent, t.now, unknown)
		if err != nil {
			return nil, err
		}
		balances = read
	}
	for _, id := range ids {
		if b, known := t.standing[id]; known {
			balances[id] = b
		}
	}
	return balances, nil
}

// watched is the transaction's copy of a user it looks at before the
// commit.
func (t *Tx) watched(id string) *ent.User {
	if u, ok := t.moved[id]; ok {
		return u
	}
	return t.lookForRecharge[id]
}

func (t *Tx) watchesLevel(u *ent.User) bool { return t.s.events != nil && t.s.Threshold(u) > 0 }

// emitLevels compares, for every user the transaction moved who has a
// threshold, the available credits after it with the level the events
// last told, under the user's lock: concurrent movements across a
// threshold are serialized by that lock, so exactly one of them sees the
// crossing, on any number of replicas. It writes nothing when no level
// changes.
func (t *Tx) emitLevels(ctx context.Context, ids []string, balances map[string]Balance) error {
	levels := map[string]any{}
	for _, id := range ids {
		u, b := t.moved[id], balances[id]
		if u == nil || !t.watchesLevel(u) {
			continue
		}
		from := user.BalanceLevelOK
		if u.BalanceLevel != nil {
			from = *u.BalanceLevel
		}
		threshold := t.s.Threshold(u)
		to := levelOf(b.Available, threshold)
		if from == to {
			continue
		}
		levels[id] = string(to)
		u.BalanceLevel = &to
		for _, typ := range crossings(from, to) {
			t.Emit(Event{Type: typ, User: u, Balance: &b, Data: map[string]any{"threshold": threshold}})
		}
	}
	if len(levels) == 0 {
		return nil
	}
	// One statement for every user of the batch that crossed.
	err := database.UpdateRows(user.Table, slices.Sorted(maps.Keys(levels))).
		SetEach(user.FieldBalanceLevel, "", levels).Exec(ctx, t.s.db, t.ent)
	if err != nil {
		return fmt.Errorf("ledger: recording the balance levels of %d users: %w", len(levels), err)
	}
	return nil
}

// Locked is the transaction's copy of a user it holds the lock of (nil
// if it holds none): once locked, the row changes only through this copy.
func (t *Tx) Locked(userID string) *ent.User { return t.locked[userID] }

// writeEvents hands the transaction's events to the writer.
func (t *Tx) writeEvents(ctx context.Context) error {
	if t.s.events == nil || len(t.events) == 0 {
		return nil
	}
	if err := t.s.events.WriteEvents(ctx, t, t.events); err != nil {
		return fmt.Errorf("ledger: writing %d outbound events: %w", len(t.events), err)
	}
	return nil
}

// Balances reads users' balances in the transaction, with its own writes.
func (t *Tx) Balances(ctx context.Context, userIDs []string) (map[string]Balance, error) {
	return t.s.balancesAt(ctx, t.ent, t.now, userIDs)
}

// SetLowBalanceThreshold sets a user's threshold (nil: the default), under
// the user's lock, so that no movement compares against a threshold half
// changed. The level the events last told is forgotten (taken as OK): the
// next movement tells where the credits stand against the new threshold,
// if they are below it.
func (s *Service) SetLowBalanceThreshold(ctx context.Context, userID string, threshold *int64) (*ent.User, error) {
	var u *ent.User
	err := s.Within(ctx, func(ctx context.Context, t *Tx) error {
		var err error
		u, err = t.SetLowBalanceThreshold(ctx, userID, threshold)
		return err
	})
	return u, err
}

// SetLowBalanceThreshold is Service.SetLowBalanceThreshold in t.
func (t *Tx) SetLowBalanceThreshold(ctx context.Context, userID string, threshold *int64) (*ent.User, error) {
	if threshold != nil && (*threshold < 0 || *threshold > MaxAmount) {
		return nil, apperr.Invalid("threshold", "threshold must be a whole number from 0 to %d, or null for the default", MaxAmount)
	}
	locked, err := t.lockUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	update := t.ent.User.UpdateOneID(userID).ClearBalanceLevel()
	if threshold == nil {
		update.ClearLowBalanceThreshold()
	} else {
		update.SetLowBalanceThreshold(*threshold)
	}
	u, err := update.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: setting the threshold of %s: %w", userID, err)
	}
	locked.LowBalanceThreshold, locked.BalanceLevel = u.LowBalanceThreshold, nil
	return u, nil
}
