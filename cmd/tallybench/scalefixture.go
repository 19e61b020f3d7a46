package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"entgo.io/contrib/entgql"

	"github.com/tally-billing/tally/internal/database"
)

// The users `tallybench seed` writes that the --scale mode acts as: the
// admin who made every grant and the user with the long history.
const (
	seedAdminExternalID = "admin-000001"
	heavyExternalID     = "heavy-user"
)

// scaleFixture is what the --scale mode needs to know of a seeded
// database: who to spend from and grant to, and where the deep history
// page starts.
type scaleFixture struct {
	// ordinary spends and reserves, granted is granted to; the
	// throughput users spend at 32 clients. All are ordinary users (the
	// seeder gives each as many transactions on a small database as on a
	// large one), drawn afresh every run: a spend's cost grows with what
	// its user did before (a user left with 336 unspent lots and 1,392
	// reservations by earlier runs spent in 25 ms at p50, a fresh one in
	// 9), so reusing users would make one database's rows slower for a
	// reason that is not its size.
	ordinary, granted string
	throughputUsers   []string
	heavyID           string
	heavyTxns         int
	deep              depthCursor
}

// loadScaleFixture reads the seeded users and builds the cursor of the
// deep page from the row before it, as the server encodes its own cursors
// (entgql's: the id and the created_at the history is ordered by), so that
// reaching 500,000 deep costs one query rather than 5,000 pages. The page
// read there is checked to start at the row the database puts at that
// depth, so a cursor the server reads otherwise fails the run.
func loadScaleFixture(ctx context.Context, db *database.DB) (scaleFixture, error) {
	var f scaleFixture
	var users int
	err := db.SQL.QueryRowContext(ctx, `SELECT
		  (SELECT COUNT(*) FROM users WHERE external_id LIKE 'user-%'),
		  (SELECT id FROM users WHERE external_id = $1)`, heavyExternalID).Scan(&users, &f.heavyID)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (users < 3 || f.heavyID == "")) {
		err = errors.New("too few seeded users: seed the database first with `tallybench seed --users 3 --heavy-user-transactions N` or more")
	}
	if err != nil {
		// A NULL heavy-user id lands here too, as a scan error.
		return f, fmt.Errorf("reading the seeded users (seed with --heavy-user-transactions): %w", err)
	}
	user := func(i int) string { return fmt.Sprintf("user-%06d", 1+i%users) }
	offset := rand.IntN(users)
	f.ordinary, f.granted = user(offset), user(offset+1)
	for i := range min(users-2, scaleThroughputUsers) {
		f.throughputUsers = append(f.throughputUsers, user(offset+2+i*(users-2)/min(users-2, scaleThroughputUsers)))
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
