package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// The bounds of the WebSocket tests: how long a message that must come may
// take, and how long a read waits to conclude that nothing comes.
const (
	wsWait    = 10 * time.Second
	wsSilence = 300 * time.Millisecond
)

const balanceSubscription = `subscription { creditBalanceChanged { balance transactionId at } }`

// wsMessage is one message of the graphql-transport-ws protocol.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsClient is a graphql-transport-ws client on the server's /graphql. A
// goroutine reads the socket: it answers the server's pings, signals pongs
// on pongs and queues every other message on msgs, in order.
type wsClient struct {
	t     *testing.T
	conn  *websocket.Conn
	msgs  chan wsMessage
	pongs chan struct{}
	done  chan struct{} // closed when the reader stops
	err   error         // why the reader stopped; read only after done
}

var errSilence = errors.New("no message")

func dialWS(t *testing.T, a *api) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	url := "ws" + strings.TrimPrefix(a.ts.URL, "http") + "/graphql"
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || conn.Subprotocol() != "graphql-transport-ws" {
		t.Fatalf("dialing %s: status %d, subprotocol %q", url, resp.StatusCode, conn.Subprotocol())
	}
	c := &wsClient{t: t, conn: conn, msgs: make(chan wsMessage, 64), pongs: make(chan struct{}, 1), done: make(chan struct{})}
	readCtx, stop := context.WithCancel(context.Background())
	go c.read(readCtx)
	t.Cleanup(func() {
		_ = conn.Close(websocket.StatusNormalClosure, "")
		stop()
		<-c.done
	})
	return c
}

