package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// wait bounds every wait for something asynchronous; nothing in these tests
// depends on how long delivery takes, only that it happens.
const wait = 10 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newBroker(t testing.TB, db *database.DB) Broker {
	t.Helper()
	b, err := New(context.Background(), db, testLogger(t))
	if err != nil {
		t.Fatalf("starting the broker: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing the broker: %v", err)
		}
	})
	return b
}

func subscribe(t testing.TB, b Broker, ctx context.Context, userID string) <-chan BalanceChanged {
	t.Helper()
	ch, err := b.Subscribe(ctx, userID)
	if err != nil {
		t.Fatalf("subscribing to %s: %v", userID, err)
	}
	return ch
}

func publish(t testing.TB, b Broker, ev BalanceChanged) {
	t.Helper()
	if err := b.Publish(context.Background(), ev); err != nil {
		t.Fatalf("publishing %+v: %v", ev, err)
	}
}

func receive(t testing.TB, ch <-chan BalanceChanged) BalanceChanged {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the subscription ended instead of delivering an event")
		}
		return ev
	case <-time.After(wait):
		t.Fatalf("no event within %s", wait)
	}
	return BalanceChanged{}
}

func waitClosed(t testing.TB, ch <-chan BalanceChanged) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the subscription was not closed within %s", wait)
		}
	}
}

func event(userID string, balance int64) BalanceChanged {
	return BalanceChanged{
		UserID:        userID,
		Balance:       balance,
		TransactionID: fmt.Sprintf("txn_%s_%d", userID, balance),
		At:            time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.UTC),
	}
}

func sameEvent(a, b BalanceChanged) bool {
	return a.UserID == b.UserID && a.Balance == b.Balance && a.TransactionID == b.TransactionID && a.At.Equal(b.At)
}

func TestSubscriberReceivesPublishedEvent(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b := newBroker(t, db)
		first := subscribe(t, b, t.Context(), "usr_alice")
		second := subscribe(t, b, t.Context(), "usr_alice")
		want := BalanceChanged{UserID: "usr_alice", Balance: -42, TransactionID: "txn_01", At: time.Now()}
		publish(t, b, want)
		for _, ch := range []<-chan BalanceChanged{first, second} {
			if got := receive(t, ch); !sameEvent(got, want) {
				t.Errorf("received %+v, want %+v", got, want)
			}
		}
	})
}

// An event for one user reaches no one else: the other user's subscriber
// sees its own later event first.
func TestOtherUsersReceiveNothing(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b := newBroker(t, db)
		alice := subscribe(t, b, t.Context(), "usr_alice")
		bob := subscribe(t, b, t.Context(), "usr_bob")
		publish(t, b, event("usr_alice", 10))
		publish(t, b, event("usr_bob", 20))
		if got := receive(t, bob); got.UserID != "usr_bob" || got.Balance != 20 {
			t.Errorf("bob received %+v first, want his own event", got)
		}
		if got := receive(t, alice); got.UserID != "usr_alice" || got.Balance != 10 {
			t.Errorf("alice received %+v, want her own event", got)
		}
	})
}

func TestPublishRefusesInvalidEvents(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b := newBroker(t, db)
		if err := b.Publish(t.Context(), BalanceChanged{Balance: 1}); err == nil {
			t.Error("an event without a user id was published")
		}
		if _, err := b.Subscribe(t.Context(), ""); err == nil {
			t.Error("a subscription without a user id was accepted")
		}
	})
}

func TestCancelledSubscriptionIsClosed(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b := newBroker(t, db)
		ctx, cancel := context.WithCancel(t.Context())
		gone := subscribe(t, b, ctx, "usr_alice")
		staying := subscribe(t, b, t.Context(), "usr_alice")
		cancel()
		waitClosed(t, gone)

		publish(t, b, event("usr_alice", 5))
		if got := receive(t, staying); got.Balance != 5 {
			t.Errorf("the remaining subscriber received %+v, want balance 5", got)
		}
		if _, err := b.Subscribe(ctx, "usr_alice"); !errors.Is(err, context.Canceled) {
			t.Errorf("subscribing with an ended context: %v, want context.Canceled", err)
		}
	})
}

