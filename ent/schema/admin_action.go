package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// AdminAction is the audit record of one admin operation, written in the same
// database transaction as the operation's effect. Append-only.
type AdminAction struct{ ent.Schema }

func (AdminAction) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("adm"), createdMixin{}}
}

func (AdminAction) Fields() []ent.Field {
	return []ent.Field{
		field.String("admin_id").Annotations(entgql.MapsTo("adminId")).Immutable().
			Comment("the admin's user id"),
		field.String("action").NotEmpty().MaxLen(100).Immutable().
			Comment("e.g. grant_credits, revoke_credits, freeze_user, refund_payment"),
		field.String("target_id").Annotations(entgql.MapsTo("targetId")).NotEmpty().MaxLen(100).Immutable().
			Comment("global id of what was acted on").
			Annotations(unindexed),
		field.String("target_user_id").Annotations(entgql.MapsTo("targetUserId")).Optional().Nillable().Immutable(),
		field.Int64("amount").Optional().Nillable().Immutable().Annotations(unindexed),
		field.String("reason").Optional().MaxLen(1000).Immutable().Annotations(unindexed),
		field.Int64("balance_before").Optional().Nillable().Immutable().Annotations(unindexed),
		field.Int64("balance_after").Optional().Nillable().Immutable().Annotations(unindexed),
		field.String("request_id").Annotations(entgql.MapsTo("requestId"), unindexed).Optional().MaxLen(100).Immutable(),
		field.String("transaction_id").Annotations(entgql.MapsTo("transactionId")).Optional().Nillable().Immutable(),
	}
}

func (AdminAction) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("admin", User.Type).
			Field("admin_id").Unique().Required().Immutable(),
		edge.To("target_user", User.Type).
			Field("target_user_id").Unique().Immutable().
			Annotations(restrictDelete),
		edge.From("transaction", CreditTransaction.Type).Ref("admin_action").
			Field("transaction_id").Unique().Immutable(),
	}
}

func (AdminAction) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("created_at"),
		index.Fields("admin_id", "created_at"),
		index.Fields("target_user_id", "created_at"),
		// The admin list filtered by action, newest first.
		index.Fields("action", "created_at"),
		index.Fields("transaction_id").Unique(),
	}
}

func (AdminAction) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("adminActions").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("The audit trail of admin actions, newest first unless ordered")),
	}
}
