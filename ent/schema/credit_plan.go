package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// CreditPlan is a subscription on sale: it grants credits_per_period each
// paid period, and at renewal the previous period's unspent credits roll
// over by its rule. Plans are deactivated, never deleted: subscriptions and
// their payments keep pointing at the plan they bought.
type CreditPlan struct{ ent.Schema }

func (CreditPlan) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("pln"), timestampsMixin{}}
}

func (CreditPlan) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(100).
			Annotations(entgql.OrderField("NAME")),
		field.String("description").Optional().MaxLen(1000),
		field.Int64("credits_per_period").Positive(),
		field.Enum("interval").NamedValues("Month", "MONTH", "Year", "YEAR"),
		field.Int64("price_amount").Positive().
			Comment("price of one period in the currency's minor units"),
		field.String("currency").MinLen(3).MaxLen(3).
			Comment("ISO 4217 code, lower case as Stripe writes it"),
		field.String("stripe_price_id").Annotations(entgql.MapsTo("stripePriceId")).Optional().MaxLen(255),
		// NONE: unspent credits expire at the period's end. CAPPED: up to
		// rollover_cap of them move into the next paid period. ALL: all
		// of them do.
		field.Enum("rollover").NamedValues("None", "NONE", "Capped", "CAPPED", "All", "ALL").Default("NONE"),
		field.Int64("rollover_cap").Optional().Nillable().Positive(),
		field.Bool("active").Default(true),
		field.Int("sort_order").Default(0).
			Comment("where the plan appears in the shop; lower first"),
	}
}

func (CreditPlan) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("name").Unique(),
		index.Fields("active", "sort_order"),
		// Subscription events name the Stripe price; a plan change in
		// Stripe is found by it.
		index.Fields("stripe_price_id"),
	}
}

func (CreditPlan) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
