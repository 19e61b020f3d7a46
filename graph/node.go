package graph

import (
	"context"
	"errors"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/adminaction"
	"github.com/tally-billing/tally/ent/creditledger"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditpackage"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// nodeTables maps an id prefix (see ent/schema IDPrefixes) to the table
// holding that entity, so a Relay global id resolves without a lookup. Types
// that are not exposed over GraphQL are absent.
var nodeTables = map[string]string{
	"usr": user.Table,
	"pkg": creditpackage.Table,
	"pay": payment.Table,
	"txn": credittransaction.Table,
	"led": creditledger.Table,
	"lot": creditlot.Table,
	"res": creditreservation.Table,
	"pev": processedevent.Table,
	"adm": adminaction.Table,
}

// publicNodeTables are the entities anyone may read. Every other entity is
// hidden until the API issue brings callers and their permissions.
var publicNodeTables = map[string]bool{creditpackage.Table: true}

func errNodeNotFound(id string) error {
	return apperr.New(apperr.NotFound, "no node with id %q is visible to you", id)
}

func nodeTable(id string) (string, error) {
	prefix, err := pulid.Prefix(id)
	if err != nil {
		return "", apperr.New(apperr.InvalidArgument, "%q is not a Tally id", id)
	}
	table, ok := nodeTables[prefix]
	if !ok {
		return "", errNodeNotFound(id)
	}
	return table, nil
}

func (r *Resolver) node(ctx context.Context, id string) (ent.Noder, error) {
	table, err := nodeTable(id)
	if err != nil {
		return nil, err
	}
	if !publicNodeTables[table] {
		return nil, errNodeNotFound(id)
	}
	n, err := r.Client.Noder(ctx, id, ent.WithFixedNodeType(table))
	var notFound *ent.NotFoundError
	if errors.As(err, &notFound) {
		return nil, errNodeNotFound(id)
	}
	return n, err
}
