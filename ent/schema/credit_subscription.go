package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// CreditSubscription is a user's subscription to a plan, kept in step with
// the Stripe subscription it is paid through (see
// internal/payments/subscription*.go). It is written INCOMPLETE before
// Stripe hears of it, as a purchase's payment is.
type CreditSubscription struct{ ent.Schema }

func (CreditSubscription) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("sub"), timestampsMixin{}}
}

func (CreditSubscription) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Immutable(),
		// The plan now; each payment keeps the plan it paid for.
		field.String("plan_id").Annotations(entgql.MapsTo("planId"), unindexed),
		field.Enum("status").
			NamedValues("Incomplete", "INCOMPLETE", "Active", "ACTIVE", "PastDue", "PAST_DUE", "Canceled", "CANCELED").
			Default("INCOMPLETE"),
		field.Time("current_period_start").Optional().Nillable().Annotations(unindexed),
		field.Time("current_period_end").Optional().Nillable().Annotations(unindexed),
		field.Bool("cancel_at_period_end").Default(false).Annotations(unindexed),
		field.Time("canceled_at").Optional().Nillable().Annotations(unindexed),
		field.String("stripe_subscription_id").Annotations(entgql.MapsTo("stripeSubscriptionId")).
			Optional().Nillable().MaxLen(255),
		field.String("stripe_checkout_session_id").Annotations(entgql.MapsTo("stripeCheckoutSessionId")).
			Optional().Nillable().MaxLen(255),
		field.Bool("livemode").Default(false).Annotations(unindexed),
		// Marks of the Stripe events that last set the status and period
		// (any subscription or invoice event) and the cancellation (the
		// subscription's own events): "<zero-padded unix time>/<event id>",
		// compared as strings. An older event delivered late changes
		// nothing, so every order of the events ends in the same state.
		field.String("status_mark").Optional().MaxLen(300).Annotations(entgql.Skip()),
		field.String("cancel_mark").Optional().MaxLen(300).Annotations(entgql.Skip()),
	}
}

func (CreditSubscription) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("subscriptions").
			Field("user_id").Unique().Required().Immutable(),
		edge.To("plan", CreditPlan.Type).
			Field("plan_id").Unique().Required().
			Annotations(unindexed),
		edge.To("payments", Payment.Type).
			Annotations(entgql.Skip(entgql.SkipAll), restrictDelete, unindexed),
	}
}

func (CreditSubscription) Indexes() []ent.Index {
	return []ent.Index{
		// Stripe objects map to at most one subscription; nulls are not compared.
		index.Fields("stripe_subscription_id").Unique(),
		index.Fields("stripe_checkout_session_id").Unique(),
		index.Fields("user_id", "created_at"),
		index.Fields("status", "created_at"),
		index.Fields("created_at"),
	}
}

func (CreditSubscription) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("subscriptions").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("Subscriptions, newest first unless ordered")),
	}
}
