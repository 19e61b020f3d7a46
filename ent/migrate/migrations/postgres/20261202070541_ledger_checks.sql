-- +goose Up
-- create index "payment_updated_at" to table: "payments"
CREATE INDEX "payment_updated_at" ON "payments" ("updated_at");
-- create "ledger_checks" table
CREATE TABLE "ledger_checks" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "kind" character varying NOT NULL, "status" character varying NOT NULL DEFAULT 'QUEUED', "live" character varying NULL, "requested_by" character varying NULL, "started_at" timestamptz NULL, "finished_at" timestamptz NULL, "updated_at" timestamptz NULL, "phase" character varying NULL, "cursor" character varying NULL, "checked" bigint NOT NULL DEFAULT 0, "total" bigint NOT NULL DEFAULT 0, "users" bigint NOT NULL DEFAULT 0, "transactions" bigint NOT NULL DEFAULT 0, "payments" bigint NOT NULL DEFAULT 0, "postings" bigint NOT NULL DEFAULT 0, "lots" bigint NOT NULL DEFAULT 0, "problem_count" bigint NOT NULL DEFAULT 0, "problems" jsonb NULL, "from_id" character varying NULL, "through_id" character varying NULL, "error" character varying NULL, PRIMARY KEY ("id"));
-- create index "ledgercheck_kind_created_at" to table: "ledger_checks"
CREATE INDEX "ledgercheck_kind_created_at" ON "ledger_checks" ("kind", "created_at");
-- create index "ledgercheck_live" to table: "ledger_checks"
CREATE UNIQUE INDEX "ledgercheck_live" ON "ledger_checks" ("live");

-- +goose Down
-- reverse: create index "ledgercheck_live" to table: "ledger_checks"
DROP INDEX "ledgercheck_live";
-- reverse: create index "ledgercheck_kind_created_at" to table: "ledger_checks"
DROP INDEX "ledgercheck_kind_created_at";
-- reverse: create "ledger_checks" table
DROP TABLE "ledger_checks";
-- reverse: create index "payment_updated_at" to table: "payments"
DROP INDEX "payment_updated_at";
