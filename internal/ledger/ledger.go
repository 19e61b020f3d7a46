// Package ledger is the only code that moves credits. Every movement is a
// CreditTransaction whose postings (CreditLedger rows) sum to zero, written
// in one database transaction together with the user's cached balance, the
// lots it touched and the idempotency record of the request.
//
// Accounts: a user's spendable account is "user:<user id>"; the other side of
// every movement is a system account (see the Account constants). Lots track
// where a user's credits came from: the sum of a lot's postings on the user's
// account is its remaining amount, and the sum of its postings on
// system:held is its held amount. Postings on a user's account that name no
// lot are debt: a clawback that finds too few unspent credits leaves the
// balance negative, and the next credits that arrive repay the debt first.
// So, for every user, the lots' remaining credits add up to max(balance, 0).
//
// Concurrency: every operation locks the user's row first (SELECT … FOR
// UPDATE on PostgreSQL; on SQLite every transaction is BEGIN IMMEDIATE, which
// takes the database's write lock), so writers on one user are serialized by
// the database, across any number of server processes. Serialization
// failures, deadlocks and busy errors are retried a bounded number of times.
package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/predicate"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/batch"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/idempotency"
)

// System accounts: the other side of every movement.
const (
	AccountPurchases = "system:purchases" // credits bought
	AccountGrants    = "system:grants"    // credits given by admins or promotions
	AccountSpent     = "system:spent"     // credits used
	AccountExpired   = "system:expired"   // credits that expired unused
	AccountRevoked   = "system:revoked"   // credits taken back by admins
	AccountClawback  = "system:clawback"  // credits taken back after a refund or lost dispute
	AccountHeld      = "system:held"      // credits out of reach during a dispute
)

// UserAccount is the name of a user's spendable account.
func UserAccount(userID string) string { return "user:" + userID }

// MaxAmount bounds every amount and balance: 2^53-1, the largest integer a
// JSON client (JavaScript) reads exactly. Anything larger is refused.
const MaxAmount int64 = 1<<53 - 1

// ActorKind says what kind of caller moved credits.
type ActorKind string

// The kinds of actor.
const (
	ActorUser    ActorKind = "user"
	ActorService ActorKind = "service"
	ActorAdmin   ActorKind = "admin"
	ActorStripe  ActorKind = "stripe"
	ActorSystem  ActorKind = "system"
)

// Actor is who asked for a movement. Its string form is recorded on the
// transaction and is the scope of its idempotency keys: two callers never
// share keys.
type Actor struct {
	Kind ActorKind
	ID   string
}

func (a Actor) String() string { return string(a.Kind) + ":" + a.ID }

func (a Actor) validate() error {
	switch a.Kind {
	case ActorUser, ActorService, ActorAdmin, ActorStripe, ActorSystem:
	default:
		return fmt.Errorf("ledger: unknown actor kind %q", a.Kind)
	}
	if a.ID == "" {
		return errors.New("ledger: actor without an id")
	}
	return nil
}

// Service moves and reads credits.
type Service struct {
	db          *database.DB
	now         func() time.Time
	maxAttempts int
	notify      func(context.Context, BalanceChange)
	// notifications, on PostgreSQL, publishes balance changes in the
	// statement that writes them (see WithNotifications).
	notifications NotificationEncoder
	events        EventWriter // nil: no outbound events
	// defaultThreshold is the low-balance threshold of users without one.
	defaultThreshold int64
	recharges        RechargeTrigger // nil: no auto-recharge
	stats            counters
	spends           *batch.Batcher[*spendCall]
	tracer           trace.Tracer  // nil: tracing is off (see tracing.go)
	chunkSize        int           // subjects per round of a check (see checkwalk.go)
	progressAt       time.Duration // how often a stored check run records its progress
}

// counters are the ledger's running totals, read by the server's metrics.
type counters struct {
	transactions atomic.Uint64 // database transactions committed
	retries      atomic.Uint64 // attempts rolled back by a conflict and tried again
	conflicts    atomic.Uint64 // operations given up after maxAttempts conflicts
}

// Stats are the ledger's running totals since the Service was made.
type Stats struct {
	Transactions uint64
	Retries      uint64
	Conflicts    uint64
}

// Stats returns the ledger's running totals.
func (s *Service) Stats() Stats {
	return Stats{
		Transactions: s.stats.transactions.Load(),
		Retries:      s.stats.retries.Load(),
		Conflicts:    s.stats.conflicts.Load(),
	}
}

// BalanceChange is a user's new balance after a committed transaction.
type BalanceChange struct {
	UserID        string
	Balance       int64
	TransactionID string
	At            time.Time
}

// WithNotifier calls notify with every balance change once its database
// transaction has committed (never for one that rolled back), for example to
// feed subscriptions.
func WithNotifier(notify func(context.Context, BalanceChange)) Option {
	return func(s *Service) { s.notify = notify }
}

// Option configures a Service.
type Option func(*Service)

