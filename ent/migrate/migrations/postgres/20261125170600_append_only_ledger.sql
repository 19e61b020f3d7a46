-- Hand-written. The ledger is append-only (money invariant 4): corrections
-- are new transactions. The application never updates or deletes these rows;
-- these triggers make the database refuse it too, whoever tries.
-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tally_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% on %: the table is append-only', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER credit_ledgers_append_only BEFORE UPDATE OR DELETE ON credit_ledgers
  FOR EACH ROW EXECUTE FUNCTION tally_refuse_change();
CREATE TRIGGER credit_ledgers_no_truncate BEFORE TRUNCATE ON credit_ledgers
  FOR EACH STATEMENT EXECUTE FUNCTION tally_refuse_change();
CREATE TRIGGER credit_transactions_append_only BEFORE UPDATE OR DELETE ON credit_transactions
  FOR EACH ROW EXECUTE FUNCTION tally_refuse_change();
CREATE TRIGGER credit_transactions_no_truncate BEFORE TRUNCATE ON credit_transactions
  FOR EACH STATEMENT EXECUTE FUNCTION tally_refuse_change();
CREATE TRIGGER admin_actions_append_only BEFORE UPDATE OR DELETE ON admin_actions
  FOR EACH ROW EXECUTE FUNCTION tally_refuse_change();
CREATE TRIGGER admin_actions_no_truncate BEFORE TRUNCATE ON admin_actions
  FOR EACH STATEMENT EXECUTE FUNCTION tally_refuse_change();

-- +goose Down
DROP TRIGGER admin_actions_no_truncate ON admin_actions;
DROP TRIGGER admin_actions_append_only ON admin_actions;
DROP TRIGGER credit_transactions_no_truncate ON credit_transactions;
DROP TRIGGER credit_transactions_append_only ON credit_transactions;
DROP TRIGGER credit_ledgers_no_truncate ON credit_ledgers;
DROP TRIGGER credit_ledgers_append_only ON credit_ledgers;
DROP FUNCTION tally_refuse_change();
