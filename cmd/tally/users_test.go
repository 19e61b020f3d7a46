package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestUsersShow prints a user's account for support: balances, lots, open
// reservations and recent transactions; an unknown user exits 1 with one
// line and bad flags exit 2.
func TestUsersShow(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		id := newUser(t, db, "alice")
		l := ledger.New(db)
		admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "usr_support"}
		expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
		if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: id, Amount: 100, ExpiresAt: &expires, Reason: "welcome", IdempotencyKey: "g1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Spend(ctx, admin, ledger.SpendRequest{UserID: id, Amount: 30, Reason: "report\nlot_fake remaining 999", IdempotencyKey: "s1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Reserve(ctx, admin, ledger.ReserveRequest{UserID: id, Amount: 20, TTLSeconds: new(int64(3600)), Reason: "job 7", IdempotencyKey: "r1"}); err != nil {
			t.Fatal(err)
		}
		env := []string{"DATABASE_URL=" + db.URL}
		dir := t.TempDir()

		out, stderr, code := run(t, dir, env, "users", "show", "alice")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{
			"user " + id, `external id "alice"`, "status ACTIVE",
			"balance 70  available 50  reserved 20  held 0",
			"lots (1, in spend order):", "GRANT  remaining 70 of 100  held 0  priority 0  expires " + expires.Format(time.RFC3339),
			"open reservations (1):", `20  expires`, `reason "job 7"`,
			"last transactions (3, newest first):", "SPEND", "-30", `reason "report\nlot_fake remaining 999"`, "GRANT", "+100", "HOLD",
		} {
			if !strings.Contains(out, want) {
				t.Fatalf("no %q in:\n%s", want, out)
			}
		}
		if strings.Count(out, "\n") != 13 {
			t.Fatalf("a reason broke the listing's lines:\n%s", out)
		}

		out, _, code = run(t, dir, env, "users", "show", "alice", "--last", "1")
		if code != 0 || !strings.Contains(out, "last transactions (1, newest first):") {
			t.Fatalf("--last 1: exit %d\n%s", code, out)
		}

		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"users", "show", "nobody"}, 1, `no user with external id "nobody"`},
			{[]string{"users", "show", "alice", "--last", "0"}, 2, "--last"},
			{[]string{"users", "show", "alice", "--last", "101"}, 2, "--last"},
			{[]string{"users", "show"}, 2, "accepts 1 arg"}, // a usage error, as the README says
		} {
			out, stderr, code := run(t, dir, env, c.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != c.code || out != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("%v: exit %d (want %d), stdout %q, stderr %q", c.args, code, c.code, out, stderr)
			}
		}
	})
}
