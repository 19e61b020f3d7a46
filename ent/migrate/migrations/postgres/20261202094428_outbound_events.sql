-- +goose Up
-- modify "users" table
ALTER TABLE "users" ADD COLUMN "low_balance_threshold" bigint NULL, ADD COLUMN "balance_level" character varying NULL, ADD COLUMN "event_seq" bigint NOT NULL DEFAULT 0;
-- create "webhook_endpoints" table
CREATE TABLE "webhook_endpoints" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "url" character varying NOT NULL, "description" character varying NULL, "event_types" jsonb NULL, "enabled" boolean NOT NULL DEFAULT true, "disabled_reason" character varying NULL, "secret" character varying NOT NULL, "previous_secret" character varying NULL, "previous_secret_expires_at" timestamptz NULL, PRIMARY KEY ("id"));
-- create "webhook_events" table
CREATE TABLE "webhook_events" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "type" character varying NOT NULL, "user_id" character varying NULL, "seq" bigint NOT NULL, "payload" text NOT NULL, PRIMARY KEY ("id"));
-- create index "webhookevent_user_id_seq" to table: "webhook_events"
CREATE INDEX "webhookevent_user_id_seq" ON "webhook_events" ("user_id", "seq");
-- create "webhook_deliveries" table
CREATE TABLE "webhook_deliveries" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "user_id" character varying NULL, "seq" bigint NOT NULL, "status" character varying NOT NULL DEFAULT 'PENDING', "attempts" bigint NOT NULL DEFAULT 0, "last_error" character varying NULL, "last_response_status" bigint NULL, "next_attempt_at" timestamptz NULL, "delivered_at" timestamptz NULL, "endpoint_id" character varying NOT NULL, "event_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "webhook_deliveries_webhook_endpoints_deliveries" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "webhook_deliveries_webhook_events_deliveries" FOREIGN KEY ("event_id") REFERENCES "webhook_events" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "webhookdelivery_created_at" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_created_at" ON "webhook_deliveries" ("created_at");
-- create index "webhookdelivery_endpoint_id_created_at" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_endpoint_id_created_at" ON "webhook_deliveries" ("endpoint_id", "created_at");
-- create index "webhookdelivery_endpoint_id_user_id_status_seq" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_endpoint_id_user_id_status_seq" ON "webhook_deliveries" ("endpoint_id", "user_id", "status", "seq");
-- create index "webhookdelivery_event_id_endpoint_id" to table: "webhook_deliveries"
CREATE UNIQUE INDEX "webhookdelivery_event_id_endpoint_id" ON "webhook_deliveries" ("event_id", "endpoint_id");
-- create index "webhookdelivery_status_created_at" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_status_created_at" ON "webhook_deliveries" ("status", "created_at");

-- +goose Down
-- reverse: create index "webhookdelivery_status_created_at" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_status_created_at";
-- reverse: create index "webhookdelivery_event_id_endpoint_id" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_event_id_endpoint_id";
-- reverse: create index "webhookdelivery_endpoint_id_user_id_status_seq" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_endpoint_id_user_id_status_seq";
-- reverse: create index "webhookdelivery_endpoint_id_created_at" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_endpoint_id_created_at";
-- reverse: create index "webhookdelivery_created_at" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_created_at";
-- reverse: create "webhook_deliveries" table
DROP TABLE "webhook_deliveries";
-- reverse: create index "webhookevent_user_id_seq" to table: "webhook_events"
DROP INDEX "webhookevent_user_id_seq";
-- reverse: create "webhook_events" table
DROP TABLE "webhook_events";
-- reverse: create "webhook_endpoints" table
DROP TABLE "webhook_endpoints";
-- reverse: modify "users" table
ALTER TABLE "users" DROP COLUMN "event_seq", DROP COLUMN "balance_level", DROP COLUMN "low_balance_threshold";
