package users_test

import (
	"context"
	"sync"
	"testing"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/users"
)

// TestFirstRequestsProvisionOnce: many first requests of one new user at
// once create exactly one account, and every one of them gets it.
func TestFirstRequestsProvisionOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		svc := users.New(db.Ent)
		ctx := auth.WithCaller(context.Background(), auth.Caller{Subject: "alice", Role: auth.RoleUser, Email: "a@example.com"})
		var wg sync.WaitGroup
		ids := make(chan string, 20)
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u, err := svc.Viewer(ctx)
				if err != nil {
					t.Errorf("viewer: %v", err)
					return
				}
				ids <- u.ID
			}()
		}
		wg.Wait()
		close(ids)
		seen := map[string]bool{}
		for id := range ids {
			seen[id] = true
		}
		if n := db.Ent.User.Query().CountX(context.Background()); n != 1 || len(seen) != 1 {
			t.Fatalf("%d users, %d distinct ids handed out", n, len(seen))
		}
	})
}
