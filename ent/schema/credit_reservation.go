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

// CreditReservation sets credits aside for a long-running paid job: while it
// is open and unexpired it counts against the user's available balance; a
// capture spends all or part of it, a release or its expiry gives it back.
type CreditReservation struct{ ent.Schema }

func (CreditReservation) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("res"), timestampsMixin{}}
}

func (CreditReservation) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Immutable(),
		field.Int64("amount").Positive().Immutable(),
		field.Int64("captured_amount").Default(0).NonNegative(),
		field.Enum("status").
			NamedValues(
				"Open", "OPEN",
				"Captured", "CAPTURED",
				"Released", "RELEASED",
				"Expired", "EXPIRED",
			).
			Default("OPEN").
			Annotations(entgql.OrderField("STATUS")),
		field.Time("expires_at").Immutable().
			Annotations(entgql.OrderField("EXPIRES_AT")),
		field.String("reason").Optional().MaxLen(1000).Immutable(),
		field.Time("closed_at").Optional().Nillable(),
	}
}

func (CreditReservation) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("reservations").
			Field("user_id").Unique().Required().Immutable(),
		edge.To("transactions", CreditTransaction.Type).
			Annotations(restrictDelete),
	}
}

func (CreditReservation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("user_id", "status", "expires_at"),
		// The expiry sweep.
		index.Fields("status", "expires_at"),
	}
}

func (CreditReservation) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entsql.Checks(map[string]string{
			"credit_reservation_capture": "captured_amount <= amount",
		}),
	}
}
