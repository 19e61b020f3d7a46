package graph

import (
	"context"
	"errors"
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
// payments) in one statement per field of the query.
type loaders struct {
	balances     *dataloadgen.Loader[string, ledger.Balance]
	transactions *dataloadgen.Loader[pageKey, *ent.CreditTransactionConnection]
	payments     *dataloadgen.Loader[pageKey, *ent.PaymentConnection]

	mu sync.Mutex
	// pages holds, per field of the document, what its pages were asked
	// with: the same field under the same variables has the same arguments
	// and selection for every user, so the first user's stand for all.
	pages map[*ast.Field]pageRequest
}

// pageKey is one user's page of one field of the document.
type pageKey struct {
	userID string
	field  *ast.Field
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
	l := &loaders{pages: map[*ast.Field]pageRequest{}}
	// One batch may hold more users than one statement takes (several lists
	// of users in one response); the loader then splits it.
	l.balances = dataloadgen.NewMappedLoader(r.Ledger.Balances, dataloadgen.WithBatchCapacity(ledger.MaxBalanceBatch))
	l.transactions = dataloadgen.NewLoader(func(ctx context.Context, keys []pageKey) ([]*ent.CreditTransactionConnection, []error) {
		return loadPages(l, keys, r.firstTransactionPages)
	})
	l.payments = dataloadgen.NewLoader(func(ctx context.Context, keys []pageKey) ([]*ent.PaymentConnection, []error) {
		return loadPages(l, keys, r.firstPaymentPages)
	})
	return context.WithValue(ctx, loadersKey{}, l)
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
	b, err := l.balances.Load(ctx, userID)
	if errors.Is(err, dataloadgen.ErrNotFound) {
		return ledger.Balance{}, apperr.New(apperr.NotFound, "no user with id %q", userID)
	}
	return b, err
}

// register remembers the first request of a field, so that the batch can
// read its arguments and selection.
func (l *loaders) register(field *ast.Field, req pageRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.pages[field]; !ok {
		l.pages[field] = req
	}
}

func (l *loaders) request(field *ast.Field) (pageRequest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	req, ok := l.pages[field]
	return req, ok
}

// loadPages answers a batch of pages with one read per field of the
// document: read gets the users of one field and returns each one's page.
func loadPages[C any](l *loaders, keys []pageKey, read func(req pageRequest, userIDs []string) (map[string]C, error)) ([]C, []error) {
	byField := map[*ast.Field][]string{}
	var fields []*ast.Field
	for _, k := range keys {
		if _, ok := byField[k.field]; !ok {
			fields = append(fields, k.field)
		}
		byField[k.field] = append(byField[k.field], k.userID)
	}
	pages := make(map[pageKey]C, len(keys))
	failed := make(map[*ast.Field]error)
	for _, f := range fields {
		req, ok := l.request(f)
		if !ok {
			failed[f] = errors.New("graph: a page was loaded before its field was registered")
			continue
		}
		got, err := read(req, byField[f])
		if err != nil {
			failed[f] = err
			continue
		}
		for userID, page := range got {
			pages[pageKey{userID: userID, field: f}] = page
		}
	}
	values := make([]C, len(keys))
	errs := make([]error, len(keys))
	for i, k := range keys {
		values[i], errs[i] = pages[k], failed[k.field]
	}
	return values, errs
}
