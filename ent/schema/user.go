package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// User is a user of the application that buys and spends credits. Users are
// provisioned the first time a token with their external id (the JWT `sub`)
// is seen.
type User struct{ ent.Schema }

func (User) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("usr"), timestampsMixin{}}
}

func (User) Fields() []ent.Field {
	return []ent.Field{
		field.String("external_id").Annotations(entgql.MapsTo("externalId")).
			NotEmpty().
			MaxLen(255).
			Immutable().
			Comment("the subject (`sub`) of the user's tokens in the application"),
		field.String("email").
			Optional().
			MaxLen(320),
		// A cache of the sum of the user's postings, kept in the same database
		// transaction as every posting: the ledger is the source of truth and the
		// invariant check compares the two. It goes negative only through a
		// clawback (a debt).
		field.Int64("credits_balance").
			Default(0).
			Annotations(unindexed),
		// How many transactions the user has: kept by the ledger in the
		// same update as credits_balance, checked by the invariant check
		// (transaction_count_mismatch), so that the history's totalCount
		// reads one row instead of counting the whole history.
		field.Int64("transaction_count").
			Default(0).
			NonNegative().
			Annotations(entgql.Skip()),
		// No ordering by status (nor by the kind, status, outcome or action
		// of the other admin lists): entgql orders by it then by id, which
		// its index (led by it, then created_at) does not give, so a page
		// would sort the whole table. Filter by it and order by CREATED_AT.
		// Below it, available credits are low (outbound balance.low and
		// balance.recovered events); nil is the server's default
		// (TALLY_LOW_BALANCE_THRESHOLD), 0 turns the user's balance
		// events off.
		field.Int64("low_balance_threshold").Optional().Nillable().
			Annotations(entgql.MapsTo("lowBalanceThreshold"), unindexed),
		// What the outbound events last said of the available credits
		// (see ledger.Level), kept under the user's lock so that a
		// crossing is told once however many movements race across it;
		// nil is as OK.
		field.Enum("balance_level").Values("OK", "LOW", "DEPLETED").Optional().Nillable().
			Annotations(entgql.Skip()),
		// How many outbound events the user has had: the next one's
		// number (its commit order).
		// Below these available credits a movement triggers a recharge:
		// the auto-recharge threshold while auto-recharge can charge
		// (enabled, ACTIVE or FAILING, a card saved), nil otherwise, so
		// that the ledger, which holds this row, knows without reading
		// another whether to look.
		field.Int64("recharge_below").Optional().Nillable().Annotations(entgql.Skip()),
		field.Int64("event_seq").Default(0).NonNegative().Annotations(entgql.Skip()),
		field.Enum("status").
			NamedValues("Active", "ACTIVE", "Frozen", "FROZEN").
			Default("ACTIVE"),
	}
}

func (User) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("stripe_customers", StripeCustomer.Type),
		// payments, transactions, lots, reservations and subscriptions are
		// served by hand-written fields (graph/schema.graphqls,
		// graph/userlots.graphqls, graph/plans.graphqls), not the generated
		// edges, which a list of users loaded for the whole list while
		// collecting its fields: before the page size was checked or
		// defaulted, so all of each user's rows without first.
		edge.To("payments", Payment.Type).
			Annotations(entgql.Skip(entgql.SkipAll)),
		edge.To("transactions", CreditTransaction.Type).
			Annotations(entgql.Skip(entgql.SkipAll)),
		edge.To("lots", CreditLot.Type).
			Annotations(entgql.Skip(entgql.SkipAll)),
		edge.To("reservations", CreditReservation.Type).
			Annotations(entgql.Skip(entgql.SkipAll)),
		edge.To("subscriptions", CreditSubscription.Type).
			Annotations(entgql.Skip(entgql.SkipAll)),
		edge.To("postings", CreditLedger.Type).
			Annotations(entgql.Skip(), restrictDelete),
	}
}

func (User) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("external_id").Unique(),
		index.Fields("email"),
		index.Fields("status", "created_at"),
		index.Fields("created_at"),
	}
}

func (User) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("users").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("Users, newest first unless ordered")),
	}
}
