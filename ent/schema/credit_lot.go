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

// CreditLot is a batch of credits that entered a user's account together (a
// purchase or a grant). Spends draw from lots in order of priority, soonest
// expiry, then age; a refund or dispute claws back from the lot its payment
// created.
type CreditLot struct{ ent.Schema }

func (CreditLot) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("lot"), timestampsMixin{}}
}

func (CreditLot) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Immutable(),
		field.Enum("source").
			NamedValues("Purchase", "PURCHASE", "Grant", "GRANT").
			Immutable(),
		field.Int64("original").Positive().Immutable(),
		field.Int64("remaining").NonNegative().
			Comment("credits still spendable from this lot"),
		field.Int64("held").Default(0).NonNegative().
			Comment("credits of this lot out of reach while its payment is disputed"),
		field.Time("expires_at").Optional().Nillable().Immutable().
			Annotations(entgql.OrderField("EXPIRES_AT")),
		field.Int("priority").Default(0).Immutable().
			Comment("lower is spent first"),
		field.String("payment_id").Annotations(entgql.MapsTo("paymentId")).Optional().Nillable().Immutable(),
		field.String("transaction_id").Annotations(entgql.MapsTo("transactionId")).Immutable().
			Comment("the transaction that created the lot"),
		// When the application was told the lot's credits are about to
		// expire (credits.expiring, once per lot).
		field.Time("expiry_noticed_at").Optional().Nillable().Annotations(entgql.Skip()),
	}
}

func (CreditLot) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("lots").
			Field("user_id").Unique().Required().Immutable(),
		edge.From("payment", Payment.Type).Ref("lots").
			Field("payment_id").Unique().Immutable(),
		edge.From("transaction", CreditTransaction.Type).Ref("created_lots").
			Field("transaction_id").Unique().Required().Immutable(),
		edge.To("postings", CreditLedger.Type).
			Annotations(entgql.Skip(), restrictDelete),
	}
}

func (CreditLot) Indexes() []ent.Index {
	return []ent.Index{
		// The spend order, over the lots that still hold credits only.
		index.Fields("user_id", "priority", "expires_at", "created_at").
			Annotations(entsql.IndexWhere("remaining > 0")),
		// The expiry sweep. (Predicates are kept to a form PostgreSQL stores
		// as written, so the migration drift check compares them exactly.)
		index.Fields("expires_at").
			Annotations(entsql.IndexWhere("remaining > 0")),
		// A user's lots past their expiry that still hold credits (the
		// sweep has not reached them yet), subtracted in every balance
		// read: the expired ones only, not all of the user's.
		index.Fields("user_id", "expires_at").
			Annotations(entsql.IndexWhere("remaining > 0")),
		// A user's lots as the API lists them (by id unless ordered
		// otherwise): without it a page of one user's lots walked the
		// primary key of everyone's.
		index.Fields("user_id", "id"),
		// What disputes hold, summed in every balance read: the few lots
		// with held credits, not all of the user's.
		index.Fields("user_id").
			Annotations(entsql.IndexWhere("held > 0")),
		index.Fields("payment_id"),
		index.Fields("transaction_id"),
	}
}

func (CreditLot) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entsql.Checks(map[string]string{
			"credit_lot_amounts": "remaining + held <= original",
		}),
	}
}
