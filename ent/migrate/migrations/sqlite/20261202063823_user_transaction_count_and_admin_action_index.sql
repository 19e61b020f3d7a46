-- +goose Up
-- Edited by hand: the generated up rebuilt the users table (create
-- new_users, copy, drop users, rename), and dropping users fails on any
-- database with transactions, whose foreign keys refer to it (PRAGMA
-- foreign_keys cannot be turned off inside the migration's transaction).
-- SQLite adds a column with a constant default in place.
-- create index "adminaction_action_created_at" to table: "admin_actions"
CREATE INDEX `adminaction_action_created_at` ON `admin_actions` (`action`, `created_at`);
-- modify "users" table
ALTER TABLE `users` ADD COLUMN `transaction_count` integer NOT NULL DEFAULT (0);

-- +goose Down
-- SQLite drops the column itself.
DROP INDEX `adminaction_action_created_at`;
ALTER TABLE `users` DROP COLUMN `transaction_count`;
