-- +goose Up
-- modify "payments" table
ALTER TABLE "payments" ADD COLUMN "kind" character varying NOT NULL DEFAULT 'CHECKOUT', ADD COLUMN "save_card" boolean NOT NULL DEFAULT false, ADD COLUMN "recharge_slot" character varying NULL;
-- create index "payment_recharge_slot" to table: "payments"
CREATE UNIQUE INDEX "payment_recharge_slot" ON "payments" ("recharge_slot");
-- modify "users" table
ALTER TABLE "users" ADD COLUMN "recharge_below" bigint NULL;
-- create "auto_recharges" table
CREATE TABLE "auto_recharges" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "user_id" character varying NOT NULL, "enabled" boolean NOT NULL DEFAULT false, "threshold_credits" bigint NOT NULL DEFAULT 0, "monthly_limit_amount" bigint NOT NULL DEFAULT 0, "status" character varying NOT NULL DEFAULT 'ACTIVE', "last_error" character varying NULL, "last_recharge_at" timestamptz NULL, "consecutive_failures" bigint NOT NULL DEFAULT 0, "retry_after" timestamptz NULL, "in_flight_payment_id" character varying NULL, "stripe_customer_id" character varying NULL, "stripe_payment_method_id" character varying NULL, "card_brand" character varying NULL, "card_last4" character varying NULL, "card_exp_month" bigint NOT NULL DEFAULT 0, "card_exp_year" bigint NOT NULL DEFAULT 0, "package_id" character varying NULL, PRIMARY KEY ("id"), CONSTRAINT "auto_recharges_credit_packages_package" FOREIGN KEY ("package_id") REFERENCES "credit_packages" ("id") ON UPDATE NO ACTION ON DELETE SET NULL);
-- create index "autorecharge_user_id" to table: "auto_recharges"
CREATE UNIQUE INDEX "autorecharge_user_id" ON "auto_recharges" ("user_id");

-- +goose Down
-- reverse: create index "autorecharge_user_id" to table: "auto_recharges"
DROP INDEX "autorecharge_user_id";
-- reverse: create "auto_recharges" table
DROP TABLE "auto_recharges";
-- reverse: modify "users" table
ALTER TABLE "users" DROP COLUMN "recharge_below";
-- reverse: create index "payment_recharge_slot" to table: "payments"
DROP INDEX "payment_recharge_slot";
-- reverse: modify "payments" table
ALTER TABLE "payments" DROP COLUMN "recharge_slot", DROP COLUMN "save_card", DROP COLUMN "kind";
