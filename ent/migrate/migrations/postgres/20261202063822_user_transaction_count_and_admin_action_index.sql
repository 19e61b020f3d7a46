-- +goose Up
-- create index "adminaction_action_created_at" to table: "admin_actions"
CREATE INDEX "adminaction_action_created_at" ON "admin_actions" ("action", "created_at");
-- modify "users" table
ALTER TABLE "users" ADD COLUMN "transaction_count" bigint NOT NULL DEFAULT 0;

-- +goose Down
-- reverse: modify "users" table
ALTER TABLE "users" DROP COLUMN "transaction_count";
-- reverse: create index "adminaction_action_created_at" to table: "admin_actions"
DROP INDEX "adminaction_action_created_at";
