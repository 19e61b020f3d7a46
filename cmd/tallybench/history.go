package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/ledger"
)

// historyPage is the page size of W3's history reads.
const historyPage = 50

const historyExternalID = "bench-w3-history"

// depthCursor is where a page at one depth starts, as the API and as the
// raw keyset query see it, and which transaction it must start with.
type depthCursor struct {
	depth     int
	apiCursor string // the API's endCursor after depth rows ("" at depth 0)
	// The keyset position (created_at, id) of row depth-1, newest first.
	rawAt   time.Time
	rawID   string
	firstID string // the transaction at position depth
}

// seedHistory gives W3's history user n spends through the ledger, in
// process (one user's writes are serialized, so this takes a while; the
// time is logged), and finds the cursors of the depths asked for.
func (e *env) seedHistory(ctx context.Context, n int, depths []int) error {
	started := time.Now()
	u, err := e.db.Ent.User.Create().SetExternalID(historyExternalID).Save(ctx)
	if err != nil {
		return fmt.Errorf("creating the history user: %w", err)
	}
	e.historyUserID = u.ID
	if _, err := e.ledger.Grant(ctx, seedActor, ledger.GrantRequest{
		UserID: u.ID, Amount: seedBalance, IdempotencyKey: "seed-" + historyExternalID,
	}); err != nil {
		return fmt.Errorf("granting the history user's credits: %w", err)
	}
	for i := range n {
		if _, err := e.ledger.Spend(ctx, seedActor, ledger.SpendRequest{
			UserID: u.ID, Amount: 1, IdempotencyKey: "hist-" + strconv.Itoa(i),
		}); err != nil {
			return fmt.Errorf("seeding the history user's spend %d: %w", i, err)
		}
	}
	e.seeded(fmt.Sprintf("%d spends of %s (ledger, one at a time)", n, historyExternalID), started)
	if e.historyToken, err = auth.Mint([]byte(benchSecret), auth.MintClaims{Subject: historyExternalID}, 24*time.Hour); err != nil {
		return err
	}
	e.depths, err = e.findDepths(ctx, depths)
	return err
}

// findDepths pages through the history over the API (the only way to get
// the cursor the server itself hands out) and reads the same positions
// from the database in the order the server uses, created_at then id, both
// newest first.
func (e *env) findDepths(ctx context.Context, depths []int) ([]depthCursor, error) {
	depths = slices.Sorted(slices.Values(depths))
	var out []depthCursor
	pos, cursor := 0, ""
	for _, d := range depths {
		for pos < d {
			k := min(ledger.MaxPageSize, d-pos)
			p, err := e.api.page(ctx, e.historyToken, k, cursor)
			if err != nil {
				return nil, fmt.Errorf("paging to depth %d: %w", d, err)
			}
			if len(p.ids) != k {
				return nil, fmt.Errorf("paging to depth %d: a page of %d rows, want %d", d, len(p.ids), k)
			}
			cursor, pos = p.endCursor, pos+k
		}
		dc := depthCursor{depth: d, apiCursor: cursor}
		if d > 0 {
			var at time.Time
			if err := e.db.SQL.QueryRowContext(ctx,
				`SELECT created_at, id FROM credit_transactions WHERE user_id = $1
				  ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $2`, e.historyUserID, d-1).Scan(&at, &dc.rawID); err != nil {
				return nil, fmt.Errorf("reading the row before depth %d: %w", d, err)
			}
			dc.rawAt = at.UTC()
		}
		if err := e.db.SQL.QueryRowContext(ctx,
			`SELECT id FROM credit_transactions WHERE user_id = $1
			  ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $2`, e.historyUserID, d).Scan(&dc.firstID); err != nil {
			return nil, fmt.Errorf("reading the row at depth %d: %w", d, err)
		}
		// The API's own page at this cursor must start where the database
		// says, or the two workloads would not read the same rows.
		p, err := e.api.page(ctx, e.historyToken, historyPage, cursor)
		if err != nil {
			return nil, fmt.Errorf("reading the page at depth %d: %w", d, err)
		}
		if len(p.ids) != historyPage || p.ids[0] != dc.firstID {
			return nil, fmt.Errorf("the API's page at depth %d has %d rows from %s; the database's starts at %s",
				d, len(p.ids), first(p.ids), dc.firstID)
		}
		out = append(out, dc)
	}
	return out, nil
}
