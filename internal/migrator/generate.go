package migrator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
	"time"

	atlas "ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/sqltool"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/sql/schema"

	"github.com/tally-billing/tally/internal/database"
)

// Generate writes the next migration of one dialect into dir: the SQL that
// takes a database migrated by the files already in dir to the current ent
// schema, with its reverse as the down part. dev must be an empty scratch
// database of that dialect; the existing files are replayed on it first. It
// returns the files written (none when the schema has not changed).
func Generate(ctx context.Context, dev *database.DB, dir, name string) ([]string, error) {
	gooseDir, err := sqltool.NewGooseDir(dir)
	if err != nil {
		return nil, fmt.Errorf("opening migration directory %s: %w", dir, err)
	}
	// Hand-written migrations (triggers, data fixes) are allowed beside the
	// generated ones, so the checksum is taken afresh rather than enforced.
	sum, err := gooseDir.Checksum()
	if err != nil {
		return nil, fmt.Errorf("hashing %s: %w", dir, err)
	}
	if err := atlas.WriteSumFile(gooseDir, sum); err != nil {
		return nil, fmt.Errorf("writing %s/atlas.sum: %w", dir, err)
	}
	before, err := sqlFiles(dir)
	if err != nil {
		return nil, err
	}
	err = dev.Ent.Schema.NamedDiff(ctx, name,
		schema.WithDir(gooseDir),
		schema.WithMigrationMode(schema.ModeReplay),
		schema.WithDialect(dev.Dialect),
		schema.WithFormatter(formatterFor(dev.Dialect)),
		schema.WithDropColumn(true),
		schema.WithDropIndex(true),
	)
	if err != nil {
		return nil, fmt.Errorf("computing the %s migration: %w", dev.Dialect, err)
	}
	after, err := sqlFiles(dir)
	if err != nil {
		return nil, err
	}
	var written []string
	for f := range after {
		if !before[f] {
			written = append(written, filepath.Join(dir, f))
		}
	}
	return written, nil
}

func sqlFiles(dir string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	files := map[string]bool{}
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".sql" {
			files[e.Name()] = true
		}
	}
	return files, nil
}

// Dialects are the dialects Tally keeps migrations for, with their
// directories relative to the repository root.
var Dialects = []struct {
	Name string
	Dir  string
}{
	{dialect.Postgres, "ent/migrate/migrations/postgres"},
	{dialect.SQLite, "ent/migrate/migrations/sqlite"},
}

// sqliteGooseFormatter is Atlas's goose formatter with one addition for
// SQLite: its down part defers foreign-key checks to the end of the
// migration's transaction. SQLite drops tables in the order Atlas reverses
// them, which may drop a parent before its children; deferring lets a down
// migration run on a database that holds data.
var sqliteGooseFormatter = func() atlas.Formatter {
	f, err := atlas.NewTemplateFormatter(
		template.Must(template.New("").Funcs(templateFuncs).Parse(
			"{{ now }}{{ with .Name }}_{{ . }}{{ end }}.sql")),
		template.Must(template.New("").Funcs(templateFuncs).Parse(`-- +goose Up
{{ range .Changes }}{{ with .Comment }}-- {{ println . }}{{ end }}{{ printf "%s;\n" .Cmd }}{{ end }}
-- +goose Down
PRAGMA defer_foreign_keys = ON;
{{ range $c := rev .Changes }}{{ with $stmts := .ReverseStmts }}{{ with $c.Comment }}-- reverse: {{ println . }}{{ end }}{{ range $stmts }}{{ printf "%s;\n" . }}{{ end }}{{ end }}{{ end }}`)),
	)
	if err != nil {
		panic(err) // the templates are constants
	}
	return f
}()

var templateFuncs = template.FuncMap{
	"now": func() string { return time.Now().UTC().Format("20060102150405") },
	"rev": func(changes []*atlas.Change) []*atlas.Change {
		out := make([]*atlas.Change, len(changes))
		for i, c := range changes {
			out[len(changes)-1-i] = c
		}
		return out
	},
}

func formatterFor(d string) atlas.Formatter {
	if d == dialect.SQLite {
		return sqliteGooseFormatter
	}
	return sqltool.GooseFormatter
}
