package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

// readLog records every query ent sends and how many rows each returned.
type readLog struct {
	mu    sync.Mutex
	reads []*read
}

type read struct {
	query string
	rows  int
}

func (l *readLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads = nil
}

// of is the queries that name table, and the rows they returned.
func (l *readLog) of(table string) (queries []string, rows int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.reads {
		if strings.Contains(r.query, table) {
			queries = append(queries, r.query)
			rows += r.rows
		}
	}
	return queries, rows
}

type readLogDriver struct {
	dialect.Driver
	log *readLog
}

func (d readLogDriver) Query(ctx context.Context, query string, args, v any) error {
	if err := d.Driver.Query(ctx, query, args, v); err != nil {
		return err
	}
	r := &read{query: query}
	d.log.mu.Lock()
	d.log.reads = append(d.log.reads, r)
	d.log.mu.Unlock()
	if rows, ok := v.(*entsql.Rows); ok {
		rows.ColumnScanner = countedRows{ColumnScanner: rows.ColumnScanner, log: d.log, read: r}
	}
	return nil
}

type countedRows struct {
	entsql.ColumnScanner
	log  *readLog
	read *read
}

func (c countedRows) Next() bool {
	if !c.ColumnScanner.Next() {
		return false
	}
	c.log.mu.Lock()
	c.read.rows++
	c.log.mu.Unlock()
	return true
}

// seedItems gives each of n users ("<prefix>-<i>") lots grants (a lot
// each) and reservations reservations.
func seedItems(t *testing.T, db *database.DB, prefix string, n, lots, reservations int) []*ent.User {
	t.Helper()
	ctx := context.Background()
	l := ledger.New(db)
	root := ledger.Actor{Kind: ledger.ActorAdmin, ID: "root"}
	backend := ledger.Actor{Kind: ledger.ActorService, ID: "backend"}
	var out []*ent.User
	for i := range n {
		u := db.Ent.User.Create().SetExternalID(fmt.Sprintf("%s-%d", prefix, i)).SaveX(ctx)
		for j := range lots {
			if _, err := l.Grant(ctx, root, ledger.GrantRequest{UserID: u.ID, Amount: 10, Reason: "seed", IdempotencyKey: fmt.Sprint(u.ID, "-g-", j)}); err != nil {
				t.Fatal(err)
			}
		}
		for j := range reservations {
			if _, err := l.Reserve(ctx, backend, ledger.ReserveRequest{UserID: u.ID, Amount: 1, IdempotencyKey: fmt.Sprint(u.ID, "-r-", j)}); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, u)
	}
	return out
}

// TestUserListPagesAreBoundedFirst: in a list of users, each user's page of
// lots or reservations is checked before anything is read, and without
// first reads the default page (and the row that says there is a next
// one). entgql loaded these edges for the whole list while collecting its
// fields: every lot of every user without first, and first: 100000 read
// before the field refused it.
func TestUserListPagesAreBoundedFirst(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		const users, items = 3, graph.DefaultPageSize + 5
		seedItems(t, db, "bounded", users, items, items)
		log := &readLog{}
		a := driverAPI(t, db, nil, func(d dialect.Driver) dialect.Driver { return readLogDriver{Driver: d, log: log} })
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, `{ viewer { id } }`, nil)
		for _, q := range []string{
			// Past the complexity limit, refused before any resolver.
			`{ users(first: 50) { edges { node { lots(first: 100000) { edges { node { id } } } } } } }`,
			// Within it: refused by each user's field, before its read.
			`{ users(first: 10) { edges { node { lots(first: 100000) { edges { node { id } } } } } } }`,
			`{ users(first: 10) { edges { node { lots(first: 101) { totalCount } } } } }`,
			`{ users(first: 10) { edges { node { reservations(first: 100000) { edges { node { id } } } } } } }`,
		} {
			log.reset()
			a.refused(admin, q, nil, "INVALID_ARGUMENT")
			for _, table := range []string{"credit_lots", "credit_reservations"} {
				if read, _ := log.of(table); len(read) > 0 {
					t.Errorf("%s was refused after reading %s:\n%s", q, table, strings.Join(read, "\n"))
				}
			}
		}

		log.reset()
		r := a.ok(admin, `{ users(first: 10, where: {externalIDHasPrefix: "bounded-"}) { edges { node {
			lots { pageInfo { hasNextPage } edges { node { id } } }
			reservations { pageInfo { hasNextPage } edges { node { id } } } } } } }`, nil)
		edges := r.get(t, "users", "edges").([]any)
		if len(edges) != users {
			t.Fatalf("%d users, want %d", len(edges), users)
		}
		for i := range users {
			for _, field := range []string{"lots", "reservations"} {
				page := r.get(t, "users", "edges", fmt.Sprint(i), "node", field)
				if n := len(page.(map[string]any)["edges"].([]any)); n != graph.DefaultPageSize ||
					r.get(t, "users", "edges", fmt.Sprint(i), "node", field, "pageInfo", "hasNextPage") != true {
					t.Errorf("user %d: %d %s and %v, want the default page of %d and a next one", i, n, field, page, graph.DefaultPageSize)
				}
			}
		}
		for _, table := range []string{"credit_lots", "credit_reservations"} {
			read, rows := log.of(table)
			if len(read) != 1 || rows > users*(graph.DefaultPageSize+1) {
				t.Errorf("%s: %d statements returned %d rows for %d users of %d; want one, of at most %d rows:\n%s",
					table, len(read), rows, users, items, users*(graph.DefaultPageSize+1), strings.Join(read, "\n"))
			}
		}
	})
}

