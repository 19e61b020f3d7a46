package users_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
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

// TestConcurrentLookupsShareQueries: lookups that arrive while every query
// slot is taken wait and then share queries, each caller still getting its
// own user (and its own copy of it), an unknown user still being created
// once, and a user already being read waiting for a query of its own.
func TestConcurrentLookupsShareQueries(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		svc := users.New(db.Ent)
		gate, sizes := make(chan struct{}), make(chan int, 100)
		users.GateReads(svc, gate, sizes)
		for i := range 5 {
			db.Ent.User.Create().SetExternalID(fmt.Sprint("u", i)).SetEmail(fmt.Sprintf("u%d@example.com", i)).SaveX(ctx)
		}

		type answer struct {
			sub  string
			user *ent.User
			err  error
		}
		answers := make(chan answer, 100)
		view := func(sub string) {
			caller := auth.WithCaller(ctx, auth.Caller{Subject: sub, Role: auth.RoleUser})
			u, err := svc.Viewer(caller)
			answers <- answer{sub, u, err}
		}
		// Fill every query slot with a lookup of its own.
		for i := range users.ReadsInFlight() {
			go view(fmt.Sprint("u", i))
		}
		for range users.ReadsInFlight() {
			if n := <-sizes; n != 1 {
				t.Fatalf("a lookup that found the batcher idle shared a query with %d others", n-1)
			}
		}
		// These queue: u0 is being read, u4 and the new user ghost are not.
		var subs []string
		for range 10 {
			subs = append(subs, "u0", "u4", "ghost")
		}
		for _, sub := range subs {
			go view(sub)
		}
		testwait.Until(t, "the lookups to queue", func() bool { return users.QueuedReads(svc) == len(subs) })
		close(gate)

		got := map[string][]*ent.User{}
		for range users.ReadsInFlight() + len(subs) {
			a := <-answers
			if a.err != nil {
				t.Fatalf("%s: %v", a.sub, a.err)
			}
			if a.user.ExternalID != a.sub {
				t.Fatalf("%s was answered with %s", a.sub, a.user.ExternalID)
			}
			got[a.sub] = append(got[a.sub], a.user)
		}
		queries, shared := 0, 0
		for len(sizes) > 0 {
			queries++
			shared += <-sizes
		}
		if shared != len(subs) || queries > 2 {
			t.Errorf("the %d queued lookups took %d queries answering %d; want at most 2 queries answering all", len(subs), queries, shared)
		}
		for sub, us := range got {
			for i, u := range us {
				if want := sub + "@example.com"; sub != "ghost" && u.Email != want {
					t.Errorf("%s: email %q, want %q", sub, u.Email, want)
				}
				for _, other := range us[:i] {
					if u == other {
						t.Errorf("%s: two callers were handed the same *ent.User", sub)
					}
				}
			}
		}
		if n := db.Ent.User.Query().Where(user.ExternalID("ghost")).CountX(ctx); n != 1 {
			t.Errorf("ghost was created %d times", n)
		}
		ids := map[string]bool{}
		for _, u := range got["ghost"] {
			ids[u.ID] = true
		}
		if len(ids) != 1 {
			t.Errorf("ghost's callers were handed %d different users", len(ids))
		}
	})
}

// TestBalanceReadsSeeEveryCommittedGrant: while readers keep lookups of one
// user in flight, a balance read made after a grant committed always shows
// the grant. A lookup that joined a query already sent could answer from
// before the grant.
func TestBalanceReadsSeeEveryCommittedGrant(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		svc, l := users.New(db.Ent), ledger.New(db)
		caller := auth.WithCaller(ctx, auth.Caller{Subject: "hot", Role: auth.RoleUser})
		u, err := svc.Viewer(caller)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var readers sync.WaitGroup
		defer func() { close(stop); readers.Wait() }()
		for range 8 {
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := svc.Viewer(caller); err != nil {
						t.Errorf("background read: %v", err)
						return
					}
				}
			}()
		}
		admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "test"}
		for i := 1; i <= 100; i++ {
			if _, err := l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 1, IdempotencyKey: fmt.Sprint("g", i)}); err != nil {
				t.Fatal(err)
			}
			got, err := svc.Viewer(caller)
			if err != nil {
				t.Fatal(err)
			}
			if got.CreditsBalance != int64(i) {
				t.Fatalf("after grant %d the balance read is %d", i, got.CreditsBalance)
			}
		}
	})
}
