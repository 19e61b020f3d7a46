package graph

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vikstrous/dataloadgen"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
)

// loaders gather what the fields of many users in one response read, so
// that a page of users costs the statements of one user: the balances of all
// of them in one statement, the first page of each one's transactions (and
// payments, lots, reservations) in one statement per place of the response.
type loaders struct {
	// made makes the loaders below on the first field that batches: most
	// operations (a viewer's balance, one page) have no list of users and
	// would allocate them for nothing.
	made sync.Once
	r    *Resolver

	balances     *dataloadgen.Loader[string, ledger.Balance]
	transactions *dataloadgen.Loader[pageKey, *ent.CreditTransactionConnection]
	payments     *dataloadgen.Loader[pageKey, *ent.PaymentConnection]
	lots         *dataloadgen.Loader[pageKey, *ent.CreditLotConnection]
	reservations *dataloadgen.Loader[pageKey, *ent.CreditReservationConnection]

	mu sync.Mutex
	// queued are the lists whose users were all put in a batch at once
	// (see siblings), by what they were queued for.
	queued map[queuedList]bool
	// pages holds, per place of the response (its path without the list
	// indexes), what its pages were asked with: the items of a list share
	// the arguments and the selection of a place, so the first user's stand
	// for all. Not per field of the document: a fragment's field may be
	// merged with different siblings in different places.
	pages map[string]pageRequest
}

// pageKey is one user's page at one place of the response.
type pageKey struct {
	userID string
	place  string
}

type pageRequest struct {
	// ctx is the field's own, which eager loading reads the selection from.
	ctx   context.Context
	first int
	// counted says totalCount is asked: the batch counts too.
	counted bool
	// pageless is a page of no edges (first: 0, or edges not asked): only
	// the counts, if asked, are read.
	pageless bool
	// where is the field's filter, a *ent.CreditTransactionWhereInput or a
	// *ent.PaymentWhereInput (nil pointers for none).
	where any
	// order is the field's orderBy, a *ent.CreditLotOrder or a
	// *ent.CreditReservationOrder (nil pointers for the default).
	order any
}

type queuedList struct {
	list *graphql.FieldContext
	what string
}

type loadersKey struct{}

// withLoaders gives a query operation its loaders. Only queries: a
// mutation's later fields must see what its earlier ones changed, and a
// subscription's events must not be answered from its first one's reads,
// so both read directly.
func (r *Resolver) withLoaders(ctx context.Context) context.Context {
	if !graphql.HasOperationContext(ctx) {
		return ctx
	}
	if oc := graphql.GetOperationContext(ctx); oc.Operation == nil || oc.Operation.Operation != ast.Query {
		return ctx
	}
	return context.WithValue(ctx, loadersKey{}, &loaders{r: r})
}

func (r *Resolver) makeLoaders(l *loaders) {
	l.pages, l.queued = map[string]pageRequest{}, map[queuedList]bool{}
	// One batch may hold more users than one statement takes (several lists
	// of users in one response); the loader then splits it.
	l.balances = dataloadgen.NewMappedLoader(r.Ledger.Balances, dataloadgen.WithBatchCapacity(ledger.MaxBalanceBatch))
	l.transactions = dataloadgen.NewLoader(func(ctx context.Context, keys []pageKey) ([]*ent.CreditTransactionConnection, []error) {
		return loadPages(l, keys, r.firstTransactionPages)
	})
	l.payments = dataloadgen.NewLoader(func(ctx context.Context, keys []pageKey) ([]*ent.PaymentConnection, []error) {
		return loadPages(l, keys, r.firstPaymentPages)
	})
	l.lots = dataloadgen.NewLoader(func(ctx context.Context, keys []pageKey) ([]*ent.CreditLotConnection, []error) {
		return loadPages(l, keys, r.firstLotPages)
	})
	l.reservations = dataloadgen.NewLoader(func(ctx context.Context, keys []pageKey) ([]*ent.CreditReservationConnection, []error) {
		return loadPages(l, keys, r.firstReservationPages)
	})
}

func loadersFrom(ctx context.Context) *loaders {
	l, _ := ctx.Value(loadersKey{}).(*loaders)
	return l
}

