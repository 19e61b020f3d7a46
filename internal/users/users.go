// Package users turns a verified caller into accounts: it provisions a user
// the first time their token is seen, and decides which user an operation
// targets and whether the caller may act on them.
package users

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/batch"
	"github.com/tally-billing/tally/internal/ledger"
)

// Service finds and provisions users.
type Service struct {
	client *ent.Client
	// ids maps external ids to user ids. Both are immutable and users are
	// never deleted (money records refer to them), so an entry never goes
	// stale; it saves the application backend's every spend a lookup.
	ids *lru.Cache[string, string]
	// reads coalesces the lookups of callers by external id: one query
	// answers every request that arrived while earlier lookups were in
	// flight. A query of its own per request was most of what a balance
	// read cost under load.
	reads *batch.Batcher[*lookup]
}

// lookup is one caller's read of a user by external id. A nil user with a
// nil error means there is no such user yet.
type lookup struct {
	externalID string
	user       *ent.User
	err        error
}

// readOptions: a lookup shares its query with at most 63 others, and at
// most 4 queries run at once, which leaves the rest of the database pool to
// writers however many readers wait. A user is in one running query at a
// time, so that a user read by many requests at once (a balance polled by
// every open tab) is read once per round trip for all of them.
var readOptions = batch.Options{MaxBatch: 64, MaxInFlight: 4, Timeout: 10 * time.Second}

func lookupKey(l *lookup) string { return l.externalID }

// idCacheSize bounds the external id cache (about 100 bytes an entry).
const idCacheSize = 100_000

// New returns the users service.
func New(client *ent.Client) *Service {
	ids, err := lru.New[string, string](idCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	s := &Service{client: client, ids: ids}
	s.reads = batch.New(s.readBatch, lookupKey, readOptions)
	return s
}

// byExternalID reads the user with the external id, or nil if there is
// none. The query starts after the call was queued, so the answer is never
// older than the call: a caller that has seen its own write commit reads it
// back, as with a query of its own.
func (s *Service) byExternalID(externalID string) (*ent.User, error) {
	l := &lookup{externalID: externalID}
	s.reads.Do(l)
	return l.user, l.err
}

// readBatch answers a batch of lookups with one query. Each caller gets its
// own copy of the row, so that nothing one request does to its user is seen
// by another.
func (s *Service) readBatch(ctx context.Context, ls []*lookup) {
	wanted := make([]string, 0, len(ls))
	seen := make(map[string]bool, len(ls))
	for _, l := range ls {
		if !seen[l.externalID] {
			seen[l.externalID] = true
			wanted = append(wanted, l.externalID)
		}
	}
	found, err := s.client.User.Query().Where(user.ExternalIDIn(padToPowerOfTwo(wanted)...)).All(ctx)
	if err != nil {
		for _, l := range ls {
			l.err = err
		}
		return
	}
	byExternalID := make(map[string]*ent.User, len(found))
	for _, u := range found {
		byExternalID[u.ExternalID] = u
	}
	for _, l := range ls {
		if u, ok := byExternalID[l.externalID]; ok {
			copied := *u
			l.user = &copied
		}
	}
}

// padToPowerOfTwo repeats the last id up to the next power of two, so that
// lookups of any number of users take one of a few statement shapes, which
// each connection prepares once, instead of one per batch size.
func padToPowerOfTwo(ids []string) []string {
	n := 1
	for n < len(ids) {
		n *= 2
	}
	for len(ids) < n {
		ids = append(ids, ids[len(ids)-1])
	}
	return ids
}

// cacheKey holds the caller's user for the rest of one request, so that
// several fields of one operation provision and read it once.
type cacheKey struct{}

type cached struct {
	once sync.Once
	user *ent.User
	err  error
}

// WithRequestCache prepares ctx to remember the caller's user for one request.
func WithRequestCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, cacheKey{}, &cached{})
}

// Caller returns the verified caller or UNAUTHENTICATED.
func Caller(ctx context.Context) (auth.Caller, error) {
	c, ok := auth.FromContext(ctx)
	if !ok {
		return auth.Caller{}, apperr.New(apperr.Unauthenticated, "a bearer token is required")
	}
	return c, nil
}

// Viewer returns the caller's own user, created on first sight. Services
// have no account of their own.
func (s *Service) Viewer(ctx context.Context) (*ent.User, error) {
	c, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	if c.Role == auth.RoleService {
		return nil, apperr.New(apperr.Forbidden, "a service token has no account of its own")
	}
	if cache, ok := ctx.Value(cacheKey{}).(*cached); ok {
		cache.once.Do(func() { cache.user, cache.err = s.provision(ctx, c.Subject, c.Email) })
		return cache.user, cache.err
	}
	return s.provision(ctx, c.Subject, c.Email)
}

