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

// CreditTransaction is one business event that moves credits. Its postings
// (CreditLedger rows) sum to zero. Transactions are append-only: a correction
// is a new transaction, and the database refuses updates and deletes.
type CreditTransaction struct{ ent.Schema }

func (CreditTransaction) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("txn"), createdMixin{}}
}

func (CreditTransaction) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Immutable(),
		field.Enum("kind").
			NamedValues(
				"Purchase", "PURCHASE",
				"Spend", "SPEND",
				"Grant", "GRANT",
				"Revoke", "REVOKE",
				"RefundClawback", "REFUND_CLAWBACK",
				"DisputeHold", "DISPUTE_HOLD",
				"DisputeRelease", "DISPUTE_RELEASE",
				"DisputeClawback", "DISPUTE_CLAWBACK",
				"Expiry", "EXPIRY",
				"Hold", "HOLD",
				"Capture", "CAPTURE",
				"Release", "RELEASE",
				"Rollover", "ROLLOVER",
			).
			Immutable(),
		field.Int64("amount").
			Immutable().
			Comment("credits moved, always positive; the postings carry the direction").
			Annotations(unindexed),
		field.String("reason").Optional().MaxLen(1000).Immutable().
			Annotations(unindexed),
		field.String("actor").NotEmpty().MaxLen(300).Immutable().Annotations(unindexed).
			Comment("who caused it, e.g. user:usr_…, service:billing, admin:usr_…, stripe:evt_…, system:expiry"),
		field.String("idempotency_key").Optional().Nillable().MaxLen(255).Immutable().
			Annotations(unindexed),
		field.Bytes("fingerprint").Optional().Nillable().MaxLen(32).Immutable().
			Comment("SHA-256 of the keyed request (see package idempotency): the transaction holds its key").
			Annotations(entgql.Skip()),
		field.String("payment_id").Annotations(entgql.MapsTo("paymentId")).Optional().Nillable().Immutable(),
		field.String("reservation_id").Annotations(entgql.MapsTo("reservationId")).Optional().Nillable().Immutable(),
		field.JSON("metadata", map[string]string{}).Optional().Immutable().
			Annotations(entgql.Skip()),
	}
}

func (CreditTransaction) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("transactions").
			Field("user_id").Unique().Required().Immutable(),
		edge.From("payment", Payment.Type).Ref("transactions").
			Field("payment_id").Unique().Immutable(),
		edge.From("reservation", CreditReservation.Type).Ref("transactions").
			Field("reservation_id").Unique().Immutable(),
		edge.To("postings", CreditLedger.Type).
			Annotations(unindexed),
		edge.To("created_lots", CreditLot.Type).
			Annotations(entgql.Skip()),
		// Not in GraphQL: it would lead a user from their own transaction to
		// the admin's account. Admins query adminActions instead.
		edge.To("admin_action", AdminAction.Type).Unique().
			Annotations(restrictDelete, entgql.Skip()),
	}
}

func (CreditTransaction) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("user_id", "created_at", "id"),
		index.Fields("payment_id"),
		index.Fields("reservation_id"),
		index.Fields("kind", "created_at"),
		index.Fields("created_at"),
		// One movement per key and caller: a concurrent request with the key
		// fails here and replays (package idempotency).
		index.Fields("actor", "idempotency_key").Unique().
			Annotations(entsql.IndexWhere("idempotency_key IS NOT NULL")),
	}
}

func (CreditTransaction) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("creditTransactions").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("Every user's credit transactions, newest first unless ordered")),
	}
}
