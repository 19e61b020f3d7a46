package events

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

func postgresDB(t *testing.T) *database.DB {
	t.Helper()
	if os.Getenv(testdb.EnvPostgres) == "" {
		t.Skipf("%s is not set", testdb.EnvPostgres)
	}
	t.Parallel()
	return testdb.NewEmpty(t, testdb.Postgres)
}

// Two replicas on one database: an event published on either reaches the
// subscribers of both; a deployment in another schema of the same database
// hears nothing of it.
func TestReplicasShareEvents(t *testing.T) {
	db := postgresDB(t)
	one := newBroker(t, db)
	two := newBroker(t, testdb.Open(t, db.URL))
	elsewhere := newBroker(t, testdb.NewEmpty(t, testdb.Postgres))

	onOne := subscribe(t, one, t.Context(), "usr_alice")
	onTwo := subscribe(t, two, t.Context(), "usr_alice")
	onElsewhere := subscribe(t, elsewhere, t.Context(), "usr_alice")

	want := event("usr_alice", 7)
	publish(t, one, want)
	for name, ch := range map[string]<-chan BalanceChanged{"the publishing replica": onOne, "the other replica": onTwo} {
		if got := receive(t, ch); !sameEvent(got, want) {
			t.Errorf("%s received %+v, want %+v", name, got, want)
		}
	}
	publish(t, two, event("usr_alice", 8))
	if got := receive(t, onOne); got.Balance != 8 {
		t.Errorf("an event published on the second replica arrived on the first as %+v", got)
	}

	publish(t, elsewhere, event("usr_alice", 99))
	if got := receive(t, onElsewhere); got.Balance != 99 {
		t.Errorf("the other schema's subscriber received %+v first, want only its own event", got)
	}
}

func TestPublishRefusesOversizedPayload(t *testing.T) {
	b := newBroker(t, postgresDB(t))
	ev := event("usr_alice", 1)
	ev.TransactionID = strings.Repeat("x", maxPayload)
	if err := b.Publish(t.Context(), ev); err == nil {
		t.Error("an event over the NOTIFY limit was published")
	}
}

// The listener's backend is killed from another connection; the broker
// reconnects on its own, keeps its subscriptions, and delivers what is
// published afterwards.
func TestListenerSurvivesTerminatedConnection(t *testing.T) {
	db := postgresDB(t)
	b := newBroker(t, db).(*postgres)
	ch := subscribe(t, b, t.Context(), "usr_alice")

	pid := b.pid.Load()
	if pid == 0 {
		t.Fatal("the broker is not listening after New returned")
	}
	var terminated bool
	if err := db.SQL.QueryRowContext(t.Context(), "SELECT pg_terminate_backend($1)", int64(pid)).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("terminating the listener's backend %d: %v (terminated: %v)", pid, err, terminated)
	}

	deadline := time.Now().Add(wait)
	for now := b.pid.Load(); now == 0 || now == pid; now = b.pid.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the listener did not reconnect within %s", wait)
		}
		time.Sleep(10 * time.Millisecond)
	}

	want := event("usr_alice", 3)
	publish(t, b, want)
	if got := receive(t, ch); !sameEvent(got, want) {
		t.Errorf("after reconnecting, received %+v, want %+v", got, want)
	}
}

func TestNewPostgresOwnsItsPublishPool(t *testing.T) {
	db := postgresDB(t)
	b, err := NewPostgres(t.Context(), db.URL, testLogger(t))
	if err != nil {
		t.Fatalf("starting the broker: %v", err)
	}
	ch := subscribe(t, b, t.Context(), "usr_alice")
	publish(t, b, event("usr_alice", 4))
	if got := receive(t, ch); got.Balance != 4 {
		t.Errorf("received %+v, want balance 4", got)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("closing: %v", err)
	}
	waitClosed(t, ch)
}

func TestNewPostgresFailsOnUnreachableServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	// Port 1 on the loopback refuses at once.
	b, err := NewPostgres(ctx, "postgres://nobody:secret@127.0.0.1:1/tally?sslmode=disable", testLogger(t))
	if err == nil {
		b.Close()
		t.Fatal("a broker started without a server")
	}
	if b != nil {
		t.Errorf("a failed start returned a broker: %#v", b)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("the error shows the password: %v", err)
	}
}

// A transaction's events, published by one statement inside it, arrive in
// order once it commits, and never from a transaction that rolled back.
func TestPublishStatementDeliversAtCommitOnly(t *testing.T) {
	db := postgresDB(t)
	b := newBroker(t, db).(*postgres)
	ch := subscribe(t, b, t.Context(), "usr_alice")
	run := func(balances []int64, commit bool) {
		t.Helper()
		evs := make([]BalanceChanged, len(balances))
		for i, balance := range balances {
			evs[i] = event("usr_alice", balance)
		}
		query, args, err := b.PublishStatement(evs)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := db.SQL.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(query, args...); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	run([]int64{1, 2}, false)
	run([]int64{3, 4, 5}, true)
	for _, want := range []int64{3, 4, 5} {
		if got := receive(t, ch); got.Balance != want {
			t.Fatalf("received balance %d, want %d (1 and 2 were rolled back)", got.Balance, want)
		}
	}
	if _, _, err := b.PublishStatement([]BalanceChanged{{Balance: 1}}); err == nil {
		t.Error("an event without a user got a statement")
	}
}
