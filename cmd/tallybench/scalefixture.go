package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"entgo.io/contrib/entgql"

	"github.com/tally-billing/tally/internal/database"
)

// The users `tallybench seed` writes that the --scale mode acts as: the
// admin who made every grant, the user with the long history, and the
// first ordinary user.
const (
	seedAdminExternalID = "admin-000001"
	heavyExternalID     = "heavy-user"
	ordinaryExternalID  = "user-000001"
)

// scaleFixture is what the --scale mode needs to know of a seeded
// database: who to spend from, and where the deep history page starts.
type scaleFixture struct {
	ordinary        string
	throughputUsers []string
	heavyID         string
	heavyTxns       int
	deep            depthCursor
}

// loadScaleFixture reads the seeded users and builds the cursor of the
// deep page from the row before it, as the server encodes its own cursors
// (entgql's: the id and the created_at the history is ordered by), so that
// reaching 500,000 deep costs one query rather than 5,000 pages. The page
// read there is checked to start at the row the database puts at that
// depth, so a cursor the server reads otherwise fails the run.
func loadScaleFixture(ctx context.Context, db *database.DB) (scaleFixture, error) {
	f := scaleFixture{ordinary: ordinaryExternalID}
	var users int
	err := db.SQL.QueryRowContext(ctx, `SELECT
		  (SELECT COUNT(*) FROM users WHERE external_id LIKE 'user-%'),
		  (SELECT id FROM users WHERE external_id = $1)`, heavyExternalID).Scan(&users, &f.heavyID)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (users == 0 || f.heavyID == "")) {
		err = errors.New("no seeded users: seed the database first with `tallybench seed --heavy-user-transactions N`")
	}
	if err != nil {
		// A NULL heavy-user id lands here too, as a scan error.
		return f, fmt.Errorf("reading the seeded users (seed with --heavy-user-transactions): %w", err)
	}
	for i := range min(users, scaleThroughputUsers) {
		f.throughputUsers = append(f.throughputUsers, fmt.Sprintf("user-%06d", 1+i*users/min(users, scaleThroughputUsers)))
	}
	if err := db.SQL.QueryRowContext(ctx, `SELECT COUNT(*) FROM credit_transactions WHERE user_id = $1`, f.heavyID).Scan(&f.heavyTxns); err != nil {
		return f, fmt.Errorf("counting %s's transactions: %w", heavyExternalID, err)
	}
	depth := min(scaleDeepest, f.heavyTxns/2)
	if depth < 1 || f.heavyTxns < depth+historyPage+1 {
		return f, fmt.Errorf("%s has %d transactions: too few for a deep page of %d", heavyExternalID, f.heavyTxns, historyPage)
	}
	f.deep = depthCursor{depth: depth}
	var at time.Time
	var id string
	if err := db.SQL.QueryRowContext(ctx, `SELECT created_at, id FROM credit_transactions WHERE user_id = $1
		ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1`, f.heavyID, depth-1).Scan(&at, &id); err != nil {
		return f, fmt.Errorf("reading the row before depth %d: %w", depth, err)
	}
	if err := db.SQL.QueryRowContext(ctx, `SELECT id FROM credit_transactions WHERE user_id = $1
		ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1`, f.heavyID, depth).Scan(&f.deep.firstID); err != nil {
		return f, fmt.Errorf("reading the row at depth %d: %w", depth, err)
	}
	var b bytes.Buffer
	entgql.Cursor[string]{ID: id, Value: at}.MarshalGQL(&b)
	f.deep.apiCursor = string(bytes.Trim(b.Bytes(), `"`))
	return f, nil
}
