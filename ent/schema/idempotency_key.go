package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// IdempotencyKey remembers a request that moved credits: the caller's scope
// and key, a fingerprint of the request and the result it produced. It is
// written in the same database transaction as the effect, so a retried
// request returns the first result instead of acting twice.
type IdempotencyKey struct{ ent.Schema }

func (IdempotencyKey) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("idk"), createdMixin{}}
}

func (IdempotencyKey) Fields() []ent.Field {
	return []ent.Field{
		field.String("scope").NotEmpty().MaxLen(300).Immutable().
			Comment("the caller the key belongs to"),
		field.String("key").NotEmpty().MaxLen(255).Immutable(),
		field.String("fingerprint").NotEmpty().MaxLen(128).Immutable().
			Comment("hash of the request; the same key with another request is refused"),
		field.Bytes("result").Optional().Immutable(),
		field.Time("expires_at").Optional().Nillable(),
	}
}

func (IdempotencyKey) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("scope", "key").Unique(),
	}
}

func (IdempotencyKey) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
