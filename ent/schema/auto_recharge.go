package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// AutoRecharge is a user's saved card and auto-recharge settings: when a
// movement leaves their available credits below the threshold, Tally
// charges the card off-session for the pack (internal/payments). Only
// Stripe's ids and what the user may see of the card are kept.
type AutoRecharge struct{ ent.Schema }

func (AutoRecharge) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("arc"), timestampsMixin{}}
}

func (AutoRecharge) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Immutable(),
		field.Bool("enabled").Default(false),
		field.Int64("threshold_credits").Default(0).NonNegative(),
		field.String("package_id").Optional().Nillable(),
		// Most charged in a calendar month (UTC), in the pack's minor
		// units.
		field.Int64("monthly_limit_amount").Default(0).NonNegative(),
		field.Enum("status").NamedValues("Active", "ACTIVE", "ActionRequired", "ACTION_REQUIRED", "Failing", "FAILING", "Disabled", "DISABLED").Default("ACTIVE"),
		field.String("last_error").Optional().MaxLen(1000),
		field.Time("last_recharge_at").Optional().Nillable(),
		field.Int("consecutive_failures").Default(0).NonNegative(),
		// After a decline, no recharge before this.
		field.Time("retry_after").Optional().Nillable(),
		// The recharge payment in flight, which stops another starting.
		field.String("in_flight_payment_id").Optional().Nillable().MaxLen(40),
		field.String("stripe_customer_id").Optional().MaxLen(255),
		field.String("stripe_payment_method_id").Optional().MaxLen(255),
		field.String("card_brand").Optional().MaxLen(32),
		field.String("card_last4").Optional().MaxLen(4),
		field.Int("card_exp_month").Default(0),
		field.Int("card_exp_year").Default(0),
	}
}

func (AutoRecharge) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("package", CreditPackage.Type).Field("package_id").Unique(),
	}
}

func (AutoRecharge) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("user_id").Unique(),
	}
}

func (AutoRecharge) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
