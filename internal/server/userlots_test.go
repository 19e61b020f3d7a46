package server_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestUserLotsAreReadByTheirOwner: a page of the viewer's lots or
// reservations is a plain range of the (user_id, id) index. ent's edge
// queries add DISTINCT, for which PostgreSQL read and de-duplicated every
// lot of the user to give ten (30 ms for a user with 90,000 lots, 0.1 ms
// without).
func TestUserLotsAreReadByTheirOwner(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		var mu sync.Mutex
		var statements []string
		a, _ := loggingAPI(t, db, func(s string) { mu.Lock(); statements = append(statements, s); mu.Unlock() })
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		for i := range 3 {
			a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 5, "reason": "seed", "idempotencyKey": fmt.Sprint("lots-", i),
			}})
		}
		mu.Lock()
		statements = nil
		mu.Unlock()
		r := a.ok(alice, `{ viewer { lots(first: 2) { edges { node { remaining } } } reservations(first: 2) { edges { node { id } } } } }`, nil)
		if n := len(r.get(t, "viewer", "lots", "edges").([]any)); n != 2 {
			t.Fatalf("%d lots: %s", n, r.Data)
		}
		mu.Lock()
		defer mu.Unlock()
		var read int
		for _, s := range statements {
			for _, table := range []string{"credit_lots", "credit_reservations"} {
				if !strings.Contains(s, "FROM \""+table+"\"") && !strings.Contains(s, "FROM `"+table+"`") {
					continue
				}
				read++
				if strings.Contains(s, "DISTINCT") {
					t.Errorf("%s read with DISTINCT:\n%s", table, s)
				}
			}
		}
		if read != 2 {
			t.Fatalf("%d statements read lots or reservations, want 2:\n%s", read, strings.Join(statements, "\n"))
		}
	})
}