func (c *wsClient) read(ctx context.Context) {
	defer close(c.done)
	for {
		var m wsMessage
		if err := wsjson.Read(ctx, c.conn, &m); err != nil {
			c.err = err
			return
		}
		switch m.Type {
		case "ping":
			if err := wsjson.Write(ctx, c.conn, wsMessage{Type: "pong"}); err != nil {
				c.err = err
				return
			}
		case "pong":
			select {
			case c.pongs <- struct{}{}:
			case <-ctx.Done():
				return
			}
		default:
			select {
			case c.msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	if err := wsjson.Write(ctx, c.conn, m); err != nil {
		c.t.Fatalf("sending %s: %v", m.Type, err)
	}
}

// recv returns the next message within d; errSilence when none came, or the
// reason the connection ended (see websocket.CloseStatus) once it has and
// every message before the end was returned.
func (c *wsClient) recv(d time.Duration) (wsMessage, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m := <-c.msgs:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m, nil
		default:
			return wsMessage{}, c.err
		}
	case <-timer.C:
		return wsMessage{}, errSilence
	}
}

// init sends connection_init with the token (none when tok is "").
func (c *wsClient) init(tok string) {
	c.t.Helper()
	payload := map[string]string{}
	if tok != "" {
		payload["Authorization"] = "Bearer " + tok
	}
	raw, _ := json.Marshal(payload)
	c.send(wsMessage{Type: "connection_init", Payload: raw})
}

func (c *wsClient) expectAck() wsMessage {
	c.t.Helper()
	m, err := c.recv(wsWait)
	if err != nil || m.Type != "connection_ack" {
		c.t.Fatalf("after connection_init: %s %s, %v; want connection_ack", m.Type, m.Payload, err)
	}
	return m
}

// subscribe starts the balance subscription under id. The ping that follows
// is answered only after the server's read loop has handled the subscribe
// (it handles a connection's messages in order), so when subscribe returns
// the server has parsed the operation and started the goroutine that runs
// the resolver. The protocol has no "subscribed" message and the resolver
// sends no initial balance, so nothing tells when the resolver has
// registered with the broker; it takes one user lookup, far less than the
// HTTP mutation a test sends next.
func (c *wsClient) subscribe(id string) {
	c.t.Helper()
	raw, _ := json.Marshal(map[string]string{"query": balanceSubscription})
	c.send(wsMessage{ID: id, Type: "subscribe", Payload: raw})
	c.send(wsMessage{Type: "ping"})
	timer := time.NewTimer(wsWait)
	defer timer.Stop()
	select {
	case <-c.pongs:
	case <-c.done:
		c.t.Fatalf("the connection ended after subscribe: %v", c.err)
	case <-timer.C:
		c.t.Fatalf("no pong within %s after subscribe", wsWait)
	}
}

// subscribeBalance opens a connection as tok and subscribes to its balance.
func subscribeBalance(t *testing.T, a *api, tok string) *wsClient {
	t.Helper()
	c := dialWS(t, a)
	c.init(tok)
	c.expectAck()
	c.subscribe("1")
	return c
}

type balanceChange struct {
	Balance       int64     `json:"balance"`
	TransactionID string    `json:"transactionId"`
	At            time.Time `json:"at"`
}

// nextChange fails the test unless the next message, within wsWait, is a
// balance change for the subscription id.
func (c *wsClient) nextChange(id string) balanceChange {
	c.t.Helper()
	m, err := c.recv(wsWait)
	if err != nil {
		c.t.Fatalf("waiting for a balance change: %v", err)
	}
	return c.change(id, m)
}

// change decodes a balance change sent on subscription id.
func (c *wsClient) change(id string, m wsMessage) balanceChange {
	c.t.Helper()
	var p struct {
		Data struct {
			CreditBalanceChanged *balanceChange `json:"creditBalanceChanged"`
		} `json:"data"`
		Errors []gqlError `json:"errors"`
	}
	if m.Type != "next" || m.ID != id {
		c.t.Fatalf("want a next message for %q, got %s %q: %s", id, m.Type, m.ID, m.Payload)
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Errors) > 0 || p.Data.CreditBalanceChanged == nil {
		c.t.Fatalf("next payload %s: %v", m.Payload, err)
	}
	return *p.Data.CreditBalanceChanged
}

// changeAfter makes commits on the subscribed account (commit returns the
// balance it left) until subscription id reports one of them, and returns
// that change. The pong after a subscribe does not prove the subscription is
// registered (the server registers it in a goroutine of its own), so a first
// commit can come too early; and on PostgreSQL the notification of a commit
// made before subscribing (a seed) may still arrive: changes to balances no
// commit here left are skipped.
func (c *wsClient) changeAfter(id string, commit func(attempt int) int64) balanceChange {
	c.t.Helper()
	left := map[int64]bool{}
	for attempt := range 20 {
		left[commit(attempt)] = true
		for deadline := time.Now().Add(time.Second); ; {
			m, err := c.recv(max(time.Until(deadline), time.Millisecond))
			if errors.Is(err, errSilence) {
				break
			}
			if err != nil {
				c.t.Fatalf("waiting for a balance change: %v", err)
			}
			if ch := c.change(id, m); left[ch.Balance] {
				return ch
			}
		}
	}
	c.t.Fatalf("subscription %q reported none of 20 commits", id)
	return balanceChange{}
}

// expectSilence fails the test if any message arrives within d.
func (c *wsClient) expectSilence(d time.Duration) {
	c.t.Helper()
	if m, err := c.recv(d); !errors.Is(err, errSilence) {
		c.t.Fatalf("want nothing within %s, got %s %q %s, %v", d, m.Type, m.ID, m.Payload, err)
	}
}

func grantTo(a *api, admin, externalID string, amount int, key string) string {
	a.t.Helper()
	r := a.ok(admin, grantMutation, map[string]any{"input": map[string]any{
		"externalUserId": externalID, "amount": amount, "reason": "test", "idempotencyKey": key,
	}})
	return r.get(a.t, "grantCredits", "transaction", "id").(string)
}

func spendAs(a *api, tok string, amount int, key string) string {
	a.t.Helper()
	r := a.ok(tok, spendMutation, map[string]any{"input": map[string]any{"amount": amount, "idempotencyKey": key}})
	return r.get(a.t, "spendCredits", "transaction", "id").(string)
}

func TestSubscriptionCreditBalanceChanged(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin, alice, bob := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser)
		a.ok(alice, viewerQuery, nil) // provisions alice
		a.ok(bob, viewerQuery, nil)   // provisions bob
		aliceWS := subscribeBalance(t, a, alice)
		bobWS := subscribeBalance(t, a, bob)

		before := time.Now()
		grantID := grantTo(a, admin, "alice", 100, "g1")
		if c := aliceWS.nextChange("1"); c.Balance != 100 || c.TransactionID != grantID ||
			c.At.Before(before.Add(-time.Minute)) || c.At.After(time.Now().Add(time.Minute)) {
			t.Fatalf("after the grant (transaction %s): %+v", grantID, c)
		}
		spendID := spendAs(a, alice, 30, "s1")
		if c := aliceWS.nextChange("1"); c.Balance != 70 || c.TransactionID != spendID {
			t.Fatalf("after the spend (transaction %s): %+v", spendID, c)
		}
		// Alice's changes are hers alone; bob's subscription is live all along.
		bobWS.expectSilence(wsSilence)
		aliceWS.expectSilence(wsSilence)

		// And bob's own change reaches bob only.
		bobGrant := grantTo(a, admin, "bob", 5, "g2")
		if c := bobWS.nextChange("1"); c.Balance != 5 || c.TransactionID != bobGrant {
			t.Fatalf("bob after his grant (transaction %s): %+v", bobGrant, c)
		}
		aliceWS.expectSilence(wsSilence)
	})
}

