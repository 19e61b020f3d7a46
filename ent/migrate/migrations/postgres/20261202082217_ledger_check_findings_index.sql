-- +goose Up
-- create index "ledgercheck_findings" to table: "ledger_checks"
CREATE INDEX "ledgercheck_findings" ON "ledger_checks" ("kind", "created_at") WHERE (problem_count > 0);

-- +goose Down
-- reverse: create index "ledgercheck_findings" to table: "ledger_checks"
DROP INDEX "ledgercheck_findings";
