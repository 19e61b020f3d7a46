-- Hand-written. The ledger is append-only (money invariant 4): corrections
-- are new transactions. The application never updates or deletes these rows;
-- these triggers make the database refuse it too, whoever tries.
-- +goose Up
-- +goose StatementBegin
CREATE TRIGGER credit_ledgers_no_update BEFORE UPDATE ON credit_ledgers
BEGIN
  SELECT RAISE(ABORT, 'UPDATE on credit_ledgers: the table is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER credit_ledgers_no_delete BEFORE DELETE ON credit_ledgers
BEGIN
  SELECT RAISE(ABORT, 'DELETE on credit_ledgers: the table is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER credit_transactions_no_update BEFORE UPDATE ON credit_transactions
BEGIN
  SELECT RAISE(ABORT, 'UPDATE on credit_transactions: the table is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER credit_transactions_no_delete BEFORE DELETE ON credit_transactions
BEGIN
  SELECT RAISE(ABORT, 'DELETE on credit_transactions: the table is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER admin_actions_no_update BEFORE UPDATE ON admin_actions
BEGIN
  SELECT RAISE(ABORT, 'UPDATE on admin_actions: the table is append-only');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER admin_actions_no_delete BEFORE DELETE ON admin_actions
BEGIN
  SELECT RAISE(ABORT, 'DELETE on admin_actions: the table is append-only');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER admin_actions_no_delete;
DROP TRIGGER admin_actions_no_update;
DROP TRIGGER credit_transactions_no_delete;
DROP TRIGGER credit_transactions_no_update;
DROP TRIGGER credit_ledgers_no_delete;
DROP TRIGGER credit_ledgers_no_update;
