-- +goose Up
-- modify "credit_transactions" table
ALTER TABLE "credit_transactions" ADD COLUMN "fingerprint" bytea NULL;
-- create index "credittransaction_actor_idempotency_key" to table: "credit_transactions"
CREATE UNIQUE INDEX "credittransaction_actor_idempotency_key" ON "credit_transactions" ("actor", "idempotency_key") WHERE (idempotency_key IS NOT NULL);
-- drop index "idempotencykey_expires_at" from table: "idempotency_keys"
DROP INDEX "idempotencykey_expires_at";

-- +goose Down
-- reverse: drop index "idempotencykey_expires_at" from table: "idempotency_keys"
CREATE INDEX "idempotencykey_expires_at" ON "idempotency_keys" ("expires_at");
-- reverse: create index "credittransaction_actor_idempotency_key" to table: "credit_transactions"
DROP INDEX "credittransaction_actor_idempotency_key";
-- reverse: modify "credit_transactions" table
ALTER TABLE "credit_transactions" DROP COLUMN "fingerprint";
