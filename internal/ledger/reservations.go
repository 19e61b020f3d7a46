package ledger

import (
	"context"
	"fmt"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// Reservation time limits: long enough for a long paid job, short enough
// that a crashed job's credits come back the same day.
const (
	MinReservationTTL     = time.Second
	MaxReservationTTL     = 24 * time.Hour
	DefaultReservationTTL = 15 * time.Minute
)

// ReserveRequest sets credits aside for a job.
type ReserveRequest struct {
	UserID string
	Amount int64
	// TTLSeconds is how long the reservation holds if neither captured nor
	// released (nil: DefaultReservationTTL).
	TTLSeconds     *int64
	Reason         string
	IdempotencyKey string
}

// Reserve sets credits aside, in a transaction of its own.
func (s *Service) Reserve(ctx context.Context, actor Actor, req ReserveRequest) (*Result, error) {
	return s.do(ctx, "reserve", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Reserve(ctx, actor, req) })
}

// Reserve opens a reservation. The credits stay in the balance (they are
// still the user's) but no longer count as available until the reservation
// is captured, released or expires. A HOLD transaction without postings
// records it in the user's history.
func (t *Tx) Reserve(ctx context.Context, actor Actor, req ReserveRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	ttl := req.ttl()
	if err := t.lockUserWithLots(ctx, req.UserID); err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "reserve", req.Fingerprinted(), req.UserID, lookupOnRefusal, func(u *ent.User) (*Result, error) {
		if err := spendable(u); err != nil {
			return nil, err
		}
		available, _, err := t.available(ctx, u, nil)
		if err != nil {
			return nil, err
		}
		if req.Amount > available {
			return nil, apperr.New(apperr.InsufficientCredits, "%d credits needed, %d available", req.Amount, available)
		}
		rsv, err := t.ent.CreditReservation.Create().
			SetID(pulid.New("res")).
			SetUserID(u.ID).
			SetAmount(req.Amount).
			SetExpiresAt(t.now.Add(ttl)).
			SetReason(req.Reason).
			SetCreatedAt(t.now).
			SetUpdatedAt(t.now).
			Save(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: creating reservation: %w", err)
		}
		m := newMovement(credittransaction.KindHold, req.Amount)
		m.reason, m.reservationID = req.Reason, &rsv.ID
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Reservation: rsv, Amount: req.Amount}, nil
	})
}

// CaptureRequest spends all or part of a reservation.
type CaptureRequest struct {
	UserID        string
	ReservationID string
	// Amount to spend; nil captures the whole reservation. The rest
	// returns to the available balance.
	Amount         *int64
	Reason         string
	IdempotencyKey string
}

// Capture spends a reservation, in a transaction of its own.
func (s *Service) Capture(ctx context.Context, actor Actor, req CaptureRequest) (*Result, error) {
	return s.do(ctx, "capture", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.Capture(ctx, actor, req) })
}

// Capture spends Amount of an open, unexpired reservation from the lots, as
// a spend would, and closes it.
func (t *Tx) Capture(ctx context.Context, actor Actor, req CaptureRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if err := t.lockUserWithLots(ctx, req.UserID); err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "capture", req.Fingerprinted(), req.UserID, lookupOnRefusal, func(u *ent.User) (*Result, error) {
		rsv, err := t.openReservation(ctx, u.ID, req.ReservationID)
		if err != nil {
			return nil, err
		}
		amount := rsv.Amount
		if req.Amount != nil {
			amount = *req.Amount
		}
		if amount > rsv.Amount {
			return nil, apperr.Invalid("amount", "cannot capture %d credits of a reservation of %d", amount, rsv.Amount)
		}
		m := newMovement(credittransaction.KindCapture, amount)
		m.reason, m.reservationID = req.Reason, &rsv.ID
		if err := t.spendFromLots(ctx, u, m, amount, rsv); err != nil {
			return nil, err
		}
		txn, err := t.write(ctx, actor, req.IdempotencyKey, u, m)
		if err != nil {
			return nil, err
		}
		rsv, err = t.closeReservation(ctx, rsv, creditreservation.StatusCaptured, amount)
		if err != nil {
			return nil, err
		}
		return &Result{Transaction: txn, Reservation: rsv, Amount: amount}, nil
	})
}

// reserveFingerprint and captureFingerprint are what the keys of those
// requests cover, in the shape the requests had when their keys were first
// stored (a TTL in nanoseconds, 0 for a whole capture): keys stored then
// still replay.
type (
	reserveFingerprint struct {
		UserID         string
		Amount         int64
		TTL            time.Duration
		Reason         string
		IdempotencyKey string
	}
	captureFingerprint struct {
		UserID         string
		ReservationID  string
		Amount         int64
		Reason         string
		IdempotencyKey string
	}
)

