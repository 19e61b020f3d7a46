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

func TestTmpStatements(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != "postgres" {
			return
		}
		var mu sync.Mutex
		var statements []string
		a, _ := loggingAPI(t, db, func(s string) { mu.Lock(); statements = append(statements, s); mu.Unlock() })
		admin, svc := token(t, "root", auth.RoleAdmin), token(t, "backend", auth.RoleService)
		show := func(name string) {
			mu.Lock()
			defer mu.Unlock()
			var b strings.Builder
			for _, s := range statements {
				if len(s) > 160 {
					s = s[:160]
				}
				b.WriteString(s + "\n")
			}
			t.Logf("%s: %d\n%s", name, len(statements), b.String())
			statements = nil
		}
		for i := range 2 {
			a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 100, "reason": "seed", "idempotencyKey": fmt.Sprint("seed", i),
			}})
			show("grant")
		}
		for i := range 2 {
			out := a.ok(svc, `mutation R($input: ReserveCreditsInput!) { reserveCredits(input: $input) { replayed reservation { id } } }`, map[string]any{"input": map[string]any{
				"externalUserId": "alice", "amount": 1, "idempotencyKey": fmt.Sprint("r", i),
			}})
			show("reserve")
			id := out.get(t, "reserveCredits", "reservation", "id")
			a.ok(svc, `mutation C($input: CaptureReservationInput!) { captureReservation(input: $input) { replayed transaction { id } } }`, map[string]any{"input": map[string]any{
				"reservationId": id, "idempotencyKey": fmt.Sprint("c", i),
			}})
			show("capture")
		}
	})
}
