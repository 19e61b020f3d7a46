package main

import (
	"strings"
	"testing"
	"time"
)

// TestSeedUserRows checks one generated history without a database: the
// postings of each transaction balance, the user's postings add up to the
// balance on the user row and their balance_after runs along, and each
// lot's remaining is what its postings leave.
func TestSeedUserRows(t *testing.T) {
	end := time.Now().Truncate(time.Microsecond)
	u := seedUser{externalID: "user-000001", seed: 7, txns: 2000, created: end.Add(-24 * time.Hour), end: end}
	b := &copyBatch{}
	if err := u.emit(b, "usr_admin"); err != nil {
		t.Fatal(err)
	}
	// Each transaction holds its key (and fingerprint); a HOLD, which has
	// no posting to give its result back, has a record as well.
	holds := 0
	for _, r := range b.rows[tTransactions] {
		if fp, ok := r[7].([]byte); !ok || len(fp) != 32 || r[6] == "" {
			t.Fatalf("transaction %v: key %v, fingerprint %v", r[0], r[6], r[7])
		}
		if r[2] == "HOLD" {
			holds++
		}
	}
	if b.err != nil || b.txns != 2000 || len(b.rows[tTransactions]) != 2000 || len(b.rows[tKeys]) != holds || holds == 0 {
		t.Fatalf("err %v, %d transactions, %d rows, %d keys, %d holds", b.err, b.txns, len(b.rows[tTransactions]), len(b.rows[tKeys]), holds)
	}
	byTxn := map[string]int64{}
	byLot := map[string]int64{}
	lastID := map[string]string{}
	var balance int64
	var last time.Time
	for _, p := range b.rows[tPostings] {
		txn, amount := p[6].(string), p[3].(int64)
		byTxn[txn] += amount
		if p[7] == nil {
			continue
		}
		// The ledger reads a replayed balance from the transaction's user
		// posting with the greatest id: ids must follow the running balance.
		if id := p[0].(string); id <= lastID[txn] {
			t.Fatalf("posting %s of %s after %s", id, txn, lastID[txn])
		}
		lastID[txn] = p[0].(string)
		balance += amount
		if p[4].(int64) != balance {
			t.Fatalf("posting %v: balance_after %d, running %d", p[0], p[4], balance)
		}
		if at := p[1].(time.Time); at.Before(last) {
			t.Fatalf("posting %v at %s, before %s", p[0], at, last)
		}
		last = p[1].(time.Time)
		byLot[p[5].(string)] += amount
	}
	for txn, sum := range byTxn {
		if sum != 0 {
			t.Errorf("transaction %s: postings sum to %d", txn, sum)
		}
	}
	if user := b.rows[tUsers][0]; user[5].(int64) != balance || balance < 0 {
		t.Errorf("user balance %v, postings %d", user[5], balance)
	}
	for _, lot := range b.rows[tLots] {
		if lot[5].(int64) != byLot[lot[0].(string)] {
			t.Errorf("lot %v: remaining %v, postings %d", lot[0], lot[5], byLot[lot[0].(string)])
		}
	}
	if len(b.rows[tAdminActions]) != len(b.rows[tLots]) {
		t.Errorf("%d audit rows for %d grants", len(b.rows[tAdminActions]), len(b.rows[tLots]))
	}
}

func TestParseSeedFlags(t *testing.T) {
	o, err := parseSeedFlags([]string{"--database-url", "postgres://x/y", "--users", "3", "--transactions", "10", "--heavy-user-transactions", "5"})
	if err != nil || o.users != 3 || o.txns != 10 || o.heavy != 5 {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, args := range [][]string{{"--users", "0"}, {"--transactions", "-1"}, {"extra"}} {
		args = append([]string{"--database-url", "postgres://x/y"}, args...)
		if _, err := parseSeedFlags(args); err == nil {
			t.Errorf("%s: accepted", strings.Join(args, " "))
		}
	}
}