func (r ReserveRequest) ttl() time.Duration {
	if r.TTLSeconds == nil {
		return DefaultReservationTTL
	}
	return time.Duration(*r.TTLSeconds) * time.Second
}

// Fingerprinted is what the request's idempotency key covers (for
// idempotency.NewRequest with the operation "reserve").
func (r ReserveRequest) Fingerprinted() any {
	return reserveFingerprint{UserID: r.UserID, Amount: r.Amount, TTL: r.ttl(), Reason: r.Reason, IdempotencyKey: r.IdempotencyKey}
}

// Fingerprinted is what the request's idempotency key covers (for
// idempotency.NewRequest with the operation "capture").
func (r CaptureRequest) Fingerprinted() any {
	fp := captureFingerprint{UserID: r.UserID, ReservationID: r.ReservationID, Reason: r.Reason, IdempotencyKey: r.IdempotencyKey}
	if r.Amount != nil {
		fp.Amount = *r.Amount
	}
	return fp
}

// ReleaseRequest gives a reservation back.
type ReleaseRequest struct {
	UserID         string
	ReservationID  string
	Reason         string
	IdempotencyKey string
}

// ReleaseReservation gives a reservation back, in a transaction of its own.
func (s *Service) ReleaseReservation(ctx context.Context, actor Actor, req ReleaseRequest) (*Result, error) {
	return s.do(ctx, "release_reservation", actor, func(ctx context.Context, t *Tx) (*Result, error) { return t.ReleaseReservation(ctx, actor, req) })
}

// ReleaseReservation closes an open reservation without spending it.
func (t *Tx) ReleaseReservation(ctx context.Context, actor Actor, req ReleaseRequest) (*Result, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return t.once(ctx, actor, req.IdempotencyKey, "release", req, req.UserID, lookupOnRefusal, func(u *ent.User) (*Result, error) {
		rsv, err := t.openReservation(ctx, u.ID, req.ReservationID)
		if err != nil {
			return nil, err
		}
		return t.release(ctx, actor, req.IdempotencyKey, u, rsv, creditreservation.StatusReleased, req.Reason)
	})
}

func (t *Tx) release(ctx context.Context, actor Actor, key string, u *ent.User, rsv *ent.CreditReservation,
	status creditreservation.Status, reason string,
) (*Result, error) {
	m := newMovement(credittransaction.KindRelease, rsv.Amount)
	m.reason, m.reservationID = reason, &rsv.ID
	txn, err := t.write(ctx, actor, key, u, m)
	if err != nil {
		return nil, err
	}
	rsv, err = t.closeReservation(ctx, rsv, status, 0)
	if err != nil {
		return nil, err
	}
	return &Result{Transaction: txn, Reservation: rsv, Amount: rsv.Amount}, nil
}

// openReservation reads a reservation of the user that can still be
// captured or released.
func (t *Tx) openReservation(ctx context.Context, userID, id string) (*ent.CreditReservation, error) {
	rsv, err := t.ent.CreditReservation.Query().
		Where(creditreservation.ID(id), creditreservation.UserID(userID)).
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "the user has no reservation %q", id)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: reading reservation %s: %w", id, err)
	}
	if rsv.Status != creditreservation.StatusOpen {
		return nil, apperr.New(apperr.Conflict, "reservation %s is already %s", id, rsv.Status)
	}
	if !rsv.ExpiresAt.After(t.now) {
		return nil, apperr.New(apperr.Conflict, "reservation %s has expired", id)
	}
	return rsv, nil
}

func (t *Tx) closeReservation(ctx context.Context, rsv *ent.CreditReservation, status creditreservation.Status, captured int64) (*ent.CreditReservation, error) {
	clear(t.prefetched)
	// Update, not UpdateOne, which would read the row back: the row is
	// the one just read, under the user's lock, so its new state is known.
	err := t.ent.CreditReservation.Update().
		Where(creditreservation.ID(rsv.ID)).
		SetStatus(status).
		SetCapturedAmount(captured).
		SetClosedAt(t.now).
		SetUpdatedAt(t.now).
		Exec(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: closing reservation %s: %w", rsv.ID, err)
	}
	closed, at := *rsv, t.now
	closed.Status, closed.CapturedAmount, closed.ClosedAt, closed.UpdatedAt = status, captured, &at, at
	return &closed, nil
}
