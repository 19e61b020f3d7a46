-- +goose Up
-- create "credit_plans" table
CREATE TABLE "credit_plans" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "description" character varying NULL, "credits_per_period" bigint NOT NULL, "interval" character varying NOT NULL, "price_amount" bigint NOT NULL, "currency" character varying NOT NULL, "stripe_price_id" character varying NULL, "rollover" character varying NOT NULL DEFAULT 'NONE', "rollover_cap" bigint NULL, "active" boolean NOT NULL DEFAULT true, "sort_order" bigint NOT NULL DEFAULT 0, PRIMARY KEY ("id"));
-- create index "creditplan_active_sort_order" to table: "credit_plans"
CREATE INDEX "creditplan_active_sort_order" ON "credit_plans" ("active", "sort_order");
-- create index "creditplan_name" to table: "credit_plans"
CREATE UNIQUE INDEX "creditplan_name" ON "credit_plans" ("name");
-- create index "creditplan_stripe_price_id" to table: "credit_plans"
CREATE INDEX "creditplan_stripe_price_id" ON "credit_plans" ("stripe_price_id");
-- create "credit_subscriptions" table
CREATE TABLE "credit_subscriptions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "status" character varying NOT NULL DEFAULT 'INCOMPLETE', "current_period_start" timestamptz NULL, "current_period_end" timestamptz NULL, "cancel_at_period_end" boolean NOT NULL DEFAULT false, "canceled_at" timestamptz NULL, "stripe_subscription_id" character varying NULL, "stripe_checkout_session_id" character varying NULL, "livemode" boolean NOT NULL DEFAULT false, "status_mark" character varying NULL, "cancel_mark" character varying NULL, "plan_id" character varying NOT NULL, "user_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credit_subscriptions_credit_plans_plan" FOREIGN KEY ("plan_id") REFERENCES "credit_plans" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "credit_subscriptions_users_subscriptions" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "creditsubscription_created_at" to table: "credit_subscriptions"
CREATE INDEX "creditsubscription_created_at" ON "credit_subscriptions" ("created_at");
-- create index "creditsubscription_status_created_at" to table: "credit_subscriptions"
CREATE INDEX "creditsubscription_status_created_at" ON "credit_subscriptions" ("status", "created_at");
-- create index "creditsubscription_stripe_checkout_session_id" to table: "credit_subscriptions"
CREATE UNIQUE INDEX "creditsubscription_stripe_checkout_session_id" ON "credit_subscriptions" ("stripe_checkout_session_id");
-- create index "creditsubscription_stripe_subscription_id" to table: "credit_subscriptions"
CREATE UNIQUE INDEX "creditsubscription_stripe_subscription_id" ON "credit_subscriptions" ("stripe_subscription_id");
-- create index "creditsubscription_user_id_created_at" to table: "credit_subscriptions"
CREATE INDEX "creditsubscription_user_id_created_at" ON "credit_subscriptions" ("user_id", "created_at");
-- modify "payments" table
ALTER TABLE "payments" DROP CONSTRAINT "payments_credit_packages_package", ALTER COLUMN "package_id" DROP NOT NULL, ADD COLUMN "stripe_invoice_id" character varying NULL, ADD COLUMN "period_start" timestamptz NULL, ADD COLUMN "period_end" timestamptz NULL, ADD COLUMN "subscription_id" character varying NULL, ADD COLUMN "plan_id" character varying NULL, ADD CONSTRAINT "payments_credit_packages_package" FOREIGN KEY ("package_id") REFERENCES "credit_packages" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, ADD CONSTRAINT "payments_credit_plans_plan" FOREIGN KEY ("plan_id") REFERENCES "credit_plans" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, ADD CONSTRAINT "payments_credit_subscriptions_payments" FOREIGN KEY ("subscription_id") REFERENCES "credit_subscriptions" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT;
-- create index "payment_stripe_invoice_id" to table: "payments"
CREATE UNIQUE INDEX "payment_stripe_invoice_id" ON "payments" ("stripe_invoice_id");
-- create index "payment_subscription_id_period_end" to table: "payments"
CREATE INDEX "payment_subscription_id_period_end" ON "payments" ("subscription_id", "period_end");

-- +goose Down
-- reverse: create index "payment_subscription_id_period_end" to table: "payments"
DROP INDEX "payment_subscription_id_period_end";
-- reverse: create index "payment_stripe_invoice_id" to table: "payments"
DROP INDEX "payment_stripe_invoice_id";
-- reverse: modify "payments" table
ALTER TABLE "payments" DROP CONSTRAINT "payments_credit_subscriptions_payments", DROP CONSTRAINT "payments_credit_plans_plan", DROP CONSTRAINT "payments_credit_packages_package", DROP COLUMN "plan_id", DROP COLUMN "subscription_id", DROP COLUMN "period_end", DROP COLUMN "period_start", DROP COLUMN "stripe_invoice_id", ALTER COLUMN "package_id" SET NOT NULL, ADD CONSTRAINT "payments_credit_packages_package" FOREIGN KEY ("package_id") REFERENCES "credit_packages" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION;
-- reverse: create index "creditsubscription_user_id_created_at" to table: "credit_subscriptions"
DROP INDEX "creditsubscription_user_id_created_at";
-- reverse: create index "creditsubscription_stripe_subscription_id" to table: "credit_subscriptions"
DROP INDEX "creditsubscription_stripe_subscription_id";
-- reverse: create index "creditsubscription_stripe_checkout_session_id" to table: "credit_subscriptions"
DROP INDEX "creditsubscription_stripe_checkout_session_id";
-- reverse: create index "creditsubscription_status_created_at" to table: "credit_subscriptions"
DROP INDEX "creditsubscription_status_created_at";
-- reverse: create index "creditsubscription_created_at" to table: "credit_subscriptions"
DROP INDEX "creditsubscription_created_at";
-- reverse: create "credit_subscriptions" table
DROP TABLE "credit_subscriptions";
-- reverse: create index "creditplan_stripe_price_id" to table: "credit_plans"
DROP INDEX "creditplan_stripe_price_id";
-- reverse: create index "creditplan_name" to table: "credit_plans"
DROP INDEX "creditplan_name";
-- reverse: create index "creditplan_active_sort_order" to table: "credit_plans"
DROP INDEX "creditplan_active_sort_order";
-- reverse: create "credit_plans" table
DROP TABLE "credit_plans";
