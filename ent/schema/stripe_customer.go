package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// StripeCustomer links a user to their Stripe customer, one per mode (test
// or live), so that a user is never created twice in Stripe.
type StripeCustomer struct{ ent.Schema }

func (StripeCustomer) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("scu"), createdMixin{}}
}

func (StripeCustomer) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Immutable(),
		field.String("stripe_customer_id").Annotations(entgql.MapsTo("stripeCustomerId")).NotEmpty().MaxLen(255).Immutable(),
		field.Bool("livemode").Default(false).Immutable(),
	}
}

func (StripeCustomer) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("stripe_customers").
			Field("user_id").Unique().Required().Immutable(),
	}
}

func (StripeCustomer) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("stripe_customer_id").Unique(),
		index.Fields("user_id", "livemode").Unique(),
	}
}

func (StripeCustomer) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
