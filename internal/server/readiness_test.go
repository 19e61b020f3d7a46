package server_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/internal/testwait"
)

// fastProbe checks readiness often, so that tests see it follow the
// database soon; the state still turns only after the default numbers of
// consecutive results (3 to fail, 2 to recover).
var fastProbe = server.WithReadiness(server.ReadinessOptions{Interval: 10 * time.Millisecond, Timeout: 2 * time.Second})

// waitReadyz waits until /readyz answers status with these checks.
func waitReadyz(t *testing.T, ts *httptest.Server, status int, checks map[string]any) {
	t.Helper()
	var code int
	var body map[string]any
	testwait.Until(t, fmt.Sprintf("readyz %d with %v", status, checks), func() bool {
		code, body = get(t, ts.URL+"/readyz")
		return code == status && reflect.DeepEqual(body["checks"], checks)
	})
	want := "ok"
	if status != 200 {
		want = "unavailable"
	}
	if body["status"] != want {
		t.Fatalf("readyz %d with status %v, want %q", code, body["status"], want)
	}
}

// TestReadyzStaysReadyWhileThePoolIsBusy: with every connection of the
// request pool taken (as under connection exhaustion), the instance is
// still ready: /readyz answers 200 to every request while the probe checks
// the database several times over. It used to ping through the request
// pool and answer 503 once the ping waited too long for a connection.
func TestReadyzStaysReadyWhileThePoolIsBusy(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil, fastProbe)
		ctx := context.Background()
		var held []*sql.Conn
		for range db.SQL.Stats().MaxOpenConnections {
			c, err := db.SQL.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		if st := db.SQL.Stats(); st.InUse != st.MaxOpenConnections {
			t.Fatalf("%d of %d connections in use: the pool is not exhausted", st.InUse, st.MaxOpenConnections)
		}

		from := server.ReadinessChecks(a.srv)
		const failAfter = 3 // ReadinessOptions' default
		requests := 0
		testwait.Until(t, "many readyz requests and probe checks with the pool exhausted", func() bool {
			if code, body := get(t, a.ts.URL+"/readyz"); code != 200 {
				t.Fatalf("readyz with the request pool exhausted, after %d requests answered 200: %d %v", requests, code, body)
			}
			requests++
			return requests >= 50 && server.ReadinessChecks(a.srv) >= from+2*failAfter
		})
	})
}

// TestReadyzFollowsAnUnreachableDatabase: with the database unreachable
// (the fault proxy refusing connections and cutting the probe's), /readyz
// turns 503 with the database "unreachable" after consecutive failed
// checks, and 200 again once it is back. The proxy is PostgreSQL's: a
// SQLite file does not become unreachable (TestProbes covers SQLite's
// migrations check).
func TestReadyzFollowsAnUnreachableDatabase(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != dialect.Postgres {
			t.Skip("a SQLite file cannot become unreachable; the fault proxy speaks PostgreSQL's protocol")
		}
		proxied, proxy := testdb.Proxied(t, db)
		a := newAPI(t, proxied, nil, fastProbe)
		waitReadyz(t, a.ts, 200, map[string]any{"database": "ok", "migrations": "ok"})
		proxy.Refuse()
		waitReadyz(t, a.ts, 503, map[string]any{"database": "unreachable", "migrations": "unknown"})
		proxy.Pass()
		waitReadyz(t, a.ts, 200, map[string]any{"database": "ok", "migrations": "ok"})
	})
}
