-- +goose Up
-- disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
-- create index "adminaction_action_created_at" to table: "admin_actions"
CREATE INDEX `adminaction_action_created_at` ON `admin_actions` (`action`, `created_at`);
-- create "new_users" table
CREATE TABLE `new_users` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `external_id` text NOT NULL, `email` text NULL, `credits_balance` integer NOT NULL DEFAULT (0), `transaction_count` integer NOT NULL DEFAULT (0), `status` text NOT NULL DEFAULT ('ACTIVE'), PRIMARY KEY (`id`));
-- copy rows from old table "users" to new temporary table "new_users"
INSERT INTO `new_users` (`id`, `created_at`, `updated_at`, `external_id`, `email`, `credits_balance`, `status`) SELECT `id`, `created_at`, `updated_at`, `external_id`, `email`, `credits_balance`, `status` FROM `users`;
-- drop "users" table after copying rows
DROP TABLE `users`;
-- rename temporary table "new_users" to "users"
ALTER TABLE `new_users` RENAME TO `users`;
-- create index "user_external_id" to table: "users"
CREATE UNIQUE INDEX `user_external_id` ON `users` (`external_id`);
-- create index "user_email" to table: "users"
CREATE INDEX `user_email` ON `users` (`email`);
-- create index "user_status_created_at" to table: "users"
CREATE INDEX `user_status_created_at` ON `users` (`status`, `created_at`);
-- create index "user_created_at" to table: "users"
CREATE INDEX `user_created_at` ON `users` (`created_at`);
-- enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;

-- +goose Down
-- Written by hand: the generated down dropped the indexes of the rebuilt
-- table and a table that no longer exists. SQLite drops the column itself.
DROP INDEX `adminaction_action_created_at`;
ALTER TABLE `users` DROP COLUMN `transaction_count`;
