package graph

import (
	"context"
	"sort"
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent/dialect/sql"
	"github.com/99designs/gqlgen/graphql"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/graph/model"
	"github.com/tally-billing/tally/internal/admin"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/users"
)

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func int64Ptr(p *int) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}

func metadataMap(entries []*model.MetadataEntryInput) (map[string]string, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(entries))
	for _, e := range entries {
		if _, dup := m[e.Key]; dup {
			return nil, apperr.Invalid("metadata", "metadata key %q appears twice", e.Key)
		}
		m[e.Key] = e.Value
	}
	return m, nil
}

func metadataEntries(m map[string]string) []*model.MetadataEntry {
	out := make([]*model.MetadataEntry, 0, len(m))
	for k, v := range m {
		out = append(out, &model.MetadataEntry{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// adminCaller is the admin running the current request.
func (r *Resolver) adminCaller(ctx context.Context) (admin.Admin, error) {
	me, err := r.Accounts.Viewer(ctx)
	if err != nil {
		return admin.Admin{}, err
	}
	return admin.Admin{User: me, RequestID: middleware.GetReqID(ctx)}, nil
}

// reservationTarget finds the user a reservation belongs to and checks the
// caller may act on it: its owner, a service or an admin. Another user's
// reservation is NOT_FOUND, not FORBIDDEN, so ids reveal nothing.
func (r *Resolver) reservationTarget(ctx context.Context, reservationID string) (*ent.User, ledger.Actor, error) {
	res, err := r.Client.CreditReservation.Query().
		Where(creditreservation.ID(reservationID)).
		Select(creditreservation.FieldUserID).
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil, ledger.Actor{}, apperr.New(apperr.NotFound, "no reservation with id %q", reservationID)
	}
	if err != nil {
		return nil, ledger.Actor{}, err
	}
	target, actor, err := r.Accounts.Resolve(ctx, users.Target{UserID: &res.UserID}, users.ForMovement)
	if apperr.CodeOf(err) == apperr.Forbidden {
		return nil, ledger.Actor{}, apperr.New(apperr.NotFound, "no reservation with id %q", reservationID)
	}
	return target, actor, err
}

// userAfter is the user as an operation left them: the row the ledger read
// under its lock and updated, or (when the operation did not say) as read now.
func (r *Resolver) userAfter(ctx context.Context, res *ledger.Result, u *ent.User) (*ent.User, error) {
	if res.User != nil {
		return res.User, nil
	}
	return r.Client.User.Get(ctx, u.ID)
}

// cancelCaller is who cancels a subscription: a user, only their own
// (ownerID, so that another user's is NOT_FOUND), or an admin, anyone's,
// audited by audit in the transaction that records the cancellation.
func (r *Resolver) cancelCaller(ctx context.Context, atPeriodEnd bool) (
	ownerID string, audit func(context.Context, *ent.Tx, *ent.CreditSubscription) error, err error,
) {
	if role, _ := callerRole(ctx); role == auth.RoleAdmin {
		a, err := r.adminCaller(ctx)
		if err != nil {
			return "", nil, err
		}
		return "", func(ctx context.Context, tx *ent.Tx, sub *ent.CreditSubscription) error {
			return a.CancelAudit(ctx, tx, sub, atPeriodEnd)
		}, nil
	}
	me, err := r.Accounts.Viewer(ctx)
	if err != nil {
		return "", nil, err
	}
	return me.ID, nil, nil
}

func callerRole(ctx context.Context) (auth.Role, bool) {
	c, ok := auth.FromContext(ctx)
	return c.Role, ok
}

func (r *Resolver) setFrozen(ctx context.Context, userID, externalUserID *string, frozen bool, reason string) (*ent.User, *ent.AdminAction, error) {
	a, err := r.adminCaller(ctx)
	if err != nil {
		return nil, nil, err
	}
	target, _, err := r.Accounts.Resolve(ctx, users.Target{UserID: userID, ExternalUserID: externalUserID}, users.ForMovement)
	if err != nil {
		return nil, nil, err
	}
	return r.Admin.SetFrozen(ctx, a, target, frozen, reason)
}

// orderOr is the client's order, or the list's default (newest first).
func orderOr[T any](given, fallback *T) *T {
	if given != nil {
		return given
	}
	return fallback
}

// historyKeyset is the condition for a forward page of a user's history
// after a cursor, newest first: a row comparison, (created_at, id) <
// (cursor), which both databases answer with a range of the user's
// (user_id, created_at, id) index, so that every page costs the same
// however deep. entgql's own cursor condition (created_at < t OR
// (created_at = t AND id < i)) is no range: PostgreSQL read the whole
// history older than the cursor and sorted it. Forward pages take this
// path (totalCount is counted apart, see countedPage); the rest stay with
// entgql's condition.
func historyKeyset(after, before *entgql.Cursor[string], last *int) (func(*sql.Selector), bool) {
	if after == nil || before != nil || last != nil {
		return nil, false
	}
	at, ok := after.Value.(time.Time)
	if !ok {
		return nil, false
	}
	return func(s *sql.Selector) {
		s.Where(sql.CompositeLT([]string{s.C(credittransaction.FieldCreatedAt), s.C(credittransaction.FieldID)}, at, after.ID))
	}, true
}

// asksFor says whether the current field's selection includes the named
// field.
func asksFor(ctx context.Context, name string) bool {
	if graphql.GetFieldContext(ctx) == nil {
		return false
	}
	for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
		if f.Name == name {
			return true
		}
	}
	return false
}
