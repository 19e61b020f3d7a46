-- +goose Up
-- Columns are added in place: atlas would copy the payments table, which is
-- needless (every new column has a default or is nullable) and slow on a
-- large one.
ALTER TABLE `payments` ADD COLUMN `kind` text NOT NULL DEFAULT ('CHECKOUT');
ALTER TABLE `payments` ADD COLUMN `save_card` bool NOT NULL DEFAULT (false);
ALTER TABLE `payments` ADD COLUMN `recharge_slot` text NULL;
-- create index "payment_recharge_slot" to table: "payments"
CREATE UNIQUE INDEX `payment_recharge_slot` ON `payments` (`recharge_slot`);
-- add column "recharge_below" to table: "users"
ALTER TABLE `users` ADD COLUMN `recharge_below` integer NULL;
-- create "auto_recharges" table
CREATE TABLE `auto_recharges` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `user_id` text NOT NULL, `enabled` bool NOT NULL DEFAULT (false), `threshold_credits` integer NOT NULL DEFAULT (0), `monthly_limit_amount` integer NOT NULL DEFAULT (0), `status` text NOT NULL DEFAULT ('ACTIVE'), `last_error` text NULL, `last_recharge_at` datetime NULL, `consecutive_failures` integer NOT NULL DEFAULT (0), `retry_after` datetime NULL, `in_flight_payment_id` text NULL, `stripe_customer_id` text NULL, `stripe_payment_method_id` text NULL, `card_brand` text NULL, `card_last4` text NULL, `card_exp_month` integer NOT NULL DEFAULT (0), `card_exp_year` integer NOT NULL DEFAULT (0), `package_id` text NULL, PRIMARY KEY (`id`), CONSTRAINT `auto_recharges_credit_packages_package` FOREIGN KEY (`package_id`) REFERENCES `credit_packages` (`id`) ON DELETE SET NULL);
-- create index "autorecharge_user_id" to table: "auto_recharges"
CREATE UNIQUE INDEX `autorecharge_user_id` ON `auto_recharges` (`user_id`);

-- +goose Down
-- reverse: create index "autorecharge_user_id" to table: "auto_recharges"
DROP INDEX `autorecharge_user_id`;
-- reverse: create "auto_recharges" table
DROP TABLE `auto_recharges`;
-- reverse: add column "recharge_below" to table: "users"
ALTER TABLE `users` DROP COLUMN `recharge_below`;
-- reverse: create index "payment_recharge_slot" to table: "payments"
DROP INDEX `payment_recharge_slot`;
ALTER TABLE `payments` DROP COLUMN `recharge_slot`;
ALTER TABLE `payments` DROP COLUMN `save_card`;
ALTER TABLE `payments` DROP COLUMN `kind`;
