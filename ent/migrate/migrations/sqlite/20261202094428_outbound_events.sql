-- +goose Up
-- SQLite adds the columns itself (what atlas writes instead copies the
-- whole users table).
ALTER TABLE `users` ADD COLUMN `low_balance_threshold` integer NULL;
ALTER TABLE `users` ADD COLUMN `balance_level` text NULL;
ALTER TABLE `users` ADD COLUMN `event_seq` integer NOT NULL DEFAULT (0);
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

-- +goose Down
DROP TABLE `webhook_deliveries`;
DROP TABLE `webhook_events`;
DROP TABLE `webhook_endpoints`;
ALTER TABLE `users` DROP COLUMN `event_seq`;
ALTER TABLE `users` DROP COLUMN `balance_level`;
ALTER TABLE `users` DROP COLUMN `low_balance_threshold`;
