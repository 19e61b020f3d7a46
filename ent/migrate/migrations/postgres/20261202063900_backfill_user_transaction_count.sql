-- Hand-written. Users written before transaction_count existed get the
-- count of their history; from now on the ledger keeps it in the same
-- update as the balance, and the invariant check compares the two
-- (transaction_count_mismatch). One pass over credit_transactions through
-- its (user_id, created_at, id) index.
-- +goose Up
UPDATE users SET transaction_count = (
  SELECT COUNT(*) FROM credit_transactions t WHERE t.user_id = users.id
);

-- +goose Down
-- Nothing to undo: the column goes with the previous migration's down.
-- (A statement all the same: an empty down is not counted as reverted.)
SELECT 1;
