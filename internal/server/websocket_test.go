package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// refusedOp sends an operation on the socket under id and returns the
// errors it was refused with: an error message, or a next message with
// errors followed by complete. It fails the test if the operation ran.
func (c *wsClient) refusedOp(id, query string) []gqlError {
	c.t.Helper()
	raw, _ := json.Marshal(map[string]any{"query": query})
	c.send(wsMessage{ID: id, Type: "subscribe", Payload: raw})
	m, err := c.recv(wsWait)
	if err != nil || m.ID != id {
		c.t.Fatalf("after subscribe %s: %s %s %s, %v", id, m.Type, m.ID, m.Payload, err)
	}
	var errs []gqlError
	switch m.Type {
	case "error":
		_ = json.Unmarshal(m.Payload, &errs)
	case "next":
		var p struct {
			Data   json.RawMessage `json:"data"`
			Errors []gqlError      `json:"errors"`
		}
		_ = json.Unmarshal(m.Payload, &p)
		if len(p.Errors) == 0 || (len(p.Data) > 0 && string(p.Data) != "null") {
			c.t.Fatalf("%s ran on the socket: %s", query, m.Payload)
		}
		errs = p.Errors
		if done, err := c.recv(wsWait); err != nil || done.Type != "complete" || done.ID != id {
			c.t.Fatalf("after the refusal of %s: %s %s, %v; want complete", id, done.Type, done.ID, err)
		}
	default:
		c.t.Fatalf("after subscribe %s: %s %s", id, m.Type, m.Payload)
	}
	return errs
}

func errorCode(errs []gqlError) any {
	if len(errs) == 0 {
		return nil
	}
	return errs[0].Extensions["code"]
}

// TestWebSocketCarriesSubscriptionsOnly: 60 spends went through a socket in
// 0.06 s while HTTP answered 429 after 3. A socket now refuses queries and
// mutations (they go over HTTP, through its limits), and nothing moves.
func TestWebSocketCarriesSubscriptionsOnly(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		alice := token(t, "alice", auth.RoleUser)
		grantTo(a, admin, "alice", 100, "seed")

		c := dialWS(t, a)
		c.init(alice)
		c.expectAck()
		before := moneyDigest(t, db)
		for i, op := range []string{
			fmt.Sprintf(`mutation { spendCredits(input: {amount: 1, idempotencyKey: "ws-%d"}) { replayed } }`, 0),
			`{ viewer { creditsBalance } }`,
		} {
			if errs := c.refusedOp(fmt.Sprint(i), op); errorCode(errs) != "INVALID_ARGUMENT" {
				t.Fatalf("%s over the socket: %+v; want an INVALID_ARGUMENT error", op, errs)
			}
		}
		if after := moneyDigest(t, db); after != before {
			t.Fatal("an operation refused on the socket moved credits")
		}
		// The socket still serves its subscription.
		c.subscribe("sub")
		c.changeAfter("sub", func(i int) int64 {
			spendAs(a, alice, 5, fmt.Sprintf("http-spend-%d", i))
			return int64(95 - 5*i)
		})
	})
}

// TestWebSocketOperationsAreRateLimited: each operation a socket starts
// counts against its caller's rate limit, as an HTTP request would.
func TestWebSocketOperationsAreRateLimited(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_RATE_LIMIT": "1", "TALLY_RATE_BURST": "4"})
		backend := token(t, "backend", auth.RoleService)
		c := dialWS(t, a) // the upgrade carries no token: the address pays for it
		c.init(backend)
		c.expectAck()
		limited := 0
		for i := range 10 {
			// A subscription of a service is refused by its directive once it
			// runs; a rate-limited one is refused before it is even parsed.
			errs := c.refusedOp(fmt.Sprint(i), `subscription { creditBalanceChanged { balance } }`)
			if errorCode(errs) == "RATE_LIMITED" {
				limited++
				if errs[0].Extensions["retryAfter"] == nil {
					t.Fatalf("a rate-limited operation: %+v", errs)
				}
			}
		}
		if limited < 3 {
			t.Fatalf("%d of 10 operations past a burst of 4 at 1/s were rate-limited", limited)
		}
		// HTTP shares the bucket: the caller is out of requests there too.
		if r := a.gql(backend, `{ creditPackages { id } }`, nil); r.status != 429 {
			t.Fatalf("HTTP after the socket used the burst: %d", r.status)
		}
	})
}

