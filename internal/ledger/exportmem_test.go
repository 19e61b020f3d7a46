package ledger_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// heapWatch is the export's output: it discards the bytes and, every 16
// writes (the CSV writer writes 4 KiB at a time: about every 500 rows),
// collects garbage and samples the live heap: what the export holds, not
// the garbage the collector has yet to reclaim.
type heapWatch struct {
	writes int
	peak   uint64
	ms     runtime.MemStats
}

func (w *heapWatch) Write(p []byte) (int, error) {
	if w.writes++; w.writes%16 == 0 {
		runtime.GC()
		runtime.ReadMemStats(&w.ms)
		w.peak = max(w.peak, w.ms.HeapAlloc)
	}
	return len(p), nil
}

type exportCost struct {
	rows          int
	mallocsPerRow float64
	bytesPerRow   float64
	// peakLiveMiB is the most the live heap grew during the export.
	peakLiveMiB float64
}

func measureExport(t *testing.T, l *ledger.Service, f ledger.ExportFilter) exportCost {
	t.Helper()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w := &heapWatch{peak: before.HeapAlloc}
	rows := 0
	count := ledger.ExportFilter{Since: f.Since, Until: f.Until, UserID: f.UserID}
	if err := l.WriteExport(context.Background(), w, ledger.FormatCSV, count, ledger.DefaultExportBatch); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// Rows are counted apart, so that counting allocates nothing in the
	// measured run.
	if err := l.ExportTransactions(context.Background(), f, ledger.DefaultExportBatch, func(*ledger.ExportRow) error { rows++; return nil }); err != nil {
		t.Fatal(err)
	}
	return exportCost{
		rows:          rows,
		mallocsPerRow: float64(after.Mallocs-before.Mallocs) / float64(rows),
		bytesPerRow:   float64(after.TotalAlloc-before.TotalAlloc) / float64(rows),
		peakLiveMiB:   float64(max(w.peak, before.HeapAlloc)-before.HeapAlloc) / (1 << 20),
	}
}

// oneDatabaseAtATime serializes the databases' runs of
// TestExportMemoryIsConstant: the allocation counts are the process's, and
// testdb.Each runs the databases in parallel, so one run's writes would be
// counted in the other's export.
var oneDatabaseAtATime sync.Mutex

// TestExportMemoryIsConstant exports 1,000 and then 10,000 transactions of
// one user: the allocations per row stay the same and the heap does not
// grow with the number of rows (the export holds one batch at a time).
func TestExportMemoryIsConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 10,000 transactions")
	}
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		oneDatabaseAtATime.Lock()
		defer oneDatabaseAtATime.Unlock()
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("heavy")
		start := e.clock.Now()
		// 10 database transactions of 1,000 ledger transactions, one
		// second apart: [start, start+1s) holds 1,000, [start, start+10s)
		// all 10,000. Each spend empties the lot the grant before it made,
		// so that spends do not read a growing list of lots.
		for chunk := range 10 {
			err := e.l.Within(ctx, func(ctx context.Context, tx *ledger.Tx) error {
				for i := range 1000 {
					key := fmt.Sprintf("k-%d-%d", chunk, i)
					var err error
					if i%2 == 1 {
						_, err = tx.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 2, Reason: "usage", IdempotencyKey: key})
					} else {
						_, err = tx.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 2, Reason: "top-up", IdempotencyKey: key})
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
			e.clock.Advance(time.Second)
		}
		// A first run warms up what every export pays once (the pool's
		// connection, prepared statements), which is not per row.
		measureExport(t, e.l, ledger.ExportFilter{Since: start, Until: start.Add(time.Second), UserID: u.ID})
		small := measureExport(t, e.l, ledger.ExportFilter{Since: start, Until: start.Add(time.Second), UserID: u.ID})
		large := measureExport(t, e.l, ledger.ExportFilter{Since: start, Until: start.Add(10 * time.Second), UserID: u.ID})
		t.Logf("1,000 rows: %.1f allocations and %.0f bytes a row, live heap at most +%.2f MiB", small.mallocsPerRow, small.bytesPerRow, small.peakLiveMiB)
		t.Logf("10,000 rows: %.1f allocations and %.0f bytes a row, live heap at most +%.2f MiB", large.mallocsPerRow, large.bytesPerRow, large.peakLiveMiB)
		if small.rows != 1000 || large.rows != 10000 {
			t.Fatalf("rows: %d and %d", small.rows, large.rows)
		}
		if large.mallocsPerRow > small.mallocsPerRow*1.2 || large.bytesPerRow > small.bytesPerRow*1.2 {
			t.Fatalf("allocations per row grow with the rows: %+v then %+v", small, large)
		}
		// Ten times the rows in ten batches: what the export holds is one
		// batch, whatever the number of rows.
		if large.peakLiveMiB > 2*small.peakLiveMiB+0.5 {
			t.Fatalf("the peak heap grows with the rows: %+v then %+v", small, large)
		}
	})
}