// TestUserListPagesAreEachUsers: a page of a user's lots or reservations
// in a list of users (read for all of them at once) is the page the user's
// own field gives (user(id:), read for them alone), in every order, with
// its cursors, pageInfo and totalCount, and so are pages of no edges.
func TestUserListPagesAreEachUsers(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		seeded := seedOrderedItems(t, db)
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		const page = `totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } }`
		selections := []string{
			`lots(first: 0, orderBy: $lo) { totalCount pageInfo { hasNextPage } } reservations(first: 0, orderBy: $ro) { totalCount pageInfo { hasNextPage } }`,
			`lots(orderBy: $lo) { pageInfo { hasNextPage } } reservations(orderBy: $ro) { pageInfo { hasNextPage endCursor } }`,
		}
		// Pages that end inside a run of ties and just before one.
		for first := 1; first <= 5; first++ {
			selections = append(selections, fmt.Sprintf(`lots(first: %d, orderBy: $lo) { %s } reservations(first: %d, orderBy: $ro) { %s }`, first, page, first, page))
		}
		orders := []map[string]any{
			{},
			{"lo": map[string]any{"field": "CREATED_AT", "direction": "DESC"}, "ro": map[string]any{"field": "STATUS", "direction": "ASC"}},
			{"lo": map[string]any{"field": "EXPIRES_AT", "direction": "ASC"}, "ro": map[string]any{"field": "EXPIRES_AT", "direction": "DESC"}},
			{"lo": map[string]any{"field": "EXPIRES_AT", "direction": "DESC"}, "ro": map[string]any{"field": "STATUS", "direction": "DESC"}},
			{"lo": map[string]any{"field": "ID", "direction": "DESC"}, "ro": map[string]any{"field": "CREATED_AT", "direction": "ASC"}},
		}
		for _, sel := range selections {
			for _, vars := range orders {
				list := a.ok(admin, `query($lo: CreditLotOrder, $ro: CreditReservationOrder) {
					users(first: 10, where: {externalIDHasPrefix: "ordered-"}) { edges { node { id `+sel+` } } } }`, vars)
				var data struct {
					Users struct {
						Edges []struct {
							Node map[string]json.RawMessage `json:"node"`
						} `json:"edges"`
					} `json:"users"`
				}
				if err := json.Unmarshal(list.Data, &data); err != nil {
					t.Fatal(err)
				}
				if len(data.Users.Edges) != len(seeded) {
					t.Fatalf("%d users in the list, want %d", len(data.Users.Edges), len(seeded))
				}
				for _, e := range data.Users.Edges {
					var id string
					if err := json.Unmarshal(e.Node["id"], &id); err != nil {
						t.Fatal(err)
					}
					withID := map[string]any{"id": id}
					for k, v := range vars {
						withID[k] = v
					}
					own := a.ok(admin, `query($id: ID!, $lo: CreditLotOrder, $ro: CreditReservationOrder) {
						user(id: $id) { id `+sel+` } }`, withID)
					var mine struct {
						User map[string]json.RawMessage `json:"user"`
					}
					if err := json.Unmarshal(own.Data, &mine); err != nil {
						t.Fatal(err)
					}
					for _, field := range []string{"lots", "reservations"} {
						if string(e.Node[field]) != string(mine.User[field]) {
							t.Errorf("%s of %s with %v, %s:\nin the list %s\nits own     %s", field, id, vars, sel, e.Node[field], mine.User[field])
						}
					}
				}
			}
		}
		if n := db.Ent.CreditLot.Query().CountX(ctx); n == 0 {
			t.Fatal("no lots were seeded")
		}
	})
}

// seedOrderedItems writes users whose lots and reservations tie on the
// fields they can be ordered by (expiries shared or absent, statuses
// repeated), so that only the order's tie-break on id tells them apart;
// and a user with none.
func seedOrderedItems(t *testing.T, db *database.DB) []*ent.User {
	t.Helper()
	ctx := context.Background()
	l := ledger.New(db)
	root := ledger.Actor{Kind: ledger.ActorAdmin, ID: "root"}
	backend := ledger.Actor{Kind: ledger.ActorService, ID: "backend"}
	soon, later := time.Now().Add(time.Hour).Truncate(time.Second), time.Now().Add(2*time.Hour).Truncate(time.Second)
	expiries := []*time.Time{nil, &soon, &later, &soon, nil, &soon, &later}
	ttls := []int64{60, 120, 60, 600, 120, 60}
	var out []*ent.User
	for i := range 4 {
		u := db.Ent.User.Create().SetExternalID(fmt.Sprint("ordered-", i)).SaveX(ctx)
		out = append(out, u)
		if i == 0 {
			continue
		}
		for j, exp := range expiries[:len(expiries)-i+1] {
			if _, err := l.Grant(ctx, root, ledger.GrantRequest{UserID: u.ID, Amount: 100, ExpiresAt: exp, Reason: "seed", IdempotencyKey: fmt.Sprint(u.ID, "-g-", j)}); err != nil {
				t.Fatal(err)
			}
		}
		for j, ttl := range ttls {
			res, err := l.Reserve(ctx, backend, ledger.ReserveRequest{UserID: u.ID, Amount: 2, TTLSeconds: &ttl, IdempotencyKey: fmt.Sprint(u.ID, "-r-", j)})
			if err != nil {
				t.Fatal(err)
			}
			switch j % 3 {
			case 1:
				_, err = l.ReleaseReservation(ctx, backend, ledger.ReleaseRequest{UserID: u.ID, ReservationID: res.Reservation.ID, IdempotencyKey: fmt.Sprint(u.ID, "-rel-", j)})
			case 2:
				_, err = l.Capture(ctx, backend, ledger.CaptureRequest{UserID: u.ID, ReservationID: res.Reservation.ID, IdempotencyKey: fmt.Sprint(u.ID, "-cap-", j)})
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}
