package database

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"entgo.io/ent/dialect"
)

func TestParse(t *testing.T) {
	cases := []struct{ raw, dialect, path string }{
		{"tally.db", dialect.SQLite, "tally.db"},
		{"sqlite://data/t.db", dialect.SQLite, "data/t.db"},
		{"sqlite:///abs/t.db", dialect.SQLite, "/abs/t.db"},
		{"sqlite:t.db", dialect.SQLite, "t.db"},
		{"postgres://u:p@localhost:5432/tally?sslmode=disable", dialect.Postgres, ""},
		{"postgresql://localhost/tally", dialect.Postgres, ""},
	}
	for _, c := range cases {
		loc, err := Parse(c.raw)
		if err != nil || loc.Dialect != c.dialect || loc.Path != c.path {
			t.Errorf("Parse(%q) = %+v, %v", c.raw, loc, err)
		}
	}
	for _, bad := range []string{"", "mysql://x/y", "sqlite://", ":memory:", "postgres://u@host:notaport/db"} {
		if loc, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted: %+v", bad, loc)
		}
	}
}

// TestSQLitePathWithURICharacters: the file must be opened as named even
// when its path holds characters that mean something in a file: URI.
func TestSQLitePathWithURICharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a#b?c%d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "t.db")
	db, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.SQL.Exec(`CREATE TABLE probe (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database was not created at %s: %v", path, err)
	}
	var fk, timeout int
	var mode string
	if err := db.SQL.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d (%v)", fk, err)
	}
	if err := db.SQL.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q (%v)", mode, err)
	}
	if err := db.SQL.QueryRow(`PRAGMA busy_timeout`).Scan(&timeout); err != nil || timeout != 10000 {
		t.Errorf("busy_timeout = %d (%v)", timeout, err)
	}
}

func TestOpenErrorsAreReadableAndRedacted(t *testing.T) {
	_, err := Open(context.Background(), "postgres://tally:s3cret@127.0.0.1:1/tally", Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "cannot reach the database") {
		t.Fatalf("error %v", err)
	}
	_, err = Open(context.Background(), filepath.Join(t.TempDir(), "missing", "t.db"), Options{})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("error %v", err)
	}
}

func TestRebind(t *testing.T) {
	q := "SELECT a FROM t WHERE b = ? AND c > ?"
	if got := (&DB{Dialect: dialect.Postgres}).Rebind(q); got != "SELECT a FROM t WHERE b = $1 AND c > $2" {
		t.Errorf("PostgreSQL: %q", got)
	}
	if got := (&DB{Dialect: dialect.SQLite}).Rebind(q); got != q {
		t.Errorf("SQLite: %q", got)
	}
	if got := NumberFrom(q, 36); got != "SELECT a FROM t WHERE b = $37 AND c > $38" {
		t.Errorf("numbered after 36 arguments: %q", got)
	}
}
