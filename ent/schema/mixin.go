package schema

import (
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/mixin"

	"github.com/tally-billing/tally/internal/pulid"
)

// idMixin gives an entity a prefixed, sortable public id (see internal/pulid).
// The prefix must be registered in IDPrefixes so that a Relay global id can be
// resolved back to its entity.
type idMixin struct {
	mixin.Schema
	prefix string
}

func withID(prefix string) idMixin {
	if _, ok := IDPrefixes[prefix]; !ok {
		panic("schema: id prefix " + prefix + " is not registered in IDPrefixes")
	}
	return idMixin{prefix: prefix}
}

func (m idMixin) Fields() []ent.Field {
	return []ent.Field{
		field.String("id").
			MaxLen(40).
			NotEmpty().
			Immutable().
			DefaultFunc(func() string { return pulid.New(m.prefix) }).
			Annotations(entgql.OrderField("ID")),
	}
}

// IDPrefixes maps each id prefix to the ent type that uses it. The prefixes
// avoid Stripe's own (cus_, evt_, pi_, ch_, cs_) so ids of both systems can be
// told apart in logs.
var IDPrefixes = map[string]string{
	"usr": "User",
	"scu": "StripeCustomer",
	"pkg": "CreditPackage",
	"pay": "Payment",
	"txn": "CreditTransaction",
	"led": "CreditLedger",
	"lot": "CreditLot",
	"res": "CreditReservation",
	"pev": "ProcessedEvent",
	"adm": "AdminAction",
	"idk": "IdempotencyKey",
	"dsc": "DevSecret",
	"lck": "LedgerCheck",
	"wep": "WebhookEndpoint",
	"whe": "WebhookEvent",
	"whd": "WebhookDelivery",
	"arc": "AutoRecharge",
	"pln": "CreditPlan",
	"sub": "CreditSubscription",
}

// restrictDelete keeps an optional reference from being cleared when its
// target is deleted (ent's default for optional edges): money records are
// never deleted, and a ledger row must not change behind the ledger's back.
var restrictDelete = entsql.OnDelete(entsql.Restrict)

// unindexed keeps a field out of the admin filters (the WhereInput): no
// index serves a condition on it, so a filter on it would read a whole
// table, or a user's whole history, to find its rows. Such a filter is a
// validation error instead. A field that may be ordered by has an index
// led by it.
var unindexed = entgql.Skip(entgql.SkipWhereInput)

// adminList is the description of an admin list (the entgql QueryField).
func adminList(what string) string {
	return what + ", for admins. totalCount counts at most 1,000 items: a list " +
		"with more says 1,000, and totalCountCapped true. Filters and orders are on indexed fields only. A query " +
		"that runs past the admin time limit (10 s by default) is stopped and answered TIMEOUT."
}

// createdMixin records when a row was written; append-only rows need nothing more.
type createdMixin struct{ mixin.Schema }

func (createdMixin) Fields() []ent.Field {
	return []ent.Field{
		field.Time("created_at").
			Default(nowUTC).
			Immutable().
			Annotations(entgql.OrderField("CREATED_AT")),
	}
}

// timestampsMixin is for rows that change after they are written.
type timestampsMixin struct{ mixin.Schema }

func (timestampsMixin) Fields() []ent.Field {
	return []ent.Field{
		field.Time("created_at").
			Default(nowUTC).
			Immutable().
			Annotations(entgql.OrderField("CREATED_AT")),
		field.Time("updated_at").
			Default(nowUTC).
			UpdateDefault(nowUTC).
			// No index serves it: neither a filter nor an order (see
			// unindexed).
			Annotations(unindexed),
	}
}

// nowUTC keeps stored times in one zone, so that SQLite, which stores times
// as text, orders them correctly.
func nowUTC() time.Time { return time.Now().UTC() }