// WithClock replaces the clock (tests of expiry).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// WithMaxAttempts bounds how often a transaction is tried when the database
// reports a conflict.
func WithMaxAttempts(n int) Option { return func(s *Service) { s.maxAttempts = n } }

// WithCheckChunkSize sets how many subjects a round of the invariant
// checks reads (tests make rounds small to have many of them).
func WithCheckChunkSize(n int) Option { return func(s *Service) { s.chunkSize = max(n, 1) } }

// WithCheckProgressEvery sets how often a stored check run records its
// progress (tests record every round).
func WithCheckProgressEvery(d time.Duration) Option { return func(s *Service) { s.progressAt = d } }

// New returns the ledger over db.
func New(db *database.DB, opts ...Option) *Service {
	s := &Service{db: db, now: time.Now, maxAttempts: 10, chunkSize: checkChunkSize, progressAt: progressEvery}
	for _, o := range opts {
		o(s)
	}
	s.spends = batch.New(s.runSpends, func(c *spendCall) string { return c.req.UserID },
		batch.Options{MaxBatch: maxSpendBatch, MaxInFlight: maxBatchesInFlight, Timeout: spendBatchTimeout})
	return s
}

// Tx is one database transaction of the ledger. Its operations may be
// combined with other writes of the caller (the payments package records the
// Stripe event in the same transaction as the credits).
type Tx struct {
	s       *Service
	ent     *ent.Tx
	sql     *sql.Tx
	now     time.Time
	attempt int // 1 for the first try, more after conflicts
	changes []BalanceChange
	// dirtyLots were drawn from in memory and are written with the next
	// movement (before commit at the latest).
	dirtyLots map[string]*ent.CreditLot
	// locked are the users this transaction holds. Once locked, a user's
	// row changes only through the ledger's own in-memory copy (written back
	// with each movement), so locking it again need not read it again.
	locked map[string]*ent.User
	// prefetched are lots and reservations a user's lock read with it,
	// for the next look at what the user may spend (and no later: any
	// write forgets them).
	prefetched map[string]lotsOf
	// moved are the users the transaction wrote a movement for, whose
	// balance levels are looked at before it commits (levels.go).
	moved map[string]*ent.User
	// standing are balances after the transaction's movements that the
	// movements worked out themselves (see standsAt).
	standing map[string]Balance
	// lookForRecharge are users not moved whose auto-recharge threshold
	// is looked at all the same (see LookForRecharge).
	lookForRecharge map[string]*ent.User
	// noRecharges are users the transaction may not start a recharge for
	// (it claws back or holds their credits).
	noRecharges map[string]bool
	// events are the outbound events written just before the commit.
	events []Event
	// along are the caller's writes the next ledger write carries.
	along []Along
	// readForEvents is what the EventWriter read with the users' lock,
	// if it did (see LockReader).
	readForEvents any
	// fingerprints are those of the keyed requests being served, which
	// their transactions hold (see serve).
	fingerprints map[idempotency.Key][]byte
}

// Ent is the underlying transaction, for the caller's own writes.
func (t *Tx) Ent() *ent.Tx { return t.ent }

// SQL is the same transaction as database/sql sees it, for the job queue's
// inserts (a job commits with its cause).
func (t *Tx) SQL() *sql.Tx { return t.sql }

// Now is the time the transaction treats as now.
func (t *Tx) Now() time.Time { return t.now }

