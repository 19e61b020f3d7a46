package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// WebhookEvent is one outbound event, written in the database transaction
// of its cause. Its id is the webhook-id of every delivery and retry, and
// its payload the exact body sent.
type WebhookEvent struct{ ent.Schema }

func (WebhookEvent) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("whe"), createdMixin{}}
}

func (WebhookEvent) Fields() []ent.Field {
	return []ent.Field{
		field.String("type").NotEmpty().MaxLen(100).Immutable(),
		field.String("user_id").Optional().Nillable().Immutable().Annotations(entgql.MapsTo("userId"), entgql.Type("ID")),
		// The user's event number: events of one user are written under
		// the user's row lock, so this is their commit order, in which
		// they are delivered.
		field.Int64("seq").Immutable().Annotations(entgql.Skip()),
		field.Text("payload").Immutable().Annotations(unindexed),
	}
}

func (WebhookEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("deliveries", WebhookDelivery.Type).Annotations(entgql.Skip()),
	}
}

func (WebhookEvent) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("user_id", "seq"),
	}
}

func (WebhookEvent) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
