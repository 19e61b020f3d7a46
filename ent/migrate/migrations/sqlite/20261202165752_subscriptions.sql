-- +goose NO TRANSACTION
-- +goose Up
-- Plans and subscriptions. payments.package_id becomes nullable (a
-- subscription's invoice buys no pack), which SQLite cannot do in place:
-- the table is rebuilt. Foreign keys are switched off for the rebuild, which
-- SQLite allows outside a transaction only: the migration runs as one
-- statement list on one connection, in a transaction of its own, and its
-- rows are copied as they are, so every reference still holds.
-- +goose StatementBegin
PRAGMA foreign_keys = off;
BEGIN IMMEDIATE;
CREATE TABLE `credit_plans` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `name` text NOT NULL, `description` text NULL, `credits_per_period` integer NOT NULL, `interval` text NOT NULL, `price_amount` integer NOT NULL, `currency` text NOT NULL, `stripe_price_id` text NULL, `rollover` text NOT NULL DEFAULT ('NONE'), `rollover_cap` integer NULL, `active` bool NOT NULL DEFAULT (true), `sort_order` integer NOT NULL DEFAULT (0), PRIMARY KEY (`id`));
CREATE UNIQUE INDEX `creditplan_name` ON `credit_plans` (`name`);
CREATE INDEX `creditplan_active_sort_order` ON `credit_plans` (`active`, `sort_order`);
CREATE INDEX `creditplan_stripe_price_id` ON `credit_plans` (`stripe_price_id`);
CREATE TABLE `credit_subscriptions` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `status` text NOT NULL DEFAULT ('INCOMPLETE'), `current_period_start` datetime NULL, `current_period_end` datetime NULL, `cancel_at_period_end` bool NOT NULL DEFAULT (false), `canceled_at` datetime NULL, `stripe_subscription_id` text NULL, `stripe_checkout_session_id` text NULL, `livemode` bool NOT NULL DEFAULT (false), `status_mark` text NULL, `cancel_mark` text NULL, `plan_id` text NOT NULL, `user_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `credit_subscriptions_credit_plans_plan` FOREIGN KEY (`plan_id`) REFERENCES `credit_plans` (`id`) ON DELETE NO ACTION, CONSTRAINT `credit_subscriptions_users_subscriptions` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`) ON DELETE NO ACTION);
CREATE UNIQUE INDEX `creditsubscription_stripe_subscription_id` ON `credit_subscriptions` (`stripe_subscription_id`);
CREATE UNIQUE INDEX `creditsubscription_stripe_checkout_session_id` ON `credit_subscriptions` (`stripe_checkout_session_id`);
CREATE INDEX `creditsubscription_user_id_created_at` ON `credit_subscriptions` (`user_id`, `created_at`);
CREATE INDEX `creditsubscription_status_created_at` ON `credit_subscriptions` (`status`, `created_at`);
CREATE INDEX `creditsubscription_created_at` ON `credit_subscriptions` (`created_at`);
CREATE TABLE `new_payments` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `kind` text NOT NULL DEFAULT ('CHECKOUT'), `save_card` bool NOT NULL DEFAULT (false), `recharge_slot` text NULL, `stripe_invoice_id` text NULL, `period_start` datetime NULL, `period_end` datetime NULL, `amount` integer NOT NULL, `currency` text NOT NULL, `credits` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING'), `status_before_dispute` text NULL, `amount_refunded` integer NOT NULL DEFAULT (0), `stripe_checkout_session_id` text NULL, `stripe_payment_intent_id` text NULL, `stripe_charge_id` text NULL, `livemode` bool NOT NULL DEFAULT (false), `paid_at` datetime NULL, `subscription_id` text NULL, `package_id` text NULL, `plan_id` text NULL, `user_id` text NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `payments_credit_subscriptions_payments` FOREIGN KEY (`subscription_id`) REFERENCES `credit_subscriptions` (`id`) ON DELETE RESTRICT, CONSTRAINT `payments_credit_packages_package` FOREIGN KEY (`package_id`) REFERENCES `credit_packages` (`id`) ON DELETE RESTRICT, CONSTRAINT `payments_credit_plans_plan` FOREIGN KEY (`plan_id`) REFERENCES `credit_plans` (`id`) ON DELETE RESTRICT, CONSTRAINT `payments_users_payments` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`) ON DELETE NO ACTION);
INSERT INTO `new_payments` (`id`, `created_at`, `updated_at`, `kind`, `save_card`, `recharge_slot`, `amount`, `currency`, `credits`, `status`, `status_before_dispute`, `amount_refunded`, `stripe_checkout_session_id`, `stripe_payment_intent_id`, `stripe_charge_id`, `livemode`, `paid_at`, `package_id`, `user_id`) SELECT `id`, `created_at`, `updated_at`, `kind`, `save_card`, `recharge_slot`, `amount`, `currency`, `credits`, `status`, `status_before_dispute`, `amount_refunded`, `stripe_checkout_session_id`, `stripe_payment_intent_id`, `stripe_charge_id`, `livemode`, `paid_at`, `package_id`, `user_id` FROM `payments`;
DROP TABLE `payments`;
ALTER TABLE `new_payments` RENAME TO `payments`;
CREATE UNIQUE INDEX `payment_stripe_checkout_session_id` ON `payments` (`stripe_checkout_session_id`);
CREATE UNIQUE INDEX `payment_stripe_payment_intent_id` ON `payments` (`stripe_payment_intent_id`);
CREATE UNIQUE INDEX `payment_stripe_charge_id` ON `payments` (`stripe_charge_id`);
CREATE UNIQUE INDEX `payment_recharge_slot` ON `payments` (`recharge_slot`);
CREATE UNIQUE INDEX `payment_stripe_invoice_id` ON `payments` (`stripe_invoice_id`);
CREATE INDEX `payment_subscription_id_period_end` ON `payments` (`subscription_id`, `period_end`);
CREATE INDEX `payment_user_id_created_at` ON `payments` (`user_id`, `created_at`);
CREATE INDEX `payment_status_created_at` ON `payments` (`status`, `created_at`);
CREATE INDEX `payment_created_at` ON `payments` (`created_at`);
CREATE INDEX `payment_updated_at` ON `payments` (`updated_at`);
COMMIT;
PRAGMA foreign_keys = on;
-- +goose StatementEnd