// batching is the operation's loaders when the field's object is an item
// of a list (a page of users, a user of each transaction): only there can
// other objects' fields join its batch, and elsewhere (viewer, user(id:)) a
// batch of one would only wait the loader's window for nothing.
func batching(ctx context.Context) *loaders {
	l := loadersFrom(ctx)
	if l == nil {
		return nil
	}
	for fc := graphql.GetFieldContext(ctx); fc != nil; fc = fc.Parent {
		if fc.Index != nil {
			l.made.Do(func() { l.r.makeLoaders(l) })
			return l
		}
	}
	return nil
}

// balanceOf is the user's balance, batched with the other users' of the
// list when there is one.
func (r *Resolver) balanceOf(ctx context.Context, userID string) (ledger.Balance, error) {
	l := batching(ctx)
	if l == nil {
		return r.Ledger.Balance(ctx, userID)
	}
	if ids := l.siblings(ctx, "balances", userID); ids != nil {
		l.balances.LoadAllThunk(ctx, ids)
	}
	b, err := l.balances.Load(ctx, userID)
	if errors.Is(err, dataloadgen.ErrNotFound) {
		return ledger.Balance{}, apperr.New(apperr.NotFound, "no user with id %q", userID)
	}
	return b, err
}

// register remembers the first request of a place, so that the batch can
// read its arguments and selection.
func (l *loaders) register(place string, req pageRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.pages[place]; !ok {
		l.pages[place] = req
	}
}

func (l *loaders) request(place string) (pageRequest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	req, ok := l.pages[place]
	return req, ok
}

// siblings are, the first time a list's users ask for what (balances, or
// a place's pages), the ids of all of them, when the user is an item of a
// list of users (a page of users, nodes): queued at once, they share one
// batch, however late the last of them would have come on its own (the
// loader's window is a time, and a slow machine stretched a page over two
// batches). Nil for other lists, and after the first time.
func (l *loaders) siblings(ctx context.Context, what, userID string) []string {
	var item *graphql.FieldContext
	for fc := graphql.GetFieldContext(ctx); fc != nil; fc = fc.Parent {
		if fc.Index != nil {
			item = fc
			break
		}
	}
	if item == nil || item.Parent == nil {
		return nil
	}
	key := queuedList{list: item.Parent, what: what}
	l.mu.Lock()
	done := l.queued[key]
	l.queued[key] = true
	l.mu.Unlock()
	if done {
		return nil
	}
	var ids []string
	switch list := item.Parent.Result.(type) {
	case []*ent.UserEdge:
		for _, e := range list {
			if e != nil && e.Node != nil {
				ids = append(ids, e.Node.ID)
			}
		}
	case []*ent.User:
		for _, u := range list {
			if u != nil {
				ids = append(ids, u.ID)
			}
		}
	case []ent.Noder:
		for _, n := range list {
			if u, ok := n.(*ent.User); ok && u != nil {
				ids = append(ids, u.ID)
			}
		}
	}
	if !slices.Contains(ids, userID) {
		return nil // the user is further inside the item, not the item
	}
	return ids
}

// placeOf is the field's path in the response without its list indexes:
// the same for every item of a list.
func placeOf(ctx context.Context) string {
	var b strings.Builder
	for _, el := range graphql.GetPath(ctx) {
		if name, ok := el.(ast.PathName); ok {
			b.WriteString(string(name))
			b.WriteByte('.')
		}
	}
	return b.String()
}

// loadPages answers a batch of pages with one read per place of the
// response: read gets the users of one place and returns each one's page.
func loadPages[C any](l *loaders, keys []pageKey, read func(req pageRequest, userIDs []string) (map[string]C, error)) ([]C, []error) {
	byPlace := map[string][]string{}
	var places []string
	for _, k := range keys {
		if _, ok := byPlace[k.place]; !ok {
			places = append(places, k.place)
		}
		byPlace[k.place] = append(byPlace[k.place], k.userID)
	}
	pages := make(map[pageKey]C, len(keys))
	failed := make(map[string]error)
	for _, place := range places {
		req, ok := l.request(place)
		if !ok {
			failed[place] = errors.New("graph: a page was loaded before its place was registered")
			continue
		}
		got, err := read(req, byPlace[place])
		if err != nil {
			failed[place] = err
			continue
		}
		for userID, page := range got {
			pages[pageKey{userID: userID, place: place}] = page
		}
	}
	values := make([]C, len(keys))
	errs := make([]error, len(keys))
	for i, k := range keys {
		values[i], errs[i] = pages[k], failed[k.place]
	}
	return values, errs
}
