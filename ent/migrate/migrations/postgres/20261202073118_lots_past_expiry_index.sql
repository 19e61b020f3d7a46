-- +goose Up
-- create index "creditlot_user_id_expires_at" to table: "credit_lots"
CREATE INDEX "creditlot_user_id_expires_at" ON "credit_lots" ("user_id", "expires_at") WHERE (remaining > 0);

-- +goose Down
-- reverse: create index "creditlot_user_id_expires_at" to table: "credit_lots"
DROP INDEX "creditlot_user_id_expires_at";
