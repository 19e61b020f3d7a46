package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

func TestKeysAreChecked(t *testing.T) {
	for _, key := range []string{"", strings.Repeat("k", idempotency.MaxKeyLength+1), "tab\there", "nul\x00", "é", "\xff"} {
		if _, err := idempotency.NewRequest("user:u", key, "op", nil); apperr.CodeOf(err) != apperr.InvalidArgument {
			t.Errorf("key %q: %v, want INVALID_ARGUMENT", key, err)
		}
	}
	if _, err := idempotency.NewRequest("user:u", strings.Repeat("k", idempotency.MaxKeyLength), "op", nil); err != nil {
		t.Errorf("a key of the largest size: %v", err)
	}
}

// Fingerprints are stored, and a retry may come years later from a client
// that sent its request to an older version: the fingerprint of a request
// must never change. This value is what the ledger stored before this
// package existed (SHA-256 of {"Op":…,"Req":…} as JSON).
func TestFingerprintIsStable(t *testing.T) {
	body := struct {
		UserID string
		Amount int64
	}{"usr_1", 5}
	r, err := idempotency.NewRequest("service:app", "k1", "spend", body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "5a125edc145bd0b5276822b9191370f7878eea206ee9db0103ac46d77b5d659e"; r.Fingerprint != want {
		t.Fatalf("fingerprint %s, want %s", r.Fingerprint, want)
	}
	other, _ := idempotency.NewRequest("service:app", "k1", "grant", body)
	changed, _ := idempotency.NewRequest("service:app", "k1", "spend", struct {
		UserID string
		Amount int64
	}{"usr_1", 6})
	again, _ := idempotency.NewRequest("admin:root", "k2", "spend", body)
	if r.Fingerprint == other.Fingerprint || r.Fingerprint == changed.Fingerprint {
		t.Fatal("another operation or another request has the same fingerprint")
	}
	if r.Fingerprint != again.Fingerprint {
		t.Fatal("the fingerprint depends on the key or its scope")
	}
}

type record struct {
	UserID string `json:"user_id"`
}

func TestStoreFindReplay(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		keys := db.Ent.IdempotencyKey
		r, _ := idempotency.NewRequest("user:a", "k", "op", 1)
		var got record
		if found, err := idempotency.Find(ctx, db.Ent, r, &got); found || err != nil {
			t.Fatalf("a new key: found %v, %v", found, err)
		}
		if err := idempotency.Store(ctx, keys, time.Now(), idempotency.Entry{Request: r, Result: record{UserID: "usr_1"}}); err != nil {
			t.Fatal(err)
		}
		if found, err := idempotency.Find(ctx, db.Ent, r, &got); !found || err != nil || got.UserID != "usr_1" {
			t.Fatalf("the stored key: found %v, %+v, %v", found, got, err)
		}
		other, _ := idempotency.NewRequest("user:a", "k", "op", 2)
		if _, err := idempotency.Find(ctx, db.Ent, other, &got); apperr.CodeOf(err) != apperr.IdempotencyKeyReused {
			t.Fatalf("the key with another request: %v, want IDEMPOTENCY_KEY_REUSED", err)
		}
		elsewhere, _ := idempotency.NewRequest("user:b", "k", "op", 2)
		if found, err := idempotency.Find(ctx, db.Ent, elsewhere, &got); found || err != nil {
			t.Fatalf("the key in another scope: found %v, %v", found, err)
		}
		err := idempotency.Store(ctx, keys, time.Now(), idempotency.Entry{Request: other, Result: record{}})
		if !errors.Is(err, idempotency.ErrTaken) {
			t.Fatalf("storing a recorded key again: %v, want ErrTaken", err)
		}
		many, err := idempotency.FindMany(ctx, db.Ent, []idempotency.Request{r, elsewhere, r})
		if err != nil || len(many) != 1 {
			t.Fatalf("FindMany: %v, %v", many, err)
		}
		if err := idempotency.Forget(ctx, keys, r.Key); err != nil {
			t.Fatal(err)
		}
		if found, err := idempotency.Find(ctx, db.Ent, r, &got); found || err != nil {
			t.Fatalf("a forgotten key: found %v, %v", found, err)
		}
	})
}

// TestConcurrentRequestsWithOneKeyTakeEffectOnce: many requests with one
// key at once, each in a transaction that looks the key up, makes its
// effect (a row) and stores the key. Exactly one effect commits; every
// other request loses the insert of the key, is run again by the
// transaction runner, and replays the winner's result.
func TestConcurrentRequestsWithOneKeyTakeEffectOnce(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		const n = 16
		l := ledger.New(db)
		r, _ := idempotency.NewRequest("user:a", "race", "make_user", "x")
		results := make([]record, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = l.Within(context.Background(), func(ctx context.Context, tx *ledger.Tx) error {
					keys := tx.Ent().IdempotencyKey
					if found, err := idempotency.Find(ctx, tx.Ent().Client(), r, &results[i]); found || err != nil {
						return err
					}
					u, err := tx.Ent().User.Create().SetExternalID(fmt.Sprintf("effect-%d", i)).Save(ctx)
					if err != nil {
						return err
					}
					results[i] = record{UserID: u.ID}
					return idempotency.Store(ctx, keys, tx.Now(), idempotency.Entry{Request: r, Result: results[i]})
				})
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		effects := db.Ent.User.Query().Where(user.ExternalIDHasPrefix("effect-")).AllX(context.Background())
		if len(effects) != 1 {
			t.Fatalf("%d effects committed, want 1", len(effects))
		}
		for i, res := range results {
			if res.UserID != effects[0].ID {
				t.Errorf("request %d answered %q, the effect is %s", i, res.UserID, effects[0].ID)
			}
		}
	})
}
