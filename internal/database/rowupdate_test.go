package database_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

func TestRowUpdateStatement(t *testing.T) {
	q, args := database.UpdateRows("t", []string{"a", "b", "c"}).
		Set("x", 1).
		SetEach("y", "BIGINT", map[string]any{"a": 10, "c": 30}).
		Statement()
	want := "UPDATE t SET x = ?, y = CASE id WHEN ? THEN CAST(? AS BIGINT) WHEN ? THEN CAST(? AS BIGINT) ELSE y END WHERE id IN (?, ?, ?)"
	if q != want {
		t.Fatalf("statement\n%s\nwant\n%s", q, want)
	}
	if got := len(args); got != 8 || args[0] != 1 || args[1] != "a" || args[2] != 10 || args[4] != 30 || args[7] != "c" {
		t.Fatalf("arguments %v", args)
	}
}

// TestRowUpdate runs the statement on each database: every row gets its own
// value, a row without one keeps its own, rows not named are untouched,
// and an id that names no row fails the update (the caller's transaction
// then rolls it back).
func TestRowUpdate(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		ids := make([]string, 4)
		for i := range ids {
			u := db.Ent.User.Create().SetExternalID(string(rune('a' + i))).SetCreditsBalance(int64(i)).SaveX(ctx)
			ids[i] = u.ID
		}
		at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		err := database.UpdateRows(user.Table, ids[:3]).
			SetEach(user.FieldCreditsBalance, "BIGINT", map[string]any{ids[0]: int64(100), ids[1]: int64(-7)}).
			AddEach(user.FieldTransactionCount, "BIGINT", map[string]any{ids[1]: int64(2), ids[2]: int64(5)}).
			Set(user.FieldUpdatedAt, at).
			Exec(ctx, db, db.SQL)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []int64{100, -7, 2, 3} {
			u := db.Ent.User.GetX(ctx, ids[i])
			if u.CreditsBalance != want {
				t.Errorf("row %d: balance %d, want %d", i, u.CreditsBalance, want)
			}
			if added := []int64{0, 2, 5, 0}[i]; u.TransactionCount != added {
				t.Errorf("row %d: transaction count %d, want %d", i, u.TransactionCount, added)
			}
			if touched := u.UpdatedAt.Equal(at); touched != (i < 3) {
				t.Errorf("row %d: updated_at %v", i, u.UpdatedAt)
			}
		}
		err = database.UpdateRows(user.Table, []string{ids[0], "usr_missing"}).Set(user.FieldCreditsBalance, 5).Exec(ctx, db, db.SQL)
		if err == nil || !strings.Contains(err.Error(), "1 of 2 rows") {
			t.Fatalf("an id that names no row: %v", err)
		}
	})
}
