package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestBalancesAreBalanceOfEach: one statement's balances of several users
// are what Balance says of each, an expired reservation and an expired lot
// included; an id of no user is left out (and Balance says NOT_FOUND), a
// repeated id is read once, and too many ids are refused.
func TestBalancesAreBalanceOfEach(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		var ids []string
		for i := range 4 {
			u := e.user(fmt.Sprint("u", i))
			ids = append(ids, u.ID)
			e.grant(u.ID, int64(100+i))
			if i%2 == 0 {
				expires := e.clock.Now().Add(time.Hour)
				if _, err := e.l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 7, ExpiresAt: &expires, IdempotencyKey: e.key()}); err != nil {
					t.Fatal(err)
				}
				if _, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: int64(10 + i), TTLSeconds: seconds(2 * time.Hour), IdempotencyKey: e.key()}); err != nil {
					t.Fatal(err)
				}
			}
		}
		e.clock.Advance(90 * time.Minute) // the lots of 7 expire; the reservations still hold
		got, err := e.l.Balances(ctx, append([]string{"usr_nobody", ids[0]}, ids...))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(ids) {
			t.Fatalf("%d balances for %d users: %v", len(got), len(ids), got)
		}
		for _, id := range ids {
			if want := e.balance(id); got[id] != want {
				t.Errorf("%s: Balances %+v, Balance %+v", id, got[id], want)
			}
		}
		if _, ok := got["usr_nobody"]; ok {
			t.Error("a balance for no user")
		}
		if _, err := e.l.Balance(ctx, "usr_nobody"); apperr.CodeOf(err) != apperr.NotFound {
			t.Errorf("Balance of no user: %v, want NOT_FOUND", err)
		}
		if empty, err := e.l.Balances(ctx, nil); err != nil || len(empty) != 0 {
			t.Errorf("no ids: %v, %v", empty, err)
		}
		if _, err := e.l.Balances(ctx, make([]string, ledger.MaxBalanceBatch+1)); apperr.CodeOf(err) != apperr.InvalidArgument {
			t.Errorf("%d ids: %v, want INVALID_ARGUMENT", ledger.MaxBalanceBatch+1, err)
		}
	})
}
