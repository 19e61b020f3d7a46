// Package database opens Tally's database: PostgreSQL through pgx for
// production, or an embedded SQLite file (modernc.org/sqlite, no cgo) by
// default. Everything above this package sees an *ent.Client and a dialect.
package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/trace"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/tally-billing/tally/ent"
)

// DB is an open database.
type DB struct {
	// URL is the normalized location, safe to reopen (for example by a second
	// server instance in tests). It may hold a password: never log it; use
	// Redacted.
	URL     string
	Dialect string // dialect.Postgres or dialect.SQLite
	SQL     *sql.DB
	Ent     *ent.Client
	// Driver is Ent's driver, which BeginTx begins its transactions on.
	Driver dialect.Driver
}

// Options tune the connection pool.
type Options struct {
	// MaxOpenConns caps the pool; 0 picks a default for the dialect.
	MaxOpenConns int
	// TracerProvider, when set, traces the pool's statements (see
	// traced.go); nil leaves the driver unwrapped.
	TracerProvider trace.TracerProvider
}

// Location is a parsed DATABASE_URL.
type Location struct {
	Dialect string
	// DSN is what the driver opens: a pgx connection string, or a SQLite
	// file DSN with its pragmas.
	DSN string
	// Path is the SQLite file; empty for PostgreSQL.
	Path string
}

// Parse understands postgres://… and postgresql://… URLs, sqlite://PATH,
// sqlite:PATH and a bare file path (SQLite).
func Parse(raw string) (Location, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return Location{}, errors.New("empty (use postgres://… or a SQLite file path)")
	}
	scheme, rest, hasScheme := strings.Cut(raw, "://")
	if !hasScheme {
		if s, r, ok := strings.Cut(raw, ":"); ok && s == "sqlite" {
			scheme, rest, hasScheme = s, r, true
		}
	}
	if !hasScheme {
		return sqliteLocation(raw)
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		if _, err := pgx.ParseConfig(raw); err != nil {
			return Location{}, fmt.Errorf("not a valid PostgreSQL URL: %s", pgErrorText(err))
		}
		return Location{Dialect: dialect.Postgres, DSN: raw}, nil
	case "sqlite", "sqlite3", "file":
		path, _, _ := strings.Cut(rest, "?")
		return sqliteLocation(path)
	default:
		return Location{}, fmt.Errorf("unsupported scheme %q (use postgres://… or sqlite://PATH)", scheme)
	}
}

func sqliteLocation(path string) (Location, error) {
	if path == "" {
		return Location{}, errors.New("SQLite URL has no file path (use sqlite://tally.db)")
	}
	if path == ":memory:" {
		return Location{}, errors.New("in-memory SQLite is not supported: every connection would see another database (use a file path)")
	}
	// WAL lets readers run beside the writer; the busy timeout makes writers
	// queue instead of failing; _txlock=immediate takes the write lock at
	// BEGIN so two transactions on one account can never interleave their
	// read-then-write (money invariant 7).
	q := url.Values{}
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	return Location{
		Dialect: dialect.SQLite,
		DSN:     "file:" + uriPath.Replace(path) + "?" + q.Encode(),
		Path:    path,
	}, nil
}

// uriPath escapes the characters that would end the path part of SQLite's
// file: URI, so that a directory named "a#b" or "a?b" is opened as named.
var uriPath = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// DefaultRandomPageCost is the planner's cost of a random page read on
// Tally's connections, unless DATABASE_URL sets it.
const DefaultRandomPageCost = "1.1"

// Open opens and pings the database at rawURL. It does not migrate.
func Open(ctx context.Context, rawURL string, opts Options) (*DB, error) {
	loc, err := Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	db, err := openPool(loc, opts.MaxOpenConns, opts.TracerProvider)
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot reach the database at %s: %s", Redacted(rawURL), pgErrorText(err))
	}
	return wrap(rawURL, loc.Dialect, db), nil
}

// OpenProbe opens a pool of one connection to the database at rawURL, apart
// from the request pool, for a health probe: a probe that queued behind
// busy requests would report a saturated pool as a database that does not
// answer. The connection is kept open for as long as it works (no idle or
// lifetime limit) and dialled again when it breaks. Nothing is dialled
// until the first use, so it opens even while the database is down.
func OpenProbe(rawURL string) (*DB, error) {
	loc, err := Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	db, err := openPool(loc, 1, nil)
	if err != nil {
		return nil, err
	}
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	return wrap(rawURL, loc.Dialect, db), nil
}