func TestSubscriptionAcrossReplicas(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		if db.Dialect != "postgres" {
			t.Skip("replicas need a shared database (PostgreSQL); SQLite runs one process")
		}
		// Two servers on one database, each with its own pool and listener.
		a := newAPI(t, db, nil)
		b := newAPI(t, testdb.Open(t, db.URL), nil)
		admin, alice := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser)
		a.ok(alice, viewerQuery, nil) // provisions alice
		onA := subscribeBalance(t, a, alice)
		onB := subscribeBalance(t, b, alice)

		grantID := grantTo(b, admin, "alice", 100, "g1")
		for name, ws := range map[string]*wsClient{"A": onA, "B": onB} {
			if c := ws.nextChange("1"); c.Balance != 100 || c.TransactionID != grantID {
				t.Fatalf("on server %s after a grant on B (transaction %s): %+v", name, grantID, c)
			}
		}
		spendID := spendAs(a, alice, 30, "s1")
		for name, ws := range map[string]*wsClient{"A": onA, "B": onB} {
			if c := ws.nextChange("1"); c.Balance != 70 || c.TransactionID != spendID {
				t.Fatalf("on server %s after a spend on A (transaction %s): %+v", name, spendID, c)
			}
		}
	})
}

func TestSubscriptionAuthentication(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)

		// A service token (whose subject is also a user's external id) is
		// acknowledged, but the subscription is refused by the directive with
		// one error, in a next message without data, and completed; the
		// connection stays open.
		for _, tc := range []struct {
			name, tok, code string
		}{
			{"service token", token(t, "backend", auth.RoleService), "FORBIDDEN"},
		} {
			c := dialWS(t, a)
			c.init(tc.tok)
			c.expectAck()
			raw, _ := json.Marshal(map[string]string{"query": balanceSubscription})
			c.send(wsMessage{ID: "1", Type: "subscribe", Payload: raw})
			m, err := c.recv(wsWait)
			if err != nil {
				t.Fatalf("%s: after subscribe: %v", tc.name, err)
			}
			var p struct {
				Data   json.RawMessage `json:"data"`
				Errors []gqlError      `json:"errors"`
			}
			if m.Type != "next" || m.ID != "1" || json.Unmarshal(m.Payload, &p) != nil ||
				string(p.Data) != "null" || len(p.Errors) != 1 || p.Errors[0].Extensions["code"] != tc.code {
				t.Fatalf("%s: after subscribe: %s %q %s; want a next without data and one %s error", tc.name, m.Type, m.ID, m.Payload, tc.code)
			}
			if m, err := c.recv(wsWait); err != nil || m.Type != "complete" || m.ID != "1" {
				t.Fatalf("%s: after the error: %s %q %s, %v; want complete", tc.name, m.Type, m.ID, m.Payload, err)
			}
			// A change of the user named like the service's subject: nothing.
			grantTo(a, admin, "backend", 10, "g-"+strings.ReplaceAll(tc.name, " ", "-"))
			c.expectSilence(wsSilence)
		}

		// No token, or one that is present but unusable, refuses the
		// connection (a socket carries only subscriptions, and every one
		// needs a token): no connection_ack, and the server closes the socket
		// with a refusal code (graphql-transport-ws: 4403 Forbidden; 4401
		// also tells the client not to retry), not 1000, which clients take
		// for a normal end and reconnect after.
		forged := token(t, "alice", auth.RoleAdmin) + "x"
		for _, value := range []string{"", "Bearer " + forged, "Bearer garbage", "Basic YWxpY2U6cHc="} {
			c := dialWS(t, a)
			raw, _ := json.Marshal(map[string]string{"Authorization": value})
			if value == "" {
				raw = []byte("{}")
			}
			c.send(wsMessage{Type: "connection_init", Payload: raw})
			m, err := c.recv(wsWait)
			if err == nil || errors.Is(err, errSilence) {
				t.Fatalf("Authorization %.20q…: got %s %s; want the connection closed", value, m.Type, m.Payload)
			}
			if s := websocket.CloseStatus(err); s != 4403 && s != 4401 {
				t.Errorf("Authorization %.20q…: the connection ended with %v; want close code 4403 (or 4401)", value, err)
			}
		}

		// The acknowledgement does not echo the client's credentials.
		alice := token(t, "alice", auth.RoleUser)
		c := dialWS(t, a)
		c.init(alice)
		if ack := c.expectAck(); strings.Contains(string(ack.Payload), alice) {
			t.Errorf("connection_ack echoes the connection_init payload, bearer token included (%d bytes)", len(ack.Payload))
		}
	})
}
