-- +goose Up
-- add column "expiry_noticed_at" to table: "credit_lots"
ALTER TABLE `credit_lots` ADD COLUMN `expiry_noticed_at` datetime NULL;

-- +goose Down
PRAGMA defer_foreign_keys = ON;
-- reverse: add column "expiry_noticed_at" to table: "credit_lots"
ALTER TABLE `credit_lots` DROP COLUMN `expiry_noticed_at`;