// Not parallel, and one database at a time: the goroutine count is the
// whole process's.
func TestCancelledSubscriptionsLeaveNoGoroutines(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			b := newBroker(t, testdb.NewEmpty(t, kind))
			// Warm up, so that connections opened on first use are counted
			// in the baseline.
			publish(t, b, event("usr_warm", 1))
			receive(t, subscribeAndPublish(t, b, "usr_warm"))
			baseline := runtime.NumGoroutine()

			const n = 200
			cancels := make([]context.CancelFunc, n)
			chans := make([]<-chan BalanceChanged, n)
			for i := range n {
				ctx, cancel := context.WithCancel(context.Background())
				cancels[i], chans[i] = cancel, subscribe(t, b, ctx, fmt.Sprintf("usr_%d", i%7))
			}
			for _, cancel := range cancels {
				cancel()
			}
			for _, ch := range chans {
				waitClosed(t, ch)
			}
			deadline := time.Now().Add(wait)
			for runtime.NumGoroutine() > baseline {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines remain after every subscription ended, %d before they began",
						runtime.NumGoroutine(), baseline)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func subscribeAndPublish(t testing.TB, b Broker, userID string) <-chan BalanceChanged {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch := subscribe(t, b, ctx, userID)
	publish(t, b, event(userID, 2))
	return ch
}

// A subscriber that reads nothing neither holds up publishers nor misses
// the latest balance.
func TestSlowSubscriberKeepsLatestBalance(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b := newBroker(t, db)
		slow := subscribe(t, b, t.Context(), "usr_alice")
		const n = 10 * bufferSize
		done := make(chan error, 1)
		go func() {
			for i := 1; i <= n; i++ {
				if err := b.Publish(context.Background(), event("usr_alice", int64(i))); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("publishing: %v", err)
			}
		case <-time.After(wait):
			t.Fatalf("%d publishes to a subscriber that reads nothing did not finish within %s", n, wait)
		}

		var got []int64
		for len(got) == 0 || got[len(got)-1] != n {
			ev := receive(t, slow)
			if len(got) > 0 && ev.Balance <= got[len(got)-1] {
				t.Fatalf("balance %d arrived after %d", ev.Balance, got[len(got)-1])
			}
			got = append(got, ev.Balance)
		}
		if db.Dialect == "sqlite3" && len(got) != bufferSize {
			// In process, delivery is done when Publish returns: exactly the
			// newest bufferSize events are left.
			t.Errorf("received %d events, want the last %d", len(got), bufferSize)
		}
	})
}

func TestCloseEndsEverySubscription(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b, err := New(t.Context(), db, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		chans := []<-chan BalanceChanged{
			subscribe(t, b, t.Context(), "usr_alice"),
			subscribe(t, b, t.Context(), "usr_alice"),
			subscribe(t, b, t.Context(), "usr_bob"),
		}
		if err := b.Close(); err != nil {
			t.Fatalf("closing: %v", err)
		}
		for _, ch := range chans {
			waitClosed(t, ch)
		}
		if err := b.Publish(t.Context(), event("usr_alice", 1)); !errors.Is(err, ErrClosed) {
			t.Errorf("publishing after Close: %v, want ErrClosed", err)
		}
		if _, err := b.Subscribe(t.Context(), "usr_alice"); !errors.Is(err, ErrClosed) {
			t.Errorf("subscribing after Close: %v, want ErrClosed", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("closing twice: %v", err)
		}
	})
}

// Many publishers and subscribers at once, for the race detector.
func TestConcurrentPublishersAndSubscribers(t *testing.T) {
	testdb.EachEmpty(t, func(t *testing.T, db *database.DB) {
		b := newBroker(t, db)
		const users, rounds = 4, 25
		var wg sync.WaitGroup
		for u := range users {
			userID := fmt.Sprintf("usr_%d", u)
			ch := subscribe(t, b, t.Context(), userID)
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i := 1; i <= rounds; i++ {
					if err := b.Publish(context.Background(), event(userID, int64(i))); err != nil {
						t.Errorf("publishing: %v", err)
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				deadline := time.After(wait)
				for {
					select {
					case ev := <-ch:
						if ev.UserID != userID {
							t.Errorf("%s received an event of %s", userID, ev.UserID)
						}
						if ev.Balance == rounds {
							return
						}
					case <-deadline:
						t.Errorf("%s did not receive its last event within %s", userID, wait)
						return
					}
				}
			}()
			// Subscriptions coming and going beside the others.
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					ctx, cancel := context.WithCancel(context.Background())
					if _, err := b.Subscribe(ctx, userID); err != nil {
						t.Errorf("subscribing: %v", err)
					}
					cancel()
				}
			}()
		}
		wg.Wait()
	})
}

func TestChannelNames(t *testing.T) {
	if got := channelFor(""); got != Channel {
		t.Errorf("no search_path: channel %q, want %q", got, Channel)
	}
	if got := channelFor("tally_test_0a1b2c3d4e5f"); got != Channel+"_tally_test_0a1b2c3d4e5f" {
		t.Errorf("a plain schema: channel %q", got)
	}
	awkward := []string{`"$user", public`, "Tally", "a,b", "a_b", strings.Repeat("s", 60)}
	seen := map[string]string{Channel: ""}
	for _, sp := range awkward {
		got := channelFor(sp)
		if len(got) > maxIdentifier || !plainIdentifier(got) {
			t.Errorf("search_path %q: channel %q is not a short plain identifier", sp, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("search_paths %q and %q share channel %q", sp, other, got)
		}
		seen[got] = sp
		if again := channelFor(sp); again != got {
			t.Errorf("search_path %q: channel %q, then %q", sp, got, again)
		}
	}
}
