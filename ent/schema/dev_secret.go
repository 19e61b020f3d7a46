package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// DevSecret is a secret Tally makes for itself in development, kept in the
// database so that every process on the same DATABASE_URL (tally serve,
// tally token), from whatever directory, uses the same one. Production
// never reads or writes it: its secrets come from the environment.
type DevSecret struct{ ent.Schema }

func (DevSecret) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("dsc"), createdMixin{}}
}

func (DevSecret) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(64).Immutable().
			Comment("what the secret is for, such as jwt_hs256"),
		field.String("value").NotEmpty().MaxLen(256).Immutable().Sensitive(),
	}
}

func (DevSecret) Indexes() []ent.Index {
	// One secret per purpose: concurrent first runs insert, and the loser
	// reads the winner's.
	return []ent.Index{index.Fields("name").Unique()}
}

func (DevSecret) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