// TestWebSocketClosesWhenTheTokenExpires: a socket whose token had expired
// kept spending and receiving events 38 s later. It is now closed with 4403
// when the token expires, and no event reaches it after.
func TestWebSocketClosesWhenTheTokenExpires(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		grantTo(a, admin, "alice", 100, "seed")
		// Long enough for the grant below to arrive on a loaded machine (the
		// expiry has one-second granularity); short enough to keep the test quick.
		short, err := auth.Mint([]byte(testSecret), auth.MintClaims{Subject: "alice"}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := dialWS(t, a)
		c.init(short)
		c.expectAck()
		c.subscribe("1")
		c.changeAfter("1", func(i int) int64 {
			grantTo(a, admin, "alice", 1, fmt.Sprintf("while-valid-%d", i))
			return int64(101 + i)
		})
		var err2 error
		for {
			var m wsMessage
			m, err2 = c.recv(wsWait)
			if err2 != nil {
				break
			}
			if m.Type == "next" {
				t.Fatalf("an event after the token expired: %s", m.Payload)
			}
		}
		if s := websocket.CloseStatus(err2); s != graph.CloseTokenExpired {
			t.Fatalf("the socket ended with %v; want close code %d", err2, graph.CloseTokenExpired)
		}
	})
}

// TestWebSocketSubscriptionsAreBounded: one socket runs at most
// MaxSubscriptionsPerSocket subscriptions at once.
func TestWebSocketSubscriptionsAreBounded(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, `{ viewer { id } }`, nil) // provisioned before the subscriptions look her up
		c := dialWS(t, a)
		c.init(alice)
		c.expectAck()
		for i := range graph.MaxSubscriptionsPerSocket {
			c.subscribe(fmt.Sprint(i))
		}
		// Every subscription is registered once each has seen an event.
		grantTo(a, token(t, "root", auth.RoleAdmin), "alice", 1, "all-listening")
		for range graph.MaxSubscriptionsPerSocket {
			if m, err := c.recv(wsWait); err != nil || m.Type != "next" {
				t.Fatalf("waiting for the grant on every subscription: %s %s, %v", m.Type, m.Payload, err)
			}
		}
		errs := c.refusedOp("one-more", balanceSubscription)
		if errorCode(errs) != "INVALID_ARGUMENT" || errs[0].Extensions["limit"] != "subscriptionsPerSocket" {
			t.Fatalf("subscription %d: %+v", graph.MaxSubscriptionsPerSocket+1, errs)
		}
		// Stopping one makes room for another (once the server has wound it
		// down, which it does after reading the stop).
		c.send(wsMessage{ID: "0", Type: "complete"})
		if m, err := c.recv(wsWait); err != nil || m.Type != "complete" || m.ID != "0" {
			t.Fatalf("after stopping subscription 0: %s %s %s, %v", m.Type, m.ID, m.Payload, err)
		}
		for attempt := 0; ; attempt++ {
			id := fmt.Sprintf("again-%d", attempt)
			c.subscribe(id)
			m, err := c.recv(wsSilence)
			if errors.Is(err, errSilence) {
				break // running: no answer until an event
			}
			if err != nil || m.ID != id || attempt > 100 {
				t.Fatalf("after stopping a subscription: %s %s %s, %v", m.Type, m.ID, m.Payload, err)
			}
			if done, err := c.recv(wsWait); err != nil || done.Type != "complete" {
				t.Fatalf("after the refusal of %s: %s, %v", id, done.Type, err)
			}
		}
	})
}
