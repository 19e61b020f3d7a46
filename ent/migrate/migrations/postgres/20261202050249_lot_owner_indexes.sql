-- +goose Up
-- create index "creditlot_user_id" to table: "credit_lots"
CREATE INDEX "creditlot_user_id" ON "credit_lots" ("user_id") WHERE (held > 0);
-- create index "creditlot_user_id_id" to table: "credit_lots"
CREATE INDEX "creditlot_user_id_id" ON "credit_lots" ("user_id", "id");

-- +goose Down
-- reverse: create index "creditlot_user_id_id" to table: "credit_lots"
DROP INDEX "creditlot_user_id_id";
-- reverse: create index "creditlot_user_id" to table: "credit_lots"
DROP INDEX "creditlot_user_id";
