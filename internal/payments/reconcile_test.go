package payments_test

import (
	"context"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/stripemock"
	"github.com/tally-billing/tally/internal/testdb"
)

// TestReconcile runs against stripe-mock, which lists one event Tally has
// never seen: reconcile reports it, --apply processes it through the
// webhook's path, and a second reconcile finds nothing left.
func TestReconcile(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		l := ledger.New(db)
		svc := payments.New(db, l, payments.Config{SecretKey: "sk_test_123", APIBase: stripemock.Start(t)})

		r, err := svc.Reconcile(ctx, payments.ReconcileOptions{Since: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Ledger.OK() || !r.StripeChecked || r.EventsChecked == 0 || len(r.Unprocessed) != r.EventsChecked || r.Repaired != 0 {
			t.Fatalf("report without --apply: %+v", r)
		}
		if n := db.Ent.ProcessedEvent.Query().CountX(ctx); n != 0 {
			t.Fatalf("reconcile without --apply wrote %d events", n)
		}

		r, err = svc.Reconcile(ctx, payments.ReconcileOptions{Since: 24 * time.Hour, Apply: true})
		if err != nil || r.Repaired != len(r.Unprocessed) || len(r.Failures) != 0 {
			t.Fatalf("--apply: %+v %v", r, err)
		}
		recorded := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(r.Unprocessed[0])).OnlyX(ctx)
		if recorded.Outcome != processedevent.OutcomeIgnored {
			t.Fatalf("the repaired event was recorded as %s", recorded.Outcome)
		}

		r, err = svc.Reconcile(ctx, payments.ReconcileOptions{Since: 24 * time.Hour, Apply: true})
		if err != nil || len(r.Unprocessed) != 0 || r.Repaired != 0 {
			t.Fatalf("a second --apply: %+v %v", r, err)
		}

		// Without a Stripe key only the ledger is checked.
		offline := payments.New(db, l, payments.Config{})
		if r, err := offline.Reconcile(ctx, payments.ReconcileOptions{Since: time.Hour}); err != nil || r.StripeChecked || !r.Ledger.OK() {
			t.Fatalf("offline: %+v %v", r, err)
		}
	})
}
