-- +goose Up
-- add column "fingerprint" to table: "credit_transactions"
ALTER TABLE `credit_transactions` ADD COLUMN `fingerprint` blob NULL;
-- create index "credittransaction_actor_idempotency_key" to table: "credit_transactions"
CREATE UNIQUE INDEX `credittransaction_actor_idempotency_key` ON `credit_transactions` (`actor`, `idempotency_key`) WHERE idempotency_key IS NOT NULL;
-- drop index "idempotencykey_expires_at" from table: "idempotency_keys"
DROP INDEX `idempotencykey_expires_at`;

-- +goose Down
PRAGMA defer_foreign_keys = ON;
-- reverse: drop index "idempotencykey_expires_at" from table: "idempotency_keys"
CREATE INDEX `idempotencykey_expires_at` ON `idempotency_keys` (`expires_at`);
-- reverse: create index "credittransaction_actor_idempotency_key" to table: "credit_transactions"
DROP INDEX `credittransaction_actor_idempotency_key`;
-- reverse: add column "fingerprint" to table: "credit_transactions"
ALTER TABLE `credit_transactions` DROP COLUMN `fingerprint`;
