-- +goose Up
-- modify "credit_lots" table
ALTER TABLE "credit_lots" ADD COLUMN "expiry_noticed_at" timestamptz NULL;

-- +goose Down
-- reverse: modify "credit_lots" table
ALTER TABLE "credit_lots" DROP COLUMN "expiry_noticed_at";
