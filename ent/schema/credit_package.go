package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// CreditPackage is a pack of credits on sale. Packs are deactivated, never
// deleted, because payments keep pointing at the pack they bought.
type CreditPackage struct{ ent.Schema }

func (CreditPackage) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("pkg"), timestampsMixin{}}
}

func (CreditPackage) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(100).
			Annotations(entgql.OrderField("NAME")),
		field.String("description").Optional().MaxLen(1000),
		field.Int64("credits").Positive().
			Annotations(entgql.OrderField("CREDITS")),
		field.Int64("price_amount").Positive().
			Comment("price in the currency's minor units (cents)").
			Annotations(entgql.OrderField("PRICE_AMOUNT")),
		field.String("currency").
			MinLen(3).MaxLen(3).
			Comment("ISO 4217 code, lower case as Stripe writes it"),
		field.String("stripe_price_id").Annotations(entgql.MapsTo("stripePriceId")).Optional().MaxLen(255),
		field.Bool("active").Default(true),
		field.Int("sort_order").Default(0).
			Comment("where the pack appears in the shop; lower first"),
	}
}

func (CreditPackage) Indexes() []ent.Index {
	return []ent.Index{
		// Unique so that seeding demo packs, possibly by several replicas at
		// once, can never create a pack twice.
		index.Fields("name").Unique(),
		index.Fields("active", "sort_order"),
	}
}

func (CreditPackage) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
