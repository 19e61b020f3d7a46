package graph

import (
	"strings"
	"testing"

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
	"github.com/tally-billing/tally/ent/schema"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/ent/webhookdelivery"
	"github.com/tally-billing/tally/ent/webhookendpoint"
	"github.com/tally-billing/tally/ent/webhookevent"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/pulid"
)

// typeTables are the tables of the entity types GraphQL exposes as nodes,
// by the type names of the schema's IDPrefixes. StripeCustomer,
// IdempotencyKey and the others absent have ids but are not nodes.
var typeTables = map[string]string{
	"User": user.Table, "CreditPackage": creditpackage.Table, "Payment": payment.Table,
	"CreditTransaction": credittransaction.Table, "CreditLedger": creditledger.Table, "CreditLot": creditlot.Table,
	"CreditReservation": creditreservation.Table, "ProcessedEvent": processedevent.Table, "AdminAction": adminaction.Table,
	"WebhookEndpoint": webhookendpoint.Table, "WebhookEvent": webhookevent.Table, "WebhookDelivery": webhookdelivery.Table,
	"CreditPlan": creditplan.Table, "CreditSubscription": creditsubscription.Table,
}

// FuzzNodeID resolves arbitrary Relay global ids to tables: a malformed id
// is INVALID_ARGUMENT, a well-formed id of a prefix that names no node
// type is NOT_FOUND (like an id that does not exist), and any other id
// names the table of the type its prefix is registered for in the ent
// schema. Messages are one line whatever the id holds.
func FuzzNodeID(f *testing.F) {
	for prefix := range schema.IDPrefixes {
		f.Add(pulid.New(prefix))
	}
	for _, id := range []string{
		"usr_01jd6m3v9q8x0n2k4t7w5y1zbc", "USR_01JD6M3V9Q8X0N2K4T7W5Y1ZBC", "usr_01JD6M3V9Q8X0N2K4T7W5Y1ZBC",
		"cus_01jd6m3v9q8x0n2k4t7w5y1zbc", // Stripe's prefix, not Tally's
		"usr_81jd6m3v9q8x0n2k4t7w5y1zbc", "usr_01jd6m3v9q8x0n2k4t7w5y1zb", "usr", "", "_",
		"usr\x00_01jd6m3v9q8x0n2k4t7w5y1zbc", "usr\n_01jd6m3v9q8x0n2k4t7w5y1zbc", "VXNlcjox", // a base64 global id of other servers
		"usr_01jd6m3v9q8x0n2k4t7w5y1zbc\"}", "' OR 1=1 --",
	} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		table, err := nodeTable(id)
		prefix, malformed := pulid.Prefix(id)
		typ, registered := schema.IDPrefixes[prefix]
		want, exposed := typeTables[typ]
		switch {
		case malformed != nil:
			if apperr.CodeOf(err) != apperr.InvalidArgument {
				t.Fatalf("nodeTable(%q) = %q, %v; want INVALID_ARGUMENT", id, table, err)
			}
		case !registered || !exposed:
			if apperr.CodeOf(err) != apperr.NotFound {
				t.Fatalf("nodeTable(%q) = %q, %v; want NOT_FOUND", id, table, err)
			}
		case err != nil || table != want:
			t.Fatalf("nodeTable(%q) = %q, %v; want %s's table %q", id, table, err, typ, want)
		}
		if err != nil {
			if e, _ := apperr.As(err); strings.ContainsAny(e.Message, "\n\r") || table != "" {
				t.Fatalf("nodeTable(%q): table %q, message %q", id, table, e.Message)
			}
		}
	})
}
