package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestRefusalsNameTheField: a request the domain refuses (each request type
// validates itself; resolvers check nothing) says which field of the input
// was wrong in extensions.field, and changes nothing (refused checks every
// money table).
func TestRefusalsNameTheField(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{"externalUserId": "alice", "amount": 100, "reason": "seed", "idempotencyKey": "seed"}})
		r := a.ok(alice, `mutation { reserveCredits(input: {amount: 10, idempotencyKey: "held"}) { reservation { id } } }`, nil)
		reservation := r.get(t, "reserveCredits", "reservation", "id").(string)

		n := 0
		input := func(base map[string]any, fields map[string]any) map[string]any {
			n++
			in := map[string]any{"idempotencyKey": fmt.Sprint("field-", n)}
			for k, v := range base {
				in[k] = v
			}
			for k, v := range fields {
				in[k] = v
			}
			return map[string]any{"input": in}
		}
		spend := map[string]any{"amount": 1}
		reserve := map[string]any{"amount": 1}
		capture := map[string]any{"reservationId": reservation}
		grant := map[string]any{"externalUserId": "alice", "amount": 1, "reason": "r"}
		manyKeys := make([]map[string]any, 51)
		for i := range manyKeys {
			manyKeys[i] = map[string]any{"key": fmt.Sprint("k", i), "value": "v"}
		}
		const (
			spendM   = `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { replayed } }`
			reserveM = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { replayed } }`
			captureM = `mutation($input: CaptureReservationInput!) { captureReservation(input: $input) { replayed } }`
			releaseM = `mutation($input: ReleaseReservationInput!) { releaseReservation(input: $input) { replayed } }`
			grantM   = `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }`
			revokeM  = `mutation($input: RevokeCreditsInput!) { revokeCredits(input: $input) { replayed } }`
		)
		for _, c := range []struct {
			name, tok, query string
			vars             map[string]any
			field            string
		}{
			{"a spend of nothing", alice, spendM, input(spend, map[string]any{"amount": 0}), "input.amount"},
			{"a negative spend", alice, spendM, input(spend, map[string]any{"amount": -5}), "input.amount"},
			{"a long reason", alice, spendM, input(spend, map[string]any{"reason": strings.Repeat("r", 1001)}), "input.reason"},
			{"51 metadata keys", alice, spendM, input(spend, map[string]any{"metadata": manyKeys}), "input.metadata"},
			{"duplicate metadata keys", alice, spendM, input(spend, map[string]any{"metadata": []map[string]any{{"key": "k", "value": "1"}, {"key": "k", "value": "2"}}}), "input.metadata"},
			{"a long key", alice, spendM, input(spend, map[string]any{"idempotencyKey": strings.Repeat("k", 256)}), "input.idempotencyKey"},
			{"a reservation of no time", alice, reserveM, input(reserve, map[string]any{"ttlSeconds": 0}), "input.ttlSeconds"},
			{"a reservation of a negative time", alice, reserveM, input(reserve, map[string]any{"ttlSeconds": -1}), "input.ttlSeconds"},
			{"a reservation past a day", alice, reserveM, input(reserve, map[string]any{"ttlSeconds": 86401}), "input.ttlSeconds"},
			{"a reservation of nothing", alice, reserveM, input(reserve, map[string]any{"amount": 0}), "input.amount"},
			{"a capture of nothing", alice, captureM, input(capture, map[string]any{"amount": 0}), "input.amount"},
			{"a capture past the reservation", alice, captureM, input(capture, map[string]any{"amount": 11}), "input.amount"},
			{"a release with a long reason", alice, releaseM, input(capture, map[string]any{"reason": strings.Repeat("r", 1001)}), "input.reason"},
			{"a grant that expired", admin, grantM, input(grant, map[string]any{"expiresAt": time.Now().Add(-time.Hour).Format(time.RFC3339)}), "input.expiresAt"},
			{"a grant with a long reason", admin, grantM, input(grant, map[string]any{"reason": strings.Repeat("r", 1001)}), "input.reason"},
			{"a revocation of nothing", admin, revokeM, input(grant, map[string]any{"amount": 0}), "input.amount"},
		} {
			r := a.refused(c.tok, c.query, c.vars, "INVALID_ARGUMENT")
			if got := r.Errors[0].Extensions["field"]; got != c.field {
				t.Errorf("%s: extensions.field %v, want %s (%s)", c.name, got, c.field, r.Errors[0].Message)
			}
		}
		// The same fields within their bounds are accepted.
		a.ok(alice, reserveM, input(reserve, map[string]any{"ttlSeconds": 86400}))
		a.ok(alice, captureM, input(capture, map[string]any{"amount": 10}))
	})
}
