-- +goose Up
-- create "dev_secrets" table
CREATE TABLE "dev_secrets" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "name" character varying NOT NULL, "value" character varying NOT NULL, PRIMARY KEY ("id"));
-- create index "devsecret_name" to table: "dev_secrets"
CREATE UNIQUE INDEX "devsecret_name" ON "dev_secrets" ("name");

-- +goose Down
-- reverse: create index "devsecret_name" to table: "dev_secrets"
DROP INDEX "devsecret_name";
-- reverse: create "dev_secrets" table
DROP TABLE "dev_secrets";
