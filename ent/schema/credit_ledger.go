package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// CreditLedger is one posting of a CreditTransaction: a signed amount on one
// account. Accounts are named strings: a user's spendable account is
// "user:<user id>", system accounts are "system:<name>" (purchases, grants,
// spent, expired, clawback, held). Rows are immutable; the database refuses
// updates and deletes.
type CreditLedger struct{ ent.Schema }

func (CreditLedger) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("led"), createdMixin{}}
}

func (CreditLedger) Fields() []ent.Field {
	return []ent.Field{
		field.String("transaction_id").Annotations(entgql.MapsTo("transactionId")).Immutable(),
		field.String("account").NotEmpty().MaxLen(300).Immutable(),
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Optional().Nillable().Immutable().
			Comment("the owner of the account when it is a user's"),
		field.String("lot_id").Annotations(entgql.MapsTo("lotId")).Optional().Nillable().Immutable().
			Comment("the lot the credits entered or left through"),
		field.Int64("amount").Immutable().
			Comment("signed: positive credits the account, negative debits it"),
		// Only user accounts keep a running balance: a running balance on a
		// shared system account would serialize every writer in the system.
		field.Int64("balance_after").Optional().Nillable().Immutable(),
	}
}

func (CreditLedger) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("transaction", CreditTransaction.Type).Ref("postings").
			Field("transaction_id").Unique().Required().Immutable(),
		edge.From("user", User.Type).Ref("postings").
			Field("user_id").Unique().Immutable(),
		edge.From("lot", CreditLot.Type).Ref("postings").
			Field("lot_id").Unique().Immutable(),
	}
}

func (CreditLedger) Indexes() []ent.Index {
	return []ent.Index{
		// System accounts only: a user's account is read through
		// (user_id, created_at), and no query filters a user's postings by
		// account name (docs/scaling.md), which would double the index.
		index.Fields("account", "created_at").
			Annotations(entsql.IndexWhere("user_id IS NULL")),
		index.Fields("user_id", "created_at"),
		index.Fields("transaction_id"),
		index.Fields("lot_id"),
	}
}

func (CreditLedger) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.Type("Posting"),
	}
}