-- +goose Down
-- The reverse rebuild; it fails (and changes nothing) once a payment has no
-- pack, i.e. once a subscription has been paid.
-- +goose StatementBegin
PRAGMA foreign_keys = off;
BEGIN IMMEDIATE;
CREATE TABLE `new_payments` (`id` text NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `amount` integer NOT NULL, `currency` text NOT NULL, `credits` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING'), `status_before_dispute` text NULL, `amount_refunded` integer NOT NULL DEFAULT (0), `stripe_checkout_session_id` text NULL, `stripe_payment_intent_id` text NULL, `stripe_charge_id` text NULL, `livemode` bool NOT NULL DEFAULT (false), `paid_at` datetime NULL, `package_id` text NOT NULL, `user_id` text NOT NULL, `kind` text NOT NULL DEFAULT ('CHECKOUT'), `save_card` bool NOT NULL DEFAULT (false), `recharge_slot` text NULL, PRIMARY KEY (`id`), CONSTRAINT `payments_credit_packages_package` FOREIGN KEY (`package_id`) REFERENCES `credit_packages` (`id`) ON DELETE NO ACTION, CONSTRAINT `payments_users_payments` FOREIGN KEY (`user_id`) REFERENCES `users` (`id`) ON DELETE NO ACTION);
INSERT INTO `new_payments` (`id`, `created_at`, `updated_at`, `amount`, `currency`, `credits`, `status`, `status_before_dispute`, `amount_refunded`, `stripe_checkout_session_id`, `stripe_payment_intent_id`, `stripe_charge_id`, `livemode`, `paid_at`, `package_id`, `user_id`, `kind`, `save_card`, `recharge_slot`) SELECT `id`, `created_at`, `updated_at`, `amount`, `currency`, `credits`, `status`, `status_before_dispute`, `amount_refunded`, `stripe_checkout_session_id`, `stripe_payment_intent_id`, `stripe_charge_id`, `livemode`, `paid_at`, `package_id`, `user_id`, `kind`, `save_card`, `recharge_slot` FROM `payments`;
DROP TABLE `payments`;
ALTER TABLE `new_payments` RENAME TO `payments`;
CREATE UNIQUE INDEX `payment_stripe_checkout_session_id` ON `payments` (`stripe_checkout_session_id`);
CREATE UNIQUE INDEX `payment_stripe_payment_intent_id` ON `payments` (`stripe_payment_intent_id`);
CREATE UNIQUE INDEX `payment_stripe_charge_id` ON `payments` (`stripe_charge_id`);
CREATE INDEX `payment_user_id_created_at` ON `payments` (`user_id`, `created_at`);
CREATE INDEX `payment_status_created_at` ON `payments` (`status`, `created_at`);
CREATE INDEX `payment_created_at` ON `payments` (`created_at`);
CREATE INDEX `payment_updated_at` ON `payments` (`updated_at`);
CREATE UNIQUE INDEX `payment_recharge_slot` ON `payments` (`recharge_slot`);
DROP INDEX `creditsubscription_created_at`;
DROP INDEX `creditsubscription_status_created_at`;
DROP INDEX `creditsubscription_user_id_created_at`;
DROP INDEX `creditsubscription_stripe_checkout_session_id`;
DROP INDEX `creditsubscription_stripe_subscription_id`;
DROP TABLE `credit_subscriptions`;
DROP INDEX `creditplan_stripe_price_id`;
DROP INDEX `creditplan_active_sort_order`;
DROP INDEX `creditplan_name`;
DROP TABLE `credit_plans`;
COMMIT;
PRAGMA foreign_keys = on;
-- +goose StatementEnd
