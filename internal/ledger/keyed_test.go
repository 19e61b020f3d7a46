package ledger_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/idempotency"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestStoredFingerprintsKeepTheirShape pins the fingerprints of keys as
// earlier versions stored them: the JSON of {"Op", "Req"} with the request
// in the shape it had then (a reservation's TTL in nanoseconds, a whole
// capture as amount 0). A change here makes every stored key of that
// operation answer IDEMPOTENCY_KEY_REUSED to a retry.
func TestStoredFingerprintsKeepTheirShape(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		r, err := e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: 10, IdempotencyKey: "r-shape"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r.Reservation.ID, IdempotencyKey: "c-shape"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 3, Reason: "x", IdempotencyKey: "s-shape"}); err != nil {
			t.Fatal(err)
		}
		for key, body := range map[string]string{
			"r-shape": fmt.Sprintf(`{"Op":"reserve","Req":{"UserID":%q,"Amount":10,"TTL":900000000000,"Reason":"","IdempotencyKey":"r-shape"}}`, u.ID),
			"c-shape": fmt.Sprintf(`{"Op":"capture","Req":{"UserID":%q,"ReservationID":%q,"Amount":0,"Reason":"","IdempotencyKey":"c-shape"}}`, u.ID, r.Reservation.ID),
			"s-shape": fmt.Sprintf(`{"Op":"spend","Req":{"UserID":%q,"Amount":3,"Reason":"x","Metadata":null,"IdempotencyKey":"s-shape"}}`, u.ID),
		} {
			sum := sha256.Sum256([]byte(body))
			// Wherever the key is stored (a record, or its transaction).
			k := idempotency.Key{Scope: service.String(), Key: key}
			recs, err := idempotency.FindMany(ctx, db.Ent, []idempotency.Request{{Key: k}})
			if err != nil {
				t.Fatal(err)
			}
			if rec, want := recs[k], hex.EncodeToString(sum[:]); rec.Fingerprint != want {
				t.Errorf("key %s: fingerprint %s, want that of %s", key, rec.Fingerprint, body)
			}
		}
	})
}
