package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// WebhookDelivery is one event on its way to one endpoint: its state,
// attempts and last answer, for admins; a job of the queue sends it.
type WebhookDelivery struct{ ent.Schema }

func (WebhookDelivery) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("whd"), timestampsMixin{}}
}

func (WebhookDelivery) Fields() []ent.Field {
	return []ent.Field{
		field.String("event_id").Immutable().Annotations(entgql.MapsTo("eventId")),
		field.String("endpoint_id").Immutable().Annotations(entgql.MapsTo("endpointId")),
		// The event's user and number, copied so that the one question a
		// delivery asks before sending (is an earlier event of this user
		// still pending for this endpoint?) is one index lookup.
		field.String("user_id").Optional().Nillable().Immutable().Annotations(entgql.Skip()),
		field.Int64("seq").Immutable().Annotations(entgql.Skip()),
		field.Enum("status").
			NamedValues("Pending", "PENDING", "Delivered", "DELIVERED", "Failed", "FAILED").
			Default("PENDING"),
		field.Int("attempts").Default(0).NonNegative().Annotations(unindexed),
		field.String("last_error").Optional().MaxLen(1000).Annotations(entgql.MapsTo("lastError"), unindexed),
		field.Int("last_response_status").Optional().Nillable().Annotations(entgql.MapsTo("lastResponseStatus"), unindexed),
		field.Time("next_attempt_at").Optional().Nillable().Annotations(entgql.MapsTo("nextAttemptAt"), unindexed),
		field.Time("delivered_at").Optional().Nillable().Annotations(entgql.MapsTo("deliveredAt"), unindexed),
	}
}

func (WebhookDelivery) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("event", WebhookEvent.Type).Ref("deliveries").
			Field("event_id").Unique().Required().Immutable(),
		edge.From("endpoint", WebhookEndpoint.Type).Ref("deliveries").
			Field("endpoint_id").Unique().Required().Immutable(),
	}
}

func (WebhookDelivery) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("event_id", "endpoint_id").Unique(),
		index.Fields("endpoint_id", "user_id", "status", "seq"),
		index.Fields("endpoint_id", "created_at"),
		index.Fields("status", "created_at"),
		index.Fields("created_at"),
	}
}

func (WebhookDelivery) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("webhookDeliveries").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("Outbound event deliveries, newest first unless ordered")),
	}
}
