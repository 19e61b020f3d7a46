package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
)

// codesOfInput are the codes an input of the caller's may earn; INTERNAL is
// never one of them.
var codesOfInput = map[string]bool{
	"GRAPHQL_VALIDATION_FAILED": true, "GRAPHQL_PARSE_FAILED": true, "INVALID_ARGUMENT": true,
	"INSUFFICIENT_CREDITS": true, "IDEMPOTENCY_KEY_REUSED": true, "CONFLICT": true,
	"FORBIDDEN": true, "NOT_FOUND": true, "ACCOUNT_FROZEN": true,
}

// FuzzSpendVariables posts spendCredits with fuzzed variables, as a user,
// to a real server on SQLite: whatever the JSON, the answer is a 200 with
// data or an error of the caller's (never INTERNAL, never a 5xx), a 400 for
// a body that is not JSON, or a 413; what a spend accepted and stored holds
// to the documented bounds; and the ledger's invariants hold throughout.
//
//	go test -run '^$' -fuzz FuzzSpendVariables -fuzztime 60s ./internal/server
func FuzzSpendVariables(f *testing.F) {
	for _, seed := range []string{
		`{"amount": 1, "idempotencyKey": "a"}`,
		`{"amount": "5", "idempotencyKey": "b"}`,                     // digits for an Int
		`{"amount": 1, "reason": "a\u0000b", "idempotencyKey": "c"}`, // NUL
		`{"amount": 1, "metadata": [{"key": "k", "value": "\u0007"}], "idempotencyKey": "d"}`,
		`{"amount": 1e30, "idempotencyKey": "e"}`,             // past int64
		`{"amount": 9007199254740992, "idempotencyKey": "f"}`, // past 2^53-1
		`{"amount": -1, "idempotencyKey": "g"}`,
		`{"amount": 1, "externalUserId": " alice", "idempotencyKey": "h"}`, // another account?
		`{"amount": 1, "userId": "usr_\u0000", "idempotencyKey": "i"}`,
		`{"amount": 1, "idempotencyKey": "j\u00e9"}`, // non-ASCII key
		`{"amount": 1, "idempotencyKey": "k", "unknown": true}`,
		`{"amount": 1, "metadata": {"key": "k", "value": "v"}, "idempotencyKey": "l"}`, // one entry for a list
		`{"amount": 1.5, "idempotencyKey": "m"}`,
		`[]`, `null`, `"x"`, `{`,
	} {
		f.Add([]byte(seed))
	}
	db := testdb.New(f, testdb.SQLite)
	env := map[string]string{"TALLY_JWT_SECRET": testSecret, "DATABASE_URL": db.URL, "TALLY_RATE_LIMIT": "0"}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		f.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, db, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	f.Cleanup(func() { ts.Close(); srv.Close() })
	alice := token(f, "alice", auth.RoleUser)
	admin := token(f, "root", auth.RoleAdmin)
	post := func(t testing.TB, tok string, body []byte) (int, result) {
		status, raw := postGraphQL(t, ts.URL, tok, body)
		var r result
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatalf("status %d, body %q: %v", status, raw, err)
		}
		return status, r
	}
	grant, _ := json.Marshal(map[string]any{"query": grantMutation, "variables": map[string]any{"input": map[string]any{
		"externalUserId": "alice", "amount": ledger.MaxAmount / 2, "reason": "fuzz", "idempotencyKey": "fuzz-seed"}}})
	if status, r := post(f, admin, grant); status != 200 || len(r.Errors) > 0 {
		f.Fatalf("seeding: %d %+v", status, r.Errors)
	}

	f.Fuzz(func(t *testing.T, input []byte) {
		body := []byte(`{"query":` + mustJSON(spendMutation) + `,"variables":{"input":` + string(input) + `}}`)
		status, r := post(t, alice, body)
		switch {
		case status == 400 || status == 413:
			if len(r.Errors) == 0 || r.Data != nil {
				t.Fatalf("status %d without errors, or with data: %+v", status, r)
			}
		case status != 200:
			t.Fatalf("status %d for input %q: %+v", status, input, r.Errors)
		case len(r.Errors) > 0:
			for _, e := range r.Errors {
				if code, _ := e.Extensions["code"].(string); !codesOfInput[code] {
					t.Fatalf("input %q earned %s: %s", input, code, e.Message)
				}
			}
		default:
			var d struct {
				SpendCredits struct {
					Transaction struct {
						Amount   int64
						Metadata []struct{ Key, Value string }
					}
				}
			}
			if err := json.Unmarshal(r.Data, &d); err != nil {
				t.Fatal(err)
			}
			if md := d.SpendCredits.Transaction.Metadata; len(md) > ledger.MaxMetadataKeys {
				t.Fatalf("a spend stored %d metadata entries", len(md))
			}
			for _, e := range d.SpendCredits.Transaction.Metadata {
				if len(e.Key) > ledger.MaxMetadataKeyLen || len(e.Value) > ledger.MaxMetadataValueLen ||
					strings.ContainsFunc(e.Key, unicode.IsControl) || strings.ContainsRune(e.Value, 0) {
					t.Fatalf("a spend stored metadata %q=%q", e.Key, e.Value)
				}
			}
		}
		rep, err := srv.Ledger().Check(context.Background())
		if err != nil || !rep.OK() {
			t.Fatalf("after input %q the ledger reports %+v, %v", input, rep.Problems, err)
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
