-- +goose Up
-- create "dev_secrets" table
CREATE TABLE `dev_secrets` (`id` text NOT NULL, `created_at` datetime NOT NULL, `name` text NOT NULL, `value` text NOT NULL, PRIMARY KEY (`id`));
-- create index "devsecret_name" to table: "dev_secrets"
CREATE UNIQUE INDEX `devsecret_name` ON `dev_secrets` (`name`);

-- +goose Down
PRAGMA defer_foreign_keys = ON;
-- reverse: create index "devsecret_name" to table: "dev_secrets"
DROP INDEX `devsecret_name`;
-- reverse: create "dev_secrets" table
DROP TABLE `dev_secrets`;
