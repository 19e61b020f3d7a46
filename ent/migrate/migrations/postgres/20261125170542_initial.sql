-- +goose Up
-- create "idempotency_keys" table
CREATE TABLE "idempotency_keys" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "scope" character varying NOT NULL, "key" character varying NOT NULL, "fingerprint" character varying NOT NULL, "result" bytea NULL, "expires_at" timestamptz NULL, PRIMARY KEY ("id"));
-- create index "idempotencykey_expires_at" to table: "idempotency_keys"
CREATE INDEX "idempotencykey_expires_at" ON "idempotency_keys" ("expires_at");
-- create index "idempotencykey_scope_key" to table: "idempotency_keys"
CREATE UNIQUE INDEX "idempotencykey_scope_key" ON "idempotency_keys" ("scope", "key");
-- create "users" table
CREATE TABLE "users" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "external_id" character varying NOT NULL, "email" character varying NULL, "credits_balance" bigint NOT NULL DEFAULT 0, "status" character varying NOT NULL DEFAULT 'ACTIVE', PRIMARY KEY ("id"));
-- create index "user_created_at" to table: "users"
CREATE INDEX "user_created_at" ON "users" ("created_at");
-- create index "user_email" to table: "users"
CREATE INDEX "user_email" ON "users" ("email");
-- create index "user_external_id" to table: "users"
CREATE UNIQUE INDEX "user_external_id" ON "users" ("external_id");
-- create index "user_status_created_at" to table: "users"
CREATE INDEX "user_status_created_at" ON "users" ("status", "created_at");
-- create "credit_reservations" table
CREATE TABLE "credit_reservations" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "amount" bigint NOT NULL, "captured_amount" bigint NOT NULL DEFAULT 0, "status" character varying NOT NULL DEFAULT 'OPEN', "expires_at" timestamptz NOT NULL, "reason" character varying NULL, "closed_at" timestamptz NULL, "user_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credit_reservations_users_reservations" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "credit_reservation_capture" CHECK (captured_amount <= amount));
-- create index "creditreservation_status_expires_at" to table: "credit_reservations"
CREATE INDEX "creditreservation_status_expires_at" ON "credit_reservations" ("status", "expires_at");
-- create index "creditreservation_user_id_status_expires_at" to table: "credit_reservations"
CREATE INDEX "creditreservation_user_id_status_expires_at" ON "credit_reservations" ("user_id", "status", "expires_at");
-- create "credit_packages" table
CREATE TABLE "credit_packages" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "description" character varying NULL, "credits" bigint NOT NULL, "price_amount" bigint NOT NULL, "currency" character varying NOT NULL, "stripe_price_id" character varying NULL, "active" boolean NOT NULL DEFAULT true, "sort_order" bigint NOT NULL DEFAULT 0, PRIMARY KEY ("id"));
-- create index "creditpackage_active_sort_order" to table: "credit_packages"
CREATE INDEX "creditpackage_active_sort_order" ON "credit_packages" ("active", "sort_order");
-- create index "creditpackage_name" to table: "credit_packages"
CREATE UNIQUE INDEX "creditpackage_name" ON "credit_packages" ("name");
-- create "payments" table
CREATE TABLE "payments" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "amount" bigint NOT NULL, "currency" character varying NOT NULL, "credits" bigint NOT NULL, "status" character varying NOT NULL DEFAULT 'PENDING', "status_before_dispute" character varying NULL, "amount_refunded" bigint NOT NULL DEFAULT 0, "stripe_checkout_session_id" character varying NULL, "stripe_payment_intent_id" character varying NULL, "stripe_charge_id" character varying NULL, "livemode" boolean NOT NULL DEFAULT false, "paid_at" timestamptz NULL, "package_id" character varying NOT NULL, "user_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "payments_credit_packages_package" FOREIGN KEY ("package_id") REFERENCES "credit_packages" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "payments_users_payments" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "payment_created_at" to table: "payments"
CREATE INDEX "payment_created_at" ON "payments" ("created_at");
-- create index "payment_status_created_at" to table: "payments"
CREATE INDEX "payment_status_created_at" ON "payments" ("status", "created_at");
-- create index "payment_stripe_charge_id" to table: "payments"
CREATE UNIQUE INDEX "payment_stripe_charge_id" ON "payments" ("stripe_charge_id");
-- create index "payment_stripe_checkout_session_id" to table: "payments"
CREATE UNIQUE INDEX "payment_stripe_checkout_session_id" ON "payments" ("stripe_checkout_session_id");
-- create index "payment_stripe_payment_intent_id" to table: "payments"
CREATE UNIQUE INDEX "payment_stripe_payment_intent_id" ON "payments" ("stripe_payment_intent_id");
-- create index "payment_user_id_created_at" to table: "payments"
CREATE INDEX "payment_user_id_created_at" ON "payments" ("user_id", "created_at");
-- create "credit_transactions" table
CREATE TABLE "credit_transactions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "kind" character varying NOT NULL, "amount" bigint NOT NULL, "reason" character varying NULL, "actor" character varying NOT NULL, "idempotency_key" character varying NULL, "metadata" jsonb NULL, "reservation_id" character varying NULL, "payment_id" character varying NULL, "user_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credit_transactions_credit_reservations_transactions" FOREIGN KEY ("reservation_id") REFERENCES "credit_reservations" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, CONSTRAINT "credit_transactions_payments_transactions" FOREIGN KEY ("payment_id") REFERENCES "payments" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, CONSTRAINT "credit_transactions_users_transactions" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "credittransaction_created_at" to table: "credit_transactions"
CREATE INDEX "credittransaction_created_at" ON "credit_transactions" ("created_at");
-- create index "credittransaction_kind_created_at" to table: "credit_transactions"
CREATE INDEX "credittransaction_kind_created_at" ON "credit_transactions" ("kind", "created_at");
-- create index "credittransaction_payment_id" to table: "credit_transactions"
CREATE INDEX "credittransaction_payment_id" ON "credit_transactions" ("payment_id");
-- create index "credittransaction_reservation_id" to table: "credit_transactions"
CREATE INDEX "credittransaction_reservation_id" ON "credit_transactions" ("reservation_id");
-- create index "credittransaction_user_id_created_at" to table: "credit_transactions"
CREATE INDEX "credittransaction_user_id_created_at" ON "credit_transactions" ("user_id", "created_at");
-- create "admin_actions" table
CREATE TABLE "admin_actions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "action" character varying NOT NULL, "target_id" character varying NOT NULL, "amount" bigint NULL, "reason" character varying NULL, "balance_before" bigint NULL, "balance_after" bigint NULL, "request_id" character varying NULL, "admin_id" character varying NOT NULL, "target_user_id" character varying NULL, "transaction_id" character varying NULL, PRIMARY KEY ("id"), CONSTRAINT "admin_actions_credit_transactions_admin_action" FOREIGN KEY ("transaction_id") REFERENCES "credit_transactions" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, CONSTRAINT "admin_actions_users_admin" FOREIGN KEY ("admin_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "admin_actions_users_target_user" FOREIGN KEY ("target_user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT);
-- create index "admin_actions_transaction_id_key" to table: "admin_actions"
CREATE UNIQUE INDEX "admin_actions_transaction_id_key" ON "admin_actions" ("transaction_id");
-- create index "adminaction_admin_id_created_at" to table: "admin_actions"
CREATE INDEX "adminaction_admin_id_created_at" ON "admin_actions" ("admin_id", "created_at");
-- create index "adminaction_created_at" to table: "admin_actions"
CREATE INDEX "adminaction_created_at" ON "admin_actions" ("created_at");
-- create index "adminaction_target_user_id_created_at" to table: "admin_actions"
CREATE INDEX "adminaction_target_user_id_created_at" ON "admin_actions" ("target_user_id", "created_at");
-- create index "adminaction_transaction_id" to table: "admin_actions"
CREATE UNIQUE INDEX "adminaction_transaction_id" ON "admin_actions" ("transaction_id");
-- create "credit_lots" table
CREATE TABLE "credit_lots" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "source" character varying NOT NULL, "original" bigint NOT NULL, "remaining" bigint NOT NULL, "held" bigint NOT NULL DEFAULT 0, "expires_at" timestamptz NULL, "priority" bigint NOT NULL DEFAULT 0, "transaction_id" character varying NOT NULL, "payment_id" character varying NULL, "user_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credit_lots_credit_transactions_created_lots" FOREIGN KEY ("transaction_id") REFERENCES "credit_transactions" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "credit_lots_payments_lots" FOREIGN KEY ("payment_id") REFERENCES "payments" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, CONSTRAINT "credit_lots_users_lots" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "credit_lot_amounts" CHECK ((remaining + held) <= original));
-- create index "creditlot_expires_at" to table: "credit_lots"
CREATE INDEX "creditlot_expires_at" ON "credit_lots" ("expires_at") WHERE (remaining > 0);
-- create index "creditlot_payment_id" to table: "credit_lots"
CREATE INDEX "creditlot_payment_id" ON "credit_lots" ("payment_id");
-- create index "creditlot_transaction_id" to table: "credit_lots"
CREATE INDEX "creditlot_transaction_id" ON "credit_lots" ("transaction_id");
-- create index "creditlot_user_id_priority_expires_at_created_at" to table: "credit_lots"
CREATE INDEX "creditlot_user_id_priority_expires_at_created_at" ON "credit_lots" ("user_id", "priority", "expires_at", "created_at") WHERE (remaining > 0);
-- create "credit_ledgers" table
CREATE TABLE "credit_ledgers" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "account" character varying NOT NULL, "amount" bigint NOT NULL, "balance_after" bigint NULL, "lot_id" character varying NULL, "transaction_id" character varying NOT NULL, "user_id" character varying NULL, PRIMARY KEY ("id"), CONSTRAINT "credit_ledgers_credit_lots_postings" FOREIGN KEY ("lot_id") REFERENCES "credit_lots" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT, CONSTRAINT "credit_ledgers_credit_transactions_postings" FOREIGN KEY ("transaction_id") REFERENCES "credit_transactions" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "credit_ledgers_users_postings" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT);
-- create index "creditledger_account_created_at" to table: "credit_ledgers"
CREATE INDEX "creditledger_account_created_at" ON "credit_ledgers" ("account", "created_at");
-- create index "creditledger_lot_id" to table: "credit_ledgers"
CREATE INDEX "creditledger_lot_id" ON "credit_ledgers" ("lot_id");
-- create index "creditledger_transaction_id" to table: "credit_ledgers"
CREATE INDEX "creditledger_transaction_id" ON "credit_ledgers" ("transaction_id");
-- create index "creditledger_user_id_created_at" to table: "credit_ledgers"
CREATE INDEX "creditledger_user_id_created_at" ON "credit_ledgers" ("user_id", "created_at");
-- create "processed_events" table
CREATE TABLE "processed_events" ("id" character varying NOT NULL, "stripe_event_id" character varying NOT NULL, "type" character varying NOT NULL, "livemode" boolean NOT NULL DEFAULT false, "api_version" character varying NULL, "outcome" character varying NOT NULL, "error" character varying NULL, "attempts" bigint NOT NULL DEFAULT 1, "payload" bytea NULL, "received_at" timestamptz NOT NULL, "processed_at" timestamptz NULL, "payment_id" character varying NULL, PRIMARY KEY ("id"), CONSTRAINT "processed_events_payments_events" FOREIGN KEY ("payment_id") REFERENCES "payments" ("id") ON UPDATE NO ACTION ON DELETE RESTRICT);
-- create index "processedevent_outcome_received_at" to table: "processed_events"
CREATE INDEX "processedevent_outcome_received_at" ON "processed_events" ("outcome", "received_at");
-- create index "processedevent_payment_id" to table: "processed_events"
CREATE INDEX "processedevent_payment_id" ON "processed_events" ("payment_id");
-- create index "processedevent_received_at" to table: "processed_events"
CREATE INDEX "processedevent_received_at" ON "processed_events" ("received_at");
-- create index "processedevent_stripe_event_id" to table: "processed_events"
CREATE UNIQUE INDEX "processedevent_stripe_event_id" ON "processed_events" ("stripe_event_id");
-- create "stripe_customers" table
CREATE TABLE "stripe_customers" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "stripe_customer_id" character varying NOT NULL, "livemode" boolean NOT NULL DEFAULT false, "user_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "stripe_customers_users_stripe_customers" FOREIGN KEY ("user_id") REFERENCES "users" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "stripecustomer_stripe_customer_id" to table: "stripe_customers"
CREATE UNIQUE INDEX "stripecustomer_stripe_customer_id" ON "stripe_customers" ("stripe_customer_id");
-- create index "stripecustomer_user_id_livemode" to table: "stripe_customers"
CREATE UNIQUE INDEX "stripecustomer_user_id_livemode" ON "stripe_customers" ("user_id", "livemode");

