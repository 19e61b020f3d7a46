// Package events tells the processes serving GraphQL subscriptions that a
// user's credit balance changed, so that creditBalanceChanged can push the
// new balance to the user's open WebSockets.
//
// On PostgreSQL every replica keeps one connection that LISTENs on a
// channel of the database, and a publish is a NOTIFY on it, so an event
// published by any replica reaches the subscribers of every replica. On
// SQLite the server is a single process, and events fan out in memory.
//
// Delivery is at most once and best effort: a notification sent while a
// replica's listen connection is down (it reconnects on its own) is lost to
// that replica, and a subscriber that does not keep up loses older events.
// Each event carries the full balance rather than a change, so the latest
// event a subscriber sees is always right; a subscription should nonetheless
// start by sending the balance read from the database, so that what happened
// before it (or during a reconnection) is not missed.
//
// Publish only after the ledger's transaction has committed: a notification
// for a transaction that rolls back (or is retried) must never be sent.
package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/internal/database"
)

// BalanceChanged says that a transaction left a user's balance at Balance.
type BalanceChanged struct {
	UserID        string    `json:"user_id"`
	Balance       int64     `json:"balance"`
	TransactionID string    `json:"transaction_id"`
	At            time.Time `json:"at"`
}

// Broker publishes balance changes and hands them to subscribers.
type Broker interface {
	// Publish sends ev to every subscriber of ev.UserID, on every replica.
	// It never waits for subscribers.
	Publish(ctx context.Context, ev BalanceChanged) error
	// Subscribe returns the events of one user from now on. The channel is
	// closed when ctx ends or the broker closes; a subscriber that falls
	// behind loses its oldest events, never the latest.
	Subscribe(ctx context.Context, userID string) (<-chan BalanceChanged, error)
	// Close ends every subscription. Publish and Subscribe fail afterwards.
	Close() error
}

// Transactional is a broker that publishes through the database:
// pg_notify(channel, payload) for each of the payloads it returns, run in
// order in the transaction that made the changes, publishes them all when
// that transaction commits, and never if it rolls back. No event is lost
// between a commit and a publish, and the ledger sends them with the
// statement that writes the changes (no round trip of their own).
type Transactional interface {
	Broker
	// Notifications encodes evs as the payloads of NOTIFYs on channel.
	Notifications(evs []BalanceChanged) (channel string, payloads []string, err error)
}

// ErrClosed is returned by a broker's Publish and Subscribe after Close.
var ErrClosed = errors.New("events: the broker is closed")

// Channel is the NOTIFY channel on a PostgreSQL database whose URL sets no
// search_path. A URL with a search_path gets a channel of its own (see
// channelFor), because channels belong to the database, not to a schema.
const Channel = "tally_balance_changed"

// New returns the broker for db: through the database on PostgreSQL, in
// memory on SQLite. On PostgreSQL, Publish runs on db's own pool, which the
// broker does not close.
func New(ctx context.Context, db *database.DB, logger *slog.Logger) (Broker, error) {
	switch db.Dialect {
	case dialect.SQLite:
		return NewLocal(), nil
	case dialect.Postgres:
		b, err := newPostgres(ctx, db.URL, logger, db.SQL)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return b, nil
	default:
		return nil, fmt.Errorf("events: no broker for the %q dialect", db.Dialect)
	}
}

// maxIdentifier is the longest name PostgreSQL keeps (NAMEDATALEN-1);
// pg_notify refuses a longer channel.
const maxIdentifier = 63

// channelFor names the channel of the schemas in searchPath. Tests put each
// database in a schema of its own inside one PostgreSQL database, and
// deployments may share a database the same way; a channel per search_path
// keeps their events apart. Every replica of one deployment opens the same
// URL, so they all agree on the name.
func channelFor(searchPath string) string {
	if searchPath == "" {
		return Channel
	}
	suffix := searchPath
	if !plainIdentifier(searchPath) || len(Channel)+1+len(searchPath) > maxIdentifier {
		// A hash keeps the name a short, unquoted-safe identifier whatever
		// the search_path holds (quotes, commas, "$user", upper case).
		sum := sha256.Sum256([]byte(searchPath))
		suffix = hex.EncodeToString(sum[:6])
	}
	return Channel + "_" + suffix
}

func plainIdentifier(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return s != ""
}
