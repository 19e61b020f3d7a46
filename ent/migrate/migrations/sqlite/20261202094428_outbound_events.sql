-- +goose Up
-- disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
-- create "new_users" table
CREATE TABLE `new_users` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `external_id` text NOT NULL, `email` text NULL, `credits_balance` integer NOT NULL DEFAULT (0), `transaction_count` integer NOT NULL DEFAULT (0), `low_balance_threshold` integer NULL, `balance_level` text NULL, `event_seq` integer NOT NULL DEFAULT (0), `status` text NOT NULL DEFAULT ('ACTIVE'), PRIMARY KEY (`id`));
-- copy rows from old table "users" to new temporary table "new_users"
INSERT INTO `new_users` (`id`, `created_at`, `updated_at`, `external_id`, `email`, `credits_balance`, `transaction_count`, `status`) SELECT `id`, `created_at`, `updated_at`, `external_id`, `email`, `credits_balance`, `transaction_count`, `status` FROM `users`;
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
-- create "webhook_deliveries" table
CREATE TABLE `webhook_deliveries` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `user_id` text NULL, `seq` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING'), `attempts` integer NOT NULL DEFAULT (0), `last_error` text NULL, `last_response_status` integer NULL, `next_attempt_at` datetime NULL, `delivered_at` datetime NULL, `endpoint_id` text NOT NULL, `event_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `webhook_deliveries_webhook_endpoints_deliveries` FOREIGN KEY (`endpoint_id`) REFERENCES `webhook_endpoints` (`id`) ON DELETE CASCADE, CONSTRAINT `webhook_deliveries_webhook_events_deliveries` FOREIGN KEY (`event_id`) REFERENCES `webhook_events` (`id`) ON DELETE NO ACTION);
-- create index "webhookdelivery_event_id_endpoint_id" to table: "webhook_deliveries"
CREATE UNIQUE INDEX `webhookdelivery_event_id_endpoint_id` ON `webhook_deliveries` (`event_id`, `endpoint_id`);
-- create index "webhookdelivery_endpoint_id_user_id_status_seq" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_endpoint_id_user_id_status_seq` ON `webhook_deliveries` (`endpoint_id`, `user_id`, `status`, `seq`);
-- create index "webhookdelivery_endpoint_id_created_at" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_endpoint_id_created_at` ON `webhook_deliveries` (`endpoint_id`, `created_at`);
-- create index "webhookdelivery_status_created_at" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_status_created_at` ON `webhook_deliveries` (`status`, `created_at`);
-- create index "webhookdelivery_created_at" to table: "webhook_deliveries"
CREATE INDEX `webhookdelivery_created_at` ON `webhook_deliveries` (`created_at`);
-- create "webhook_endpoints" table
CREATE TABLE `webhook_endpoints` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `url` text NOT NULL, `description` text NULL, `event_types` json NULL, `enabled` bool NOT NULL DEFAULT (true), `disabled_reason` text NULL, `secret` text NOT NULL, `previous_secret` text NULL, `previous_secret_expires_at` datetime NULL, PRIMARY KEY (`id`));
-- create "webhook_events" table
CREATE TABLE `webhook_events` (`id` text NOT NULL, `created_at` datetime NOT NULL, `type` text NOT NULL, `user_id` text NULL, `seq` integer NOT NULL, `payload` text NOT NULL, PRIMARY KEY (`id`));
-- create index "webhookevent_user_id_seq" to table: "webhook_events"
CREATE INDEX `webhookevent_user_id_seq` ON `webhook_events` (`user_id`, `seq`);
-- enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;

-- +goose Down
PRAGMA defer_foreign_keys = ON;
-- reverse: create index "webhookevent_user_id_seq" to table: "webhook_events"
DROP INDEX `webhookevent_user_id_seq`;
-- reverse: create "webhook_events" table
DROP TABLE `webhook_events`;
-- reverse: create "webhook_endpoints" table
DROP TABLE `webhook_endpoints`;
-- reverse: create index "webhookdelivery_created_at" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_created_at`;
-- reverse: create index "webhookdelivery_status_created_at" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_status_created_at`;
-- reverse: create index "webhookdelivery_endpoint_id_created_at" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_endpoint_id_created_at`;
-- reverse: create index "webhookdelivery_endpoint_id_user_id_status_seq" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_endpoint_id_user_id_status_seq`;
-- reverse: create index "webhookdelivery_event_id_endpoint_id" to table: "webhook_deliveries"
DROP INDEX `webhookdelivery_event_id_endpoint_id`;
-- reverse: create "webhook_deliveries" table
DROP TABLE `webhook_deliveries`;
-- reverse: create index "user_created_at" to table: "users"
DROP INDEX `user_created_at`;
-- reverse: create index "user_status_created_at" to table: "users"
DROP INDEX `user_status_created_at`;
-- reverse: create index "user_email" to table: "users"
DROP INDEX `user_email`;
-- reverse: create index "user_external_id" to table: "users"
DROP INDEX `user_external_id`;
-- reverse: create "new_users" table
DROP TABLE `new_users`;
