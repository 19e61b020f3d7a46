package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
)

// WebhookEndpoint is where the application receives Tally's outbound
// events (package outbound). Admins manage endpoints; the secret signs
// every delivery and is shown once, when it is made.
type WebhookEndpoint struct{ ent.Schema }

func (WebhookEndpoint) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("wep"), timestampsMixin{}}
}

func (WebhookEndpoint) Fields() []ent.Field {
	return []ent.Field{
		field.String("url").NotEmpty().MaxLen(2048).Annotations(unindexed),
		field.String("description").Optional().MaxLen(1000).Annotations(unindexed),
		// Empty: every type.
		field.Strings("event_types").Optional().Annotations(entgql.MapsTo("eventTypes"), unindexed),
		field.Bool("enabled").Default(true).Annotations(unindexed),
		// Why the endpoint was disabled by Tally itself (it answered 410).
		field.String("disabled_reason").Optional().MaxLen(1000).Annotations(entgql.MapsTo("disabledReason"), unindexed),
		field.String("secret").NotEmpty().MaxLen(100).Sensitive().Annotations(entgql.Skip()),
		// The secret being rotated out, which also signs until
		// previous_secret_expires_at.
		field.String("previous_secret").Optional().Nillable().MaxLen(100).Sensitive().Annotations(entgql.Skip()),
		field.Time("previous_secret_expires_at").Optional().Nillable().
			Annotations(entgql.MapsTo("previousSecretExpiresAt"), unindexed),
	}
}

func (WebhookEndpoint) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("deliveries", WebhookDelivery.Type).
			Annotations(entsql.OnDelete(entsql.Cascade), entgql.Skip()),
	}
}

func (WebhookEndpoint) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("webhookEndpoints").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("The endpoints that receive outbound events, newest first unless ordered")),
	}
}
