package graph

import (
	"context"
	"errors"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/adminaction"
	"github.com/tally-billing/tally/ent/creditledger"
	"github.com/tally-billing/tally/ent/creditlot"
	"github.com/tally-billing/tally/ent/creditpackage"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditreservation"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/ent/webhookdelivery"
	"github.com/tally-billing/tally/ent/webhookendpoint"
	"github.com/tally-billing/tally/ent/webhookevent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
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
	"wep": webhookendpoint.Table,
	"whe": webhookevent.Table,
	"whd": webhookdelivery.Table,
	"pln": creditplan.Table,
	"sub": creditsubscription.Table,
}

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
	visible, err := r.visible(ctx, table, id)
	if err != nil {
		return nil, err
	}
	if !visible {
		// The same answer as for an id that does not exist, so that ids of
		// other users' objects reveal nothing.
		return nil, errNodeNotFound(id)
	}
	n, err := r.Client.Noder(ctx, id, ent.WithFixedNodeType(table))
	var notFound *ent.NotFoundError
	if errors.As(err, &notFound) {
		return nil, errNodeNotFound(id)
	}
	return n, err
}

// visible applies to a node the authorization of the field that lists it:
// credit packs and plans are public; a user sees their own objects; admins see
// everything; services see only what is public. Ownership is read with a
// query of its own: the node itself is loaded with only the fields the
// client selected.
func (r *Resolver) visible(ctx context.Context, table, id string) (bool, error) {
	if table == creditpackage.Table || table == creditplan.Table {
		return true, nil
	}
	c, ok := auth.FromContext(ctx)
	if !ok {
		return false, nil
	}
	switch c.Role {
	case auth.RoleAdmin:
		return true, nil
	case auth.RoleUser:
	default:
		return false, nil
	}
	me, err := r.Accounts.Viewer(ctx)
	if err != nil {
		return false, err
	}
	var owners []string
	switch table {
	case user.Table:
		owners = []string{id}
	case payment.Table:
		owners, err = r.Client.Payment.Query().Where(payment.ID(id)).Select(payment.FieldUserID).Strings(ctx)
	case credittransaction.Table:
		owners, err = r.Client.CreditTransaction.Query().Where(credittransaction.ID(id)).Select(credittransaction.FieldUserID).Strings(ctx)
	case creditlot.Table:
		owners, err = r.Client.CreditLot.Query().Where(creditlot.ID(id)).Select(creditlot.FieldUserID).Strings(ctx)
	case creditreservation.Table:
		owners, err = r.Client.CreditReservation.Query().Where(creditreservation.ID(id)).Select(creditreservation.FieldUserID).Strings(ctx)
	case creditsubscription.Table:
		owners, err = r.Client.CreditSubscription.Query().Where(creditsubscription.ID(id)).Select(creditsubscription.FieldUserID).Strings(ctx)
	case creditledger.Table:
		owners, err = r.Client.CreditLedger.Query().Where(creditledger.ID(id)).
			QueryTransaction().Select(credittransaction.FieldUserID).Strings(ctx)
	default: // admin actions, Stripe events, outbound events and endpoints
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return len(owners) == 1 && owners[0] == me.ID, nil
}