-- +goose Down
-- reverse: create index "stripecustomer_user_id_livemode" to table: "stripe_customers"
DROP INDEX "stripecustomer_user_id_livemode";
-- reverse: create index "stripecustomer_stripe_customer_id" to table: "stripe_customers"
DROP INDEX "stripecustomer_stripe_customer_id";
-- reverse: create "stripe_customers" table
DROP TABLE "stripe_customers";
-- reverse: create index "processedevent_stripe_event_id" to table: "processed_events"
DROP INDEX "processedevent_stripe_event_id";
-- reverse: create index "processedevent_received_at" to table: "processed_events"
DROP INDEX "processedevent_received_at";
-- reverse: create index "processedevent_payment_id" to table: "processed_events"
DROP INDEX "processedevent_payment_id";
-- reverse: create index "processedevent_outcome_received_at" to table: "processed_events"
DROP INDEX "processedevent_outcome_received_at";
-- reverse: create "processed_events" table
DROP TABLE "processed_events";
-- reverse: create index "creditledger_user_id_created_at" to table: "credit_ledgers"
DROP INDEX "creditledger_user_id_created_at";
-- reverse: create index "creditledger_transaction_id" to table: "credit_ledgers"
DROP INDEX "creditledger_transaction_id";
-- reverse: create index "creditledger_lot_id" to table: "credit_ledgers"
DROP INDEX "creditledger_lot_id";
-- reverse: create index "creditledger_account_created_at" to table: "credit_ledgers"
DROP INDEX "creditledger_account_created_at";
-- reverse: create "credit_ledgers" table
DROP TABLE "credit_ledgers";
-- reverse: create index "creditlot_user_id_priority_expires_at_created_at" to table: "credit_lots"
DROP INDEX "creditlot_user_id_priority_expires_at_created_at";
-- reverse: create index "creditlot_transaction_id" to table: "credit_lots"
DROP INDEX "creditlot_transaction_id";
-- reverse: create index "creditlot_payment_id" to table: "credit_lots"
DROP INDEX "creditlot_payment_id";
-- reverse: create index "creditlot_expires_at" to table: "credit_lots"
DROP INDEX "creditlot_expires_at";
-- reverse: create "credit_lots" table
DROP TABLE "credit_lots";
-- reverse: create index "adminaction_transaction_id" to table: "admin_actions"
DROP INDEX "adminaction_transaction_id";
-- reverse: create index "adminaction_target_user_id_created_at" to table: "admin_actions"
DROP INDEX "adminaction_target_user_id_created_at";
-- reverse: create index "adminaction_created_at" to table: "admin_actions"
DROP INDEX "adminaction_created_at";
-- reverse: create index "adminaction_admin_id_created_at" to table: "admin_actions"
DROP INDEX "adminaction_admin_id_created_at";
-- reverse: create index "admin_actions_transaction_id_key" to table: "admin_actions"
DROP INDEX "admin_actions_transaction_id_key";
-- reverse: create "admin_actions" table
DROP TABLE "admin_actions";
-- reverse: create index "credittransaction_user_id_created_at" to table: "credit_transactions"
DROP INDEX "credittransaction_user_id_created_at";
-- reverse: create index "credittransaction_reservation_id" to table: "credit_transactions"
DROP INDEX "credittransaction_reservation_id";
-- reverse: create index "credittransaction_payment_id" to table: "credit_transactions"
DROP INDEX "credittransaction_payment_id";
-- reverse: create index "credittransaction_kind_created_at" to table: "credit_transactions"
DROP INDEX "credittransaction_kind_created_at";
-- reverse: create index "credittransaction_created_at" to table: "credit_transactions"
DROP INDEX "credittransaction_created_at";
-- reverse: create "credit_transactions" table
DROP TABLE "credit_transactions";
-- reverse: create index "payment_user_id_created_at" to table: "payments"
DROP INDEX "payment_user_id_created_at";
-- reverse: create index "payment_stripe_payment_intent_id" to table: "payments"
DROP INDEX "payment_stripe_payment_intent_id";
-- reverse: create index "payment_stripe_checkout_session_id" to table: "payments"
DROP INDEX "payment_stripe_checkout_session_id";
-- reverse: create index "payment_stripe_charge_id" to table: "payments"
DROP INDEX "payment_stripe_charge_id";
-- reverse: create index "payment_status_created_at" to table: "payments"
DROP INDEX "payment_status_created_at";
-- reverse: create index "payment_created_at" to table: "payments"
DROP INDEX "payment_created_at";
-- reverse: create "payments" table
DROP TABLE "payments";
-- reverse: create index "creditpackage_name" to table: "credit_packages"
DROP INDEX "creditpackage_name";
-- reverse: create index "creditpackage_active_sort_order" to table: "credit_packages"
DROP INDEX "creditpackage_active_sort_order";
-- reverse: create "credit_packages" table
DROP TABLE "credit_packages";
-- reverse: create index "creditreservation_user_id_status_expires_at" to table: "credit_reservations"
DROP INDEX "creditreservation_user_id_status_expires_at";
-- reverse: create index "creditreservation_status_expires_at" to table: "credit_reservations"
DROP INDEX "creditreservation_status_expires_at";
-- reverse: create "credit_reservations" table
DROP TABLE "credit_reservations";
-- reverse: create index "user_status_created_at" to table: "users"
DROP INDEX "user_status_created_at";
-- reverse: create index "user_external_id" to table: "users"
DROP INDEX "user_external_id";
-- reverse: create index "user_email" to table: "users"
DROP INDEX "user_email";
-- reverse: create index "user_created_at" to table: "users"
DROP INDEX "user_created_at";
-- reverse: create "users" table
DROP TABLE "users";
-- reverse: create index "idempotencykey_scope_key" to table: "idempotency_keys"
DROP INDEX "idempotencykey_scope_key";
-- reverse: create index "idempotencykey_expires_at" to table: "idempotency_keys"
DROP INDEX "idempotencykey_expires_at";
-- reverse: create "idempotency_keys" table
DROP TABLE "idempotency_keys";