func wrap(rawURL, dialectName string, db *sql.DB) *DB {
	pool := entsql.OpenDB(dialectName, db)
	return &DB{
		URL:     rawURL,
		Dialect: dialectName,
		SQL:     db,
		Ent:     ent.NewClient(ent.Driver(pool)),
		Driver:  pool,
	}
}

// openPool configures a pool on loc of at most maxOpen connections (0: the
// dialect's default), without connecting.
func openPool(loc Location, maxOpen int, tp trace.TracerProvider) (*sql.DB, error) {
	var db *sql.DB
	switch loc.Dialect {
	case dialect.Postgres:
		cfg, err := pgx.ParseConfig(loc.DSN)
		if err != nil {
			return nil, fmt.Errorf("DATABASE_URL: %s", pgErrorText(err))
		}
		// pgx prepares every distinct statement once per connection and keeps
		// it (and PostgreSQL keeps it in the backend). Batched statements
		// come in a shape per batch size, so an unbounded cache would grow
		// with traffic; a smaller one still holds every hot statement.
		cfg.StatementCacheCapacity = statementCacheCapacity
		cfg.DescriptionCacheCapacity = statementCacheCapacity
		// PostgreSQL's default random_page_cost (4) prices a random read as
		// a spinning disk's. With it, the planner read a dormant user's
		// first page of history by walking every newer row of everyone's
		// through the created_at index (40 ms at 200,000 rows, and growing
		// with the table) rather than the user's own index (0.1 ms): the
		// user's rows lie scattered over the heap, while created_at follows
		// it. 1.1 is the usual figure for SSDs. A URL that sets the
		// parameter (?random_page_cost=…) keeps its own.
		if _, set := cfg.RuntimeParams["random_page_cost"]; !set {
			cfg.RuntimeParams["random_page_cost"] = DefaultRandomPageCost
		}
		if tp != nil {
			db = tracedDB(stdlib.GetConnector(*cfg), loc.Dialect, tp)
		} else {
			db = stdlib.OpenDB(*cfg)
		}
		if maxOpen <= 0 {
			maxOpen = 20
		}
		db.SetMaxOpenConns(maxOpen)
		db.SetMaxIdleConns(maxOpen)
		db.SetConnMaxIdleTime(5 * time.Minute)
		db.SetConnMaxLifetime(30 * time.Minute)
	case dialect.SQLite:
		if dir := filepath.Dir(loc.Path); dir != "." {
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return nil, fmt.Errorf("DATABASE_URL: directory %s for the SQLite file does not exist", dir)
			}
		}
		if err := registerSQLiteFunctions(); err != nil {
			return nil, fmt.Errorf("registering SQLite functions: %w", err)
		}
		var err error
		if tp != nil {
			db, err = tracedSQLite(loc.DSN, tp)
		} else {
			db, err = sql.Open("sqlite", loc.DSN)
		}
		if err != nil {
			return nil, fmt.Errorf("opening SQLite database %s: %w", loc.Path, err)
		}
		if maxOpen <= 0 {
			maxOpen = 8
		}
		db.SetMaxOpenConns(maxOpen)
		db.SetMaxIdleConns(maxOpen)
	default:
		return nil, fmt.Errorf("DATABASE_URL: no driver for dialect %q", loc.Dialect)
	}
	return db, nil
}

// statementCacheCapacity bounds the prepared statements of one connection.
const statementCacheCapacity = 128

// Close closes the pool.
func (d *DB) Close() error { return d.SQL.Close() }

// Redacted returns the URL with any password replaced, for messages and logs.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// pgErrorText shortens pgx's connection errors, which repeat the full
// connection string, to their cause.
func pgErrorText(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "): "); i >= 0 && strings.Contains(msg, "failed to connect") {
		msg = msg[i+3:]
	}
	return msg
}

// Rebind turns the ? placeholders of a hand-written statement into the
// dialect's ($1, $2, … on PostgreSQL). The statement must not hold a ?
// anywhere else (in a string literal, say).
func (d *DB) Rebind(query string) string {
	if d.Dialect != dialect.Postgres {
		return query
	}
	return NumberFrom(query, 0)
}

// NumberFrom turns the ? placeholders of query into PostgreSQL's $from+1,
// $from+2, …: for a statement joined to one that already takes from
// arguments. As Rebind, the statement must not hold a ? anywhere else.
func NumberFrom(query string, from int) string {
	var b strings.Builder
	b.Grow(len(query) + 8)
	for _, r := range query {
		if r == '?' {
			from++
			b.WriteString("$" + strconv.Itoa(from))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
