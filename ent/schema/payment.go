package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Payment is one purchase of a credit pack through Stripe Checkout. Its status
// follows the payment state machine of the design; amounts are copied from the
// pack when the purchase starts so that later price changes do not rewrite it.
type Payment struct{ ent.Schema }

func (Payment) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("pay"), timestampsMixin{}}
}

// paymentStatuses are the states of the payment state machine.
var paymentStatuses = []string{
	"Pending", "PENDING",
	"AwaitingPayment", "AWAITING_PAYMENT",
	"Succeeded", "SUCCEEDED",
	"Failed", "FAILED",
	"Expired", "EXPIRED",
	"PartiallyRefunded", "PARTIALLY_REFUNDED",
	"Refunded", "REFUNDED",
	"Disputed", "DISPUTED",
	"ChargedBack", "CHARGED_BACK",
}

func (Payment) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").Annotations(entgql.MapsTo("userId")).Immutable(),
		// CHECKOUT: bought through Stripe Checkout, decided by the
		// session's events. RECHARGE: an off-session PaymentIntent that
		// auto-recharge made, decided by the intent (see
		// internal/payments/recharge*.go). SUBSCRIPTION: a paid invoice of
		// a plan's subscription, decided by invoice.paid (see
		// internal/payments/subscription*.go).
		field.Enum("kind").Values("CHECKOUT", "RECHARGE", "SUBSCRIPTION").Default("CHECKOUT").Immutable(),
		// The buyer asked Checkout to keep the card for auto-recharge.
		field.Bool("save_card").Default(false).Immutable().Annotations(entgql.Skip()),
		// The user's id while a recharge payment is in flight (PENDING or
		// waiting for the customer), nil otherwise: its unique index is
		// the database's guarantee of one recharge in flight per user,
		// however many movements on however many replicas trigger one.
		field.String("recharge_slot").Optional().Nillable().MaxLen(40).Annotations(entgql.Skip()),
		// The pack bought; nil for a subscription's invoice, which names
		// its plan instead.
		field.String("package_id").Annotations(entgql.MapsTo("packageId"), unindexed).Optional().Nillable().Immutable(),
		field.String("plan_id").Annotations(entgql.MapsTo("planId"), unindexed).Optional().Nillable().Immutable(),
		field.String("subscription_id").Annotations(entgql.MapsTo("subscriptionId")).Optional().Nillable().Immutable(),
		field.String("stripe_invoice_id").Annotations(entgql.MapsTo("stripeInvoiceId")).Optional().Nillable().MaxLen(255).Immutable(),
		// The period a subscription's invoice paid for: its credits
		// expire at period_end.
		field.Time("period_start").Optional().Nillable().Immutable().Annotations(unindexed),
		field.Time("period_end").Optional().Nillable().Immutable().Annotations(unindexed),
		field.Int64("amount").Positive().Immutable().
			Comment("price paid, in the currency's minor units").
			Annotations(unindexed),
		field.String("currency").MinLen(3).MaxLen(3).Immutable().Annotations(unindexed),
		field.Int64("credits").Positive().Immutable().Annotations(unindexed),
		field.Enum("status").
			NamedValues(paymentStatuses...).
			Default("PENDING"),
		field.String("status_before_dispute").
			Optional().
			Nillable().
			MaxLen(32).
			Comment("the status a won dispute returns the payment to").
			Annotations(entgql.Skip()),
		field.Int64("amount_refunded").
			Default(0).
			NonNegative().
			Comment("cumulative, in minor units, as Stripe reports it").
			Annotations(unindexed),
		field.String("stripe_checkout_session_id").Annotations(entgql.MapsTo("stripeCheckoutSessionId")).Optional().Nillable().MaxLen(255),
		field.String("stripe_payment_intent_id").Annotations(entgql.MapsTo("stripePaymentIntentId")).Optional().Nillable().MaxLen(255),
		field.String("stripe_charge_id").Annotations(entgql.MapsTo("stripeChargeId")).Optional().Nillable().MaxLen(255),
		field.Bool("livemode").Default(false).Annotations(unindexed),
		field.Time("paid_at").Optional().Nillable().Annotations(unindexed),
	}
}

func (Payment) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("user", User.Type).Ref("payments").
			Field("user_id").Unique().Required().Immutable(),
		edge.To("package", CreditPackage.Type).
			Field("package_id").Unique().Immutable().
			Annotations(unindexed, restrictDelete),
		edge.To("plan", CreditPlan.Type).
			Field("plan_id").Unique().Immutable().
			Annotations(unindexed, restrictDelete),
		edge.From("subscription", CreditSubscription.Type).Ref("payments").
			Field("subscription_id").Unique().Immutable(),
		edge.To("transactions", CreditTransaction.Type).
			Annotations(entgql.RelayConnection(), entgql.Directives(entgql.NewDirective("page")), restrictDelete, unindexed),
		edge.To("lots", CreditLot.Type).
			Annotations(restrictDelete, unindexed),
		edge.To("events", ProcessedEvent.Type).
			Annotations(entgql.Skip(), restrictDelete),
	}
}

func (Payment) Indexes() []ent.Index {
	return []ent.Index{
		// Stripe objects map to at most one payment; nulls are not compared.
		index.Fields("stripe_checkout_session_id").Unique(),
		index.Fields("stripe_payment_intent_id").Unique(),
		index.Fields("stripe_charge_id").Unique(),
		index.Fields("recharge_slot").Unique(),
		// A paid invoice is one payment, however many times its events
		// arrive.
		index.Fields("stripe_invoice_id").Unique(),
		// A subscription's payments by period: the renewal finds the
		// previous period's.
		index.Fields("subscription_id", "period_end"),
		index.Fields("user_id", "created_at"),
		index.Fields("status", "created_at"),
		index.Fields("created_at"),
		// The incremental ledger check reads the payments changed since
		// its previous run.
		index.Fields("updated_at"),
	}
}

func (Payment) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.QueryField("payments").Directives(entgql.NewDirective("admin"), entgql.NewDirective("page")).
			Description(adminList("Payments, newest first unless ordered")),
	}
}
