package main

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/ledger"
)

// accountSet is a group of accounts one workload spends from, tracked
// across runs so that every run can be checked against exactly what it
// reported: each account's SPEND transactions must number its successful
// spends, and its balance must be the seed minus those.
type accountSet struct {
	// name prefixes the users' external ids (and the spends' idempotency
	// keys), so that the checks can find the set's users by it.
	name     string
	ids      []string
	external []string
	seed     int64
	spent    []atomic.Int64
	// lotless marks a set a baseline spends from: the raw spends do not
	// draw from lots (they are the bare minimum of a spend), so these
	// users' lots keep holding the seed.
	lotless bool
}

func (s *accountSet) totalSpent() int64 {
	var n int64
	for i := range s.spent {
		n += s.spent[i].Load()
	}
	return n
}

// seedWorkers is how many seeding transactions run at once. On PostgreSQL
// they overlap; on SQLite the write lock serializes them anyway.
const seedWorkers = 8

// seedBatch is how many grants one seeding transaction makes.
const seedBatch = 100

// seedAccounts creates n users named after the set and grants each the
// same credits through the ledger, in process, so that their lots and
// postings are exactly what Tally writes.
func (e *env) seedAccounts(ctx context.Context, name string, n int, credits int64, lotless bool) (*accountSet, error) {
	started := time.Now()
	s := &accountSet{name: name, seed: credits, lotless: lotless,
		spent: make([]atomic.Int64, n)}
	var err error
	if s.ids, s.external, err = e.createUsers(ctx, name, n); err != nil {
		return nil, err
	}
	// Credits: one ledger grant each, as an admin's would be, but
	// seedBatch of them per database transaction (the ledger's operations
	// compose in one Tx): a commit per grant made seeding take 20 s on
	// SQLite, whose every commit waits for the disk.
	batches := (n + seedBatch - 1) / seedBatch
	if err := parallel(ctx, batches, seedWorkers, func(ctx context.Context, b int) error {
		return e.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
			for i := b * seedBatch; i < min(n, (b+1)*seedBatch); i++ {
				if _, err := t.Grant(ctx, seedActor, ledger.GrantRequest{
					UserID: s.ids[i], Amount: credits, IdempotencyKey: "seed-" + s.external[i],
				}); err != nil {
					return fmt.Errorf("granting credits to %s: %w", s.external[i], err)
				}
			}
			return nil
		})
	}); err != nil {
		return nil, err
	}
	if err := e.enableAutoRecharge(ctx, s.ids); err != nil {
		return nil, err
	}
	if err := e.crossAtFirstSpend(ctx, s.ids, credits); err != nil {
		return nil, err
	}
	if n > 1 {
		e.seeded(fmt.Sprintf("%d accounts %s* (ledger grants, %d per transaction)", n, name, seedBatch), started)
	}
	e.sets = append(e.sets, s)
	if lotless {
		for _, id := range s.ids {
			e.lotless[id] = true
		}
	}
	return s, nil
}

// createUsers creates n users with external ids name00000, name00001, …
// in bulk (one statement per thousand), without credits.
func (e *env) createUsers(ctx context.Context, name string, n int) (ids, external []string, err error) {
	ids, external = make([]string, n), make([]string, n)
	for i := range n {
		external[i] = fmt.Sprintf("%s%05d", name, i)
	}
	for lo := 0; lo < n; lo += 1000 {
		hi := min(lo+1000, n)
		builders := make([]*ent.UserCreate, 0, hi-lo)
		for i := lo; i < hi; i++ {
			builders = append(builders, e.db.Ent.User.Create().SetExternalID(external[i]))
		}
		users, err := e.db.Ent.User.CreateBulk(builders...).Save(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("creating the users %s*: %w", name, err)
		}
		for j, u := range users {
			ids[lo+j] = u.ID
		}
	}
	return ids, external, nil
}

// seeded logs and records how long seeding something took.
func (e *env) seeded(what string, started time.Time) {
	took := time.Since(started)
	logf("seeded %s in %.1fs", what, took.Seconds())
	e.seeding = append(e.seeding, seedTime{What: what, Seconds: took.Seconds()})
}

// parallel runs fn for 0..n-1 on workers goroutines and returns the first
// error (the others stop taking work).
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// zipfExponent is W2's skew: with s = 1.1 over 10,000 accounts, the
// hottest account takes about a tenth of the spends and the hottest
// hundred about half, a plausible shape for a few very active customers.
const zipfExponent = 1.1

// newChooser returns a picker of account indexes in [0, n): uniform, or
// Zipf-distributed (index 0 the most frequent). Each client gets its own,
// since a rand.Rand is not safe for concurrent use.
func newChooser(dist string, n int, seed int64) func() int {
	r := rand.New(rand.NewSource(seed))
	if n <= 1 {
		return func() int { return 0 }
	}
	if dist == "zipf" {
		z := rand.NewZipf(r, zipfExponent, 1, uint64(n-1))
		return func() int { return int(z.Uint64()) }
	}
	return func() int { return r.Intn(n) }
}

// chooserSeed gives every client of every run its own random sequence.
func chooserSeed(client int) int64 {
	return runSeq.Add(1)*1_000_003 + int64(client)
}
