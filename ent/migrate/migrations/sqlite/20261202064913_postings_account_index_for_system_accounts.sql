-- +goose Up
-- Written by hand: the generated form rebuilt the table, which drops its
-- append-only triggers; replacing the index is enough.
-- drop index "creditledger_account_created_at" from table: "credit_ledgers"
DROP INDEX `creditledger_account_created_at`;
-- create index "creditledger_account_created_at" to table: "credit_ledgers"
CREATE INDEX `creditledger_account_created_at` ON `credit_ledgers` (`account`, `created_at`) WHERE user_id IS NULL;

-- +goose Down
-- reverse: create index "creditledger_account_created_at" to table: "credit_ledgers"
DROP INDEX `creditledger_account_created_at`;
-- reverse: drop index "creditledger_account_created_at" from table: "credit_ledgers"
CREATE INDEX `creditledger_account_created_at` ON `credit_ledgers` (`account`, `created_at`);
