-- +goose Up
-- drop index "credittransaction_user_id_created_at" from table: "credit_transactions"
DROP INDEX "credittransaction_user_id_created_at";
-- create index "credittransaction_user_id_created_at_id" to table: "credit_transactions"
CREATE INDEX "credittransaction_user_id_created_at_id" ON "credit_transactions" ("user_id", "created_at", "id");

-- +goose Down
-- reverse: create index "credittransaction_user_id_created_at_id" to table: "credit_transactions"
DROP INDEX "credittransaction_user_id_created_at_id";
-- reverse: drop index "credittransaction_user_id_created_at" from table: "credit_transactions"
CREATE INDEX "credittransaction_user_id_created_at" ON "credit_transactions" ("user_id", "created_at");
