package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// ProcessedEvent records every Stripe event Tally has seen and what became of
// it. The unique event id, written in the same transaction as the event's
// effect, is what makes a redelivered event a no-op.
type ProcessedEvent struct{ ent.Schema }

func (ProcessedEvent) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("pev")}
}

func (ProcessedEvent) Fields() []ent.Field {
	return []ent.Field{
		field.String("stripe_event_id").Annotations(entgql.MapsTo("stripeEventId")).NotEmpty().MaxLen(255).Immutable(),
		field.String("type").NotEmpty().MaxLen(255).Immutable().Annotations(unindexed),
		field.Bool("livemode").Default(false).Immutable().Annotations(unindexed),
		field.String("api_version").Optional().MaxLen(64).Immutable().Annotations(unindexed),
		field.Enum("outcome").
			NamedValues(
				"Applied", "APPLIED",
				"Ignored", "IGNORED",
				"Deferred", "DEFERRED",
				"Failed", "FAILED",
			),
		field.String("error").Optional().MaxLen(2000).
			Comment("why the event was not applied, for admins").
			Annotations(unindexed),
		field.String("payment_id").Annotations(entgql.MapsTo("paymentId")).Optional().Nillable(),
		field.Int("attempts").Default(1).Annotations(unindexed),
		field.Bytes("payload").Optional().
			Comment("the event as received, for investigation and replay").
			Annotations(entgql.Skip()),
		field.Time("received_at").Immutable().
			Annotations(entgql.OrderField("RECEIVED_AT")),
		field.Time("processed_at").Optional().Nillable().Annotations(unindexed),
	}
}

func (ProcessedEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("payment", Payment.Type).Ref("events").
			Field("payment_id").Unique(),
	}
}

func (ProcessedEvent) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("stripe_event_id").Unique(),
		index.Fields("outcome", "received_at"),
		index.Fields("payment_id"),
		index.Fields("received_at"),
	}
}

func (ProcessedEvent) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("processedEvents").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("Stripe events received, newest first unless ordered")),
	}
}
