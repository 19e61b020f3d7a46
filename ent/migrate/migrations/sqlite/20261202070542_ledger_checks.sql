-- +goose Up
-- create index "payment_updated_at" to table: "payments"
CREATE INDEX `payment_updated_at` ON `payments` (`updated_at`);
-- create "ledger_checks" table
CREATE TABLE `ledger_checks` (`id` text NOT NULL, `created_at` datetime NOT NULL, `kind` text NOT NULL, `status` text NOT NULL DEFAULT ('QUEUED'), `live` text NULL, `requested_by` text NULL, `started_at` datetime NULL, `finished_at` datetime NULL, `updated_at` datetime NULL, `phase` text NULL, `cursor` text NULL, `checked` integer NOT NULL DEFAULT (0), `total` integer NOT NULL DEFAULT (0), `users` integer NOT NULL DEFAULT (0), `transactions` integer NOT NULL DEFAULT (0), `payments` integer NOT NULL DEFAULT (0), `postings` integer NOT NULL DEFAULT (0), `lots` integer NOT NULL DEFAULT (0), `problem_count` integer NOT NULL DEFAULT (0), `problems` json NULL, `from_id` text NULL, `through_id` text NULL, `error` text NULL, PRIMARY KEY (`id`));
-- create index "ledgercheck_kind_created_at" to table: "ledger_checks"
CREATE INDEX `ledgercheck_kind_created_at` ON `ledger_checks` (`kind`, `created_at`);
-- create index "ledgercheck_live" to table: "ledger_checks"
CREATE UNIQUE INDEX `ledgercheck_live` ON `ledger_checks` (`live`);

-- +goose Down
PRAGMA defer_foreign_keys = ON;
-- reverse: create index "ledgercheck_live" to table: "ledger_checks"
DROP INDEX `ledgercheck_live`;
-- reverse: create index "ledgercheck_kind_created_at" to table: "ledger_checks"
DROP INDEX `ledgercheck_kind_created_at`;
-- reverse: create "ledger_checks" table
DROP TABLE `ledger_checks`;
-- reverse: create index "payment_updated_at" to table: "payments"
DROP INDEX `payment_updated_at`;