// Within runs fn in one database transaction, committed if fn returns nil.
// When the database reports a conflict (deadlock, serialization failure,
// busy database, a concurrent insert of the same idempotency key) the whole
// transaction is rolled back and fn runs again, a bounded number of times;
// fn must therefore have no effects outside the transaction.
//
// A database that cannot be reached, or a connection that breaks, is
// UNAVAILABLE (see database.ClassifyTx and database.ClassifyCommit), and is
// not tried again here: after a COMMIT whose answer was lost the
// transaction may have committed, and only the caller's retry with the same
// idempotency key can say so safely (it replays).
func (s *Service) Within(ctx context.Context, fn func(ctx context.Context, tx *Tx) error) (err error) {
	ctx, span := s.startTransaction(ctx)
	attempt := 1
	defer func() { endTransaction(span, attempt, err) }()
	for ; ; attempt++ {
		err = s.attempt(ctx, attempt, fn)
		if err == nil || !retryable(err) || attempt >= s.maxAttempts {
			break
		}
		s.stats.retries.Add(1)
		// Jittered backoff, so that colliding writers do not collide again.
		delay := time.Duration(1+rand.IntN(1<<min(attempt, 6))) * time.Millisecond
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	if retryable(err) {
		s.stats.conflicts.Add(1)
		return apperr.New(apperr.Conflict, "the account is busy; try again")
	}
	return err
}

func (s *Service) attempt(ctx context.Context, n int, fn func(context.Context, *Tx) error) (err error) {
	tx, sqlTx, err := s.db.BeginTx(ctx)
	if err != nil {
		return database.ClassifyTx(fmt.Errorf("ledger: beginning a transaction: %w", err))
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	t := &Tx{s: s, ent: tx, sql: sqlTx, now: s.now().UTC(), attempt: n}
	if err = fn(ctx, t); err != nil {
		return database.ClassifyTx(err)
	}
	if err = t.flushLots(ctx); err != nil {
		return database.ClassifyTx(err)
	}
	if err = t.flushAlong(ctx); err != nil {
		return database.ClassifyTx(err)
	}
	if err = t.lookAtBalances(ctx); err != nil {
		return database.ClassifyTx(err)
	}
	if err = t.writeEvents(ctx); err != nil {
		return database.ClassifyTx(err)
	}
	if err = tx.Commit(); err != nil {
		// Classified before it is wrapped: database/sql's refusal to send
		// COMMIT is recognized by its bare value.
		return fmt.Errorf("ledger: committing: %w", database.ClassifyCommit(err))
	}
	s.stats.transactions.Add(1)
	if s.notify != nil {
		for _, c := range t.changes {
			s.notify(ctx, c)
		}
	}
	return nil
}

// ErrRetry marks an error that a fresh attempt of the whole transaction
// resolves (for example a unique insert that lost a race): Within retries
// errors that wrap it.
var ErrRetry = errors.New("retry")

// keyTaken marks a unique violation in writing transactions as
// idempotency.ErrTaken, which Within retries: the unique indexes a new
// transaction can meet are its key's (ids are new), which a concurrent
// request with the key took, and those of a caller's rows written along
// (Along: an event's record), which a concurrent delivery wrote. Either
// way the next attempt finds what was written.
func keyTaken(err error) error {
	var pgErr *pgconn.PgError
	var sqliteErr *sqlite.Error
	if (errors.As(err, &pgErr) && pgErr.Code == "23505") ||
		(errors.As(err, &sqliteErr) && sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE) {
		return fmt.Errorf("%w: %w", idempotency.ErrTaken, err)
	}
	return err
}

func retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrRetry) || errors.Is(err, idempotency.ErrTaken) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// serialization_failure, deadlock_detected, lock_not_available
		return pgErr.Code == "40001" || pgErr.Code == "40P01" || pgErr.Code == "55P03"
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		code := sqliteErr.Code() & 0xff
		return code == 5 || code == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// LockUser locks a user for the rest of the transaction, for callers that
// combine their own writes with the ledger's (take it before reading what
// the user's credits depend on: every ledger operation locks the user
// first, so the lock order is always user, then the rest).
func (t *Tx) LockUser(ctx context.Context, userID string) (*ent.User, error) {
	return t.lockUser(ctx, userID)
}

// LockUsersWhere is LockUser for the users that match, in one statement
// and in id order (a subquery can name them: the users of some payments).
func (t *Tx) LockUsersWhere(ctx context.Context, match predicate.User) (map[string]*ent.User, error) {
	q := t.ent.User.Query().Where(match).Order(user.ByID())
	if t.s.db.Dialect == dialect.Postgres {
		q = q.ForUpdate()
	}
	found, err := q.All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: locking users: %w", err)
	}
	users := make(map[string]*ent.User, len(found))
	for _, u := range found {
		if held, ok := t.locked[u.ID]; ok {
			u = held // it may have moved in this transaction
		} else {
			t.holds(u)
		}
		users[u.ID] = u
	}
	return users, nil
}

// lockUsers locks several users, in id order (so that two transactions
// locking overlapping sets never deadlock), and returns those that exist.
func (t *Tx) lockUsers(ctx context.Context, ids []string) (map[string]*ent.User, error) {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	users := make(map[string]*ent.User, len(ids))
	missing := ids[:0:0]
	for _, id := range ids {
		if u, ok := t.locked[id]; ok {
			users[id] = u
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return users, nil
	}
	q := t.ent.User.Query().Where(user.IDIn(missing...)).Order(user.ByID())
	if t.s.db.Dialect == dialect.Postgres {
		q = q.ForUpdate()
	}
	found, err := q.All(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: locking %d users: %w", len(missing), err)
	}
	for _, u := range found {
		users[u.ID] = u
		t.holds(u)
	}
	return users, nil
}

func (t *Tx) holds(u *ent.User) {
	if t.locked == nil {
		t.locked = make(map[string]*ent.User)
	}
	t.locked[u.ID] = u
}

// lockUser reads the user's row and holds it until the transaction ends.
func (t *Tx) lockUser(ctx context.Context, userID string) (*ent.User, error) {
	if u, ok := t.locked[userID]; ok {
		return u, nil
	}
	q := t.ent.User.Query().Where(user.ID(userID))
	if t.s.db.Dialect == dialect.Postgres {
		q = q.ForUpdate()
	}
	u, err := q.Only(ctx)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no user with id %q", userID)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: locking user %s: %w", userID, err)
	}
	t.holds(u)
	return u, nil
}
