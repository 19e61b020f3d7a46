package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// fixtureStart is when the fixtures' history begins.
var fixtureStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fill gives the user n transactions through the ledger, 250 to a database
// transaction (so they share a timestamp, one second apart from the next
// 250: ties the export's keyset must break by id): grants of 3, and every
// third a spend of 1.
func fill(t *testing.T, db *database.DB, userID string, n int) {
	t.Helper()
	ctx := context.Background()
	now := fixtureStart
	l := ledger.New(db, ledger.WithClock(func() time.Time { return now }))
	actor := ledger.Actor{Kind: ledger.ActorAdmin, ID: "usr_fixture"}
	for done := 0; done < n; now = now.Add(time.Second) {
		chunk := min(250, n-done)
		err := l.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
			for i := done; i < done+chunk; i++ {
				key := fmt.Sprintf("%s-%d", userID, i)
				var err error
				if i%3 == 2 {
					_, err = tx.Spend(ctx, actor, ledger.SpendRequest{UserID: userID, Amount: 1, Reason: "=cmd|calc", IdempotencyKey: key})
				} else {
					_, err = tx.Grant(ctx, actor, ledger.GrantRequest{UserID: userID, Amount: 3, Reason: "fixture", IdempotencyKey: key})
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		done += chunk
	}
}

func newUser(t *testing.T, db *database.DB, externalID string) string {
	t.Helper()
	u, err := db.Ent.User.Create().SetExternalID(externalID).Save(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

func postingSum(t *testing.T, db *database.DB, userID string) int64 {
	t.Helper()
	var sum int64
	if err := db.SQL.QueryRow(db.Rebind(`SELECT COALESCE(SUM(amount), 0) FROM credit_ledgers WHERE user_id = ?`), userID).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestExportTransactions runs `tally export transactions` against a real
// database whose history spans many batches: the CSV parses, has every
// transaction once in (time, id) order, and its balance changes add up to
// the ledger's postings; JSON Lines agree; periods are half-open; bad
// flags exit 2 and an unknown user 1, with one line.
func TestExportTransactions(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		alice, bob := newUser(t, db, "alice"), newUser(t, db, "bob")
		fill(t, db, alice, 1050)
		fill(t, db, bob, 200)
		env := []string{"DATABASE_URL=" + db.URL}
		dir := t.TempDir()

		out, stderr, code := run(t, dir, env, "export", "transactions", "--since", "2025-12-31", "--batch-size", "100")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		records, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil {
			t.Fatalf("the CSV does not parse: %v", err)
		}
		if !slices.Equal(records[0], ledger.ExportColumns) {
			t.Fatalf("header %v", records[0])
		}
		col := map[string]int{}
		for i, name := range records[0] {
			col[name] = i
		}
		rows := records[1:]
		if len(rows) != 1250 {
			t.Fatalf("%d rows; want 1250", len(rows))
		}
		sums := map[string]int64{}
		seen := map[string]bool{}
		prev := ""
		for _, r := range rows {
			change, err := strconv.ParseInt(r[col["balance_change"]], 10, 64)
			if err != nil {
				t.Fatalf("balance_change %q: %v", r[col["balance_change"]], err)
			}
			sums[r[col["external_user_id"]]] += change
			id := r[col["transaction_id"]]
			at, err := time.Parse(time.RFC3339Nano, r[col["created_at"]])
			if err != nil {
				t.Fatal(err)
			}
			key := at.Format("20060102150405.000000000") + id
			if seen[id] || key <= prev {
				t.Fatalf("transaction %s repeated or out of order", id)
			}
			seen[id], prev = true, key
			if r[col["kind"]] == "SPEND" && r[col["reason"]] != "'=cmd|calc" {
				t.Fatalf("a formula-like reason was not neutralized: %q", r[col["reason"]])
			}
		}
		if sums["alice"] != postingSum(t, db, alice) || sums["bob"] != postingSum(t, db, bob) || sums["alice"] != 1750 {
			t.Fatalf("CSV sums %v; postings alice %d, bob %d", sums, postingSum(t, db, alice), postingSum(t, db, bob))
		}

		out, stderr, code = run(t, dir, env, "export", "transactions", "--since", "2026-01-01T00:00:00Z", "--user", "bob", "--format", "jsonl", "--batch-size", "7")
		if code != 0 {
			t.Fatalf("jsonl: exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		var bobSum int64
		for _, line := range lines {
			var row struct {
				ExternalUserID string `json:"external_user_id"`
				BalanceChange  int64  `json:"balance_change"`
			}
			if err := json.Unmarshal([]byte(line), &row); err != nil || row.ExternalUserID != "bob" {
				t.Fatalf("line %q: %v", line, err)
			}
			bobSum += row.BalanceChange
		}
		if len(lines) != 200 || bobSum != postingSum(t, db, bob) {
			t.Fatalf("jsonl: %d lines summing to %d", len(lines), bobSum)
		}

		// Half-open: [start+1s, start+2s) is exactly alice's second chunk
		// of 250 (bob has 200, all stamped at the start).
		out, _, code = run(t, dir, env, "export", "transactions", "--since", "2026-01-01T00:00:01Z", "--until", "2026-01-01T00:00:02Z")
		if n := strings.Count(out, "\n") - 1; code != 0 || n != 250 {
			t.Fatalf("one second: exit %d, %d rows", code, n)
		}

		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"--since", "2026-01-01", "--user", "nobody"}, 1, `no user with external id "nobody"`},
			{[]string{"--since", "yesterday"}, 2, "--since"},
			{[]string{}, 2, "--since is required"},
			{[]string{"--since", "2026-01-02", "--until", "2026-01-01"}, 2, "before --until"},
			{[]string{"--since", "2026-01-01", "--format", "xml"}, 2, "--format"},
			{[]string{"--since", "2026-01-01", "--batch-size", "0"}, 2, "--batch-size"},
			{[]string{"--since", "2026-01-01", "--batch-size", "10001"}, 2, "--batch-size"},
			{[]string{"--since", "2026-01-01", "--batch-size", "99999999999999999999"}, 2, "batch-size"},
		} {
			out, stderr, code := run(t, dir, env, append([]string{"export", "transactions"}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != c.code || out != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("%v: exit %d (want %d), stdout %q, stderr %q", c.args, code, c.code, out, stderr)
			}
		}
	})
}
