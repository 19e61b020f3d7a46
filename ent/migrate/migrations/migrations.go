// Package migrations embeds the versioned SQL migrations of each dialect.
// The files are generated from the ent schema by `tally migrate new NAME`,
// reviewed, and committed; each holds its own up and down (goose format).
package migrations

import (
	"embed"
	"fmt"
	"io/fs"

	"entgo.io/ent/dialect"
)

//go:embed postgres sqlite
var FS embed.FS

// For returns the migrations of one dialect.
func For(d string) (fs.FS, error) {
	switch d {
	case dialect.Postgres:
		return fs.Sub(FS, "postgres")
	case dialect.SQLite:
		return fs.Sub(FS, "sqlite")
	default:
		return nil, fmt.Errorf("no migrations for dialect %q", d)
	}
}
