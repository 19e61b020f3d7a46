-- +goose Up
-- create index "creditlot_user_id_id" to table: "credit_lots"
CREATE INDEX `creditlot_user_id_id` ON `credit_lots` (`user_id`, `id`);
-- create index "creditlot_user_id" to table: "credit_lots"
CREATE INDEX `creditlot_user_id` ON `credit_lots` (`user_id`) WHERE held > 0;

-- +goose Down
PRAGMA defer_foreign_keys = ON;
-- reverse: create index "creditlot_user_id" to table: "credit_lots"
DROP INDEX `creditlot_user_id`;
-- reverse: create index "creditlot_user_id_id" to table: "credit_lots"
DROP INDEX `creditlot_user_id_id`;
