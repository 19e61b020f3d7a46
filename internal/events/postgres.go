package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

const (
	// maxPayload is PostgreSQL's limit on a NOTIFY payload (it must be
	// shorter than 8000 bytes). An event is about 150 bytes.
	maxPayload = 8000

	// healthInterval is how long the listener waits quietly before it
	// pings: a connection that a network device dropped without a word
	// would otherwise leave the replica deaf, never noticing.
	healthInterval = 30 * time.Second
	pingTimeout    = 10 * time.Second

	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// NewPostgres returns a broker through the PostgreSQL database at url: a
// dedicated connection LISTENs for every replica's events, and Publish sends
// a NOTIFY through a private pool of two connections. ctx bounds the first
// connection only; the listener reconnects by itself until Close.
//
// Prefer New in the server: it publishes on the server's pool instead, so a
// replica holds one extra connection rather than three.
func NewPostgres(ctx context.Context, url string, logger *slog.Logger) (Broker, error) {
	b, err := newPostgres(ctx, url, logger, nil)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return b, nil
}

type postgres struct {
	hub     *hub
	config  *pgx.ConnConfig
	channel string
	logger  *slog.Logger

	// pub runs the NOTIFYs. A pool rather than the listen connection,
	// which is busy waiting and cannot run two things at once.
	pub    *sql.DB
	ownPub bool

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	// pid is the listen connection's backend process id while it listens,
	// 0 while it reconnects; tests terminate that backend.
	pid atomic.Uint32
}

// newPostgres uses pub for Publish when given, else opens its own pool.
func newPostgres(ctx context.Context, url string, logger *slog.Logger, pub *sql.DB) (*postgres, error) {
	if logger == nil {
		logger = slog.Default()
	}
	config, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("events: parsing the database URL: %w", err)
	}
	if _, ok := config.RuntimeParams["application_name"]; !ok {
		// So that an operator can tell the listener apart in pg_stat_activity.
		config.RuntimeParams["application_name"] = "tally-events"
	}
	b := &postgres{
		hub:     newHub(),
		config:  config,
		channel: channelFor(config.RuntimeParams["search_path"]),
		logger:  logger,
		pub:     pub,
		done:    make(chan struct{}),
	}
	// The first connection is made before returning, so that a broken URL
	// fails the start and an event published right after New is heard.
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	if b.pub == nil {
		b.pub = stdlib.OpenDB(*config.Copy())
		b.pub.SetMaxOpenConns(2)
		b.pub.SetMaxIdleConns(2)
		b.pub.SetConnMaxIdleTime(5 * time.Minute)
		b.ownPub = true
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	go b.run(runCtx, conn)
	return b, nil
}

func (b *postgres) Publish(ctx context.Context, ev BalanceChanged) error {
	if b.isClosed() {
		return ErrClosed
	}
	query, args, err := b.PublishStatement([]BalanceChanged{ev})
	if err != nil {
		return err
	}
	// The listener of this replica hears the NOTIFY too: one path for every
	// subscriber keeps each replica's events in the same order.
	if _, err := b.pub.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("events: notifying the balance of %s: %w", ev.UserID, err)
	}
	return nil
}

// PublishStatement is one NOTIFY per event, in one statement. PostgreSQL
// delivers a transaction's notifications at its commit, in order.
func (b *postgres) PublishStatement(evs []BalanceChanged) (string, []any, error) {
	channel, payloads, err := b.Notifications(evs)
	if err != nil {
		return "", nil, err
	}
	return "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS e(p, n) ORDER BY n",
		[]any{channel, payloads}, nil
}

// Notifications encodes each event as the JSON the listeners decode.
func (b *postgres) Notifications(evs []BalanceChanged) (string, []string, error) {
	payloads := make([]string, len(evs))
	for i, ev := range evs {
		if err := validate(ev); err != nil {
			return "", nil, err
		}
		payload, err := json.Marshal(ev)
		if err != nil {
			return "", nil, fmt.Errorf("events: encoding the event of %s: %w", ev.UserID, err)
		}
		if len(payload) >= maxPayload {
			return "", nil, fmt.Errorf("events: the event of %s is %d bytes, over PostgreSQL's NOTIFY limit", ev.UserID, len(payload))
		}
		payloads[i] = string(payload)
	}
	return b.channel, payloads, nil
}

func (b *postgres) Subscribe(ctx context.Context, userID string) (<-chan BalanceChanged, error) {
	return b.hub.subscribe(ctx, userID)
}

func (b *postgres) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		<-b.done
		b.hub.close()
		if b.ownPub {
			if err := b.pub.Close(); err != nil {
				b.closeErr = fmt.Errorf("events: closing the publish pool: %w", err)
			}
		}
	})
	return b.closeErr
}

func (b *postgres) isClosed() bool {
	b.hub.mu.Lock()
	defer b.hub.mu.Unlock()
	return b.hub.closed
}

// connect opens a listen connection and LISTENs on the channel.
func (b *postgres) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, b.config)
	if err != nil {
		// pgx names the host, user and database, never the password.
		return nil, fmt.Errorf("events: connecting the listener: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("events: listening on %s: %w", b.channel, err)
	}
	b.pid.Store(conn.PgConn().PID())
	return conn, nil
}

// run receives notifications until ctx ends, reconnecting whenever the
// listen connection fails.
func (b *postgres) run(ctx context.Context, conn *pgx.Conn) {
	defer close(b.done)
	for {
		err := b.receive(ctx, conn)
		b.pid.Store(0)
		closeConn(conn)
		if ctx.Err() != nil {
			return
		}
		b.logger.Warn("events: lost the listen connection; reconnecting; events published meanwhile are lost",
			"channel", b.channel, "error", err)
		if conn = b.reconnect(ctx); conn == nil {
			return
		}
	}
}

func (b *postgres) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		waitCtx, cancel := context.WithTimeout(ctx, healthInterval)
		n, err := conn.WaitForNotification(waitCtx)
		quiet := waitCtx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			b.dispatch(n.Payload)
		case quiet && errors.Is(err, context.DeadlineExceeded):
			pingCtx, cancel := context.WithTimeout(ctx, pingTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return fmt.Errorf("health check: %w", err)
			}
		default:
			return err
		}
	}
}

func (b *postgres) dispatch(payload string) {
	var ev BalanceChanged
	if err := json.Unmarshal([]byte(payload), &ev); err != nil || ev.UserID == "" {
		// Someone else NOTIFYing on the channel, or a newer replica's
		// format: not worth stopping the listener for.
		b.logger.Warn("events: ignoring a notification that is not a balance change",
			"channel", b.channel, "error", err)
		return
	}
	// publish fails only once the broker is closed, when nobody listens.
	_ = b.hub.publish(ev)
}

// reconnect retries with jittered, growing delays, so that replicas that
// lost the server at the same moment do not all come back at once. It
// returns nil only when ctx ends.
func (b *postgres) reconnect(ctx context.Context) *pgx.Conn {
	delay := minBackoff
	for attempt := 1; ; attempt++ {
		wait := delay/2 + rand.N(delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		conn, err := b.connect(ctx)
		if err == nil {
			b.logger.Info("events: listening again", "channel", b.channel, "attempts", attempt)
			return conn
		}
		if ctx.Err() != nil {
			return nil
		}
		delay = min(2*delay, maxBackoff)
		b.logger.Warn("events: cannot reconnect the listener", "channel", b.channel,
			"attempt", attempt, "next_delay", delay, "error", err)
	}
}

// closeConn closes a listen connection that may already be broken, without
// waiting long for a server that no longer answers.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