// provision returns the user with the external id, creating it if needed.
// Concurrent first requests of one user create it once (unique external id).
func (s *Service) provision(ctx context.Context, externalID, email string) (*ent.User, error) {
	u, err := s.byExternalID(externalID)
	if err != nil {
		return nil, fmt.Errorf("users: reading %s: %w", externalID, err)
	}
	if u != nil {
		if email != "" && u.Email != email {
			if u, err = u.Update().SetEmail(email).Save(ctx); err != nil {
				return nil, fmt.Errorf("users: updating the email of %s: %w", externalID, err)
			}
		}
		return u, nil
	}
	create := s.client.User.Create().SetExternalID(externalID)
	if email != "" {
		create.SetEmail(email)
	}
	// On a conflict nothing is inserted and PostgreSQL returns no id:
	// sql.ErrNoRows means another request created the user first.
	if err := create.OnConflict(entsql.ConflictColumns(user.FieldExternalID)).DoNothing().Exec(ctx); err != nil && !errors.Is(err, stdsql.ErrNoRows) {
		return nil, fmt.Errorf("users: creating %s: %w", externalID, err)
	}
	u, err = s.client.User.Query().Where(user.ExternalID(externalID)).Only(ctx)
	if err != nil {
		return nil, fmt.Errorf("users: reading %s after creating it: %w", externalID, err)
	}
	return u, nil
}

// Target names a user in an operation's input: by global id or by external
// id, at most one.
type Target struct {
	UserID         *string
	ExternalUserID *string
}

// Purpose says what the caller wants to do to the target.
type Purpose int

const (
	// ForMovement: spend, reserve, capture, release. Users act on
	// themselves; services and admins name the user.
	ForMovement Purpose = iota
	// ForAdmin: admin operations; a user named by external id who has never
	// signed in is provisioned, so credits can be granted in advance.
	ForAdmin
)

// Validate checks that a target names its user one way at most.
func (t Target) Validate() error {
	if t.UserID != nil && t.ExternalUserID != nil {
		return apperr.Invalid("externalUserId", "give userId or externalUserId, not both")
	}
	return nil
}

// Resolve returns the user an operation targets and the actor it runs as.
// For ForMovement, a target named by external id may carry only its ID and
// ExternalID (the ledger reads the rest under its lock).
func (s *Service) Resolve(ctx context.Context, t Target, purpose Purpose) (*ent.User, ledger.Actor, error) {
	c, err := Caller(ctx)
	if err != nil {
		return nil, ledger.Actor{}, err
	}
	if err := t.Validate(); err != nil {
		return nil, ledger.Actor{}, err
	}
	named := t.UserID != nil || t.ExternalUserID != nil
	switch c.Role {
	case auth.RoleUser:
		me, err := s.Viewer(ctx)
		if err != nil {
			return nil, ledger.Actor{}, err
		}
		if named && !s.isSelf(me, t) {
			return nil, ledger.Actor{}, apperr.New(apperr.Forbidden, "a user may act only on their own account")
		}
		return me, ledger.Actor{Kind: ledger.ActorUser, ID: me.ID}, nil
	case auth.RoleService, auth.RoleAdmin:
		if !named {
			return nil, ledger.Actor{}, apperr.Invalid("userId", "name the user with userId or externalUserId")
		}
		actor := ledger.Actor{Kind: ledger.ActorService, ID: c.Subject}
		if c.Role == auth.RoleAdmin {
			me, err := s.Viewer(ctx)
			if err != nil {
				return nil, ledger.Actor{}, err
			}
			actor = ledger.Actor{Kind: ledger.ActorAdmin, ID: me.ID}
		}
		target, err := s.find(ctx, t, purpose == ForAdmin)
		return target, actor, err
	default:
		return nil, ledger.Actor{}, apperr.New(apperr.Forbidden, "unknown role")
	}
}

func (s *Service) isSelf(me *ent.User, t Target) bool {
	return (t.UserID != nil && *t.UserID == me.ID) || (t.ExternalUserID != nil && *t.ExternalUserID == me.ExternalID)
}

func (s *Service) find(ctx context.Context, t Target, provision bool) (*ent.User, error) {
	if t.ExternalUserID != nil {
		ext := *t.ExternalUserID
		if err := auth.CheckExternalID("externalUserId", ext); err != nil {
			return nil, err
		}
		if provision {
			return s.provision(ctx, ext, "")
		}
		if id, ok := s.ids.Get(ext); ok {
			return &ent.User{ID: id, ExternalID: ext}, nil
		}
		u, err := s.byExternalID(ext)
		if err != nil {
			return nil, fmt.Errorf("users: reading %s: %w", ext, err)
		}
		if u == nil {
			return nil, apperr.New(apperr.NotFound, "no user with external id %q", ext)
		}
		s.ids.Add(ext, u.ID)
		return u, nil
	}
	u, err := s.client.User.Get(ctx, *t.UserID)
	if ent.IsNotFound(err) {
		return nil, apperr.New(apperr.NotFound, "no user with id %q", *t.UserID)
	}
	if err != nil {
		return nil, fmt.Errorf("users: reading %s: %w", *t.UserID, err)
	}
	return u, nil
}
