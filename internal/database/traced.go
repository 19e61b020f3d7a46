package database

import (
	"context"
	"database/sql"
	"database/sql/driver"

	"entgo.io/ent/dialect"
	"github.com/XSAM/otelsql"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// tracedOptions make a span per statement and transaction, with the
// statement's text (ent sends placeholders, never values, so no amounts or
// personal data) and never its arguments.
//
// Only statements made inside a trace get a span: the pool's own work (a
// dial, a session reset) and statements of background work that carries no
// span would each start a trace of one span, noise that buries the
// requests. Rows and prepare spans are left out: a statement's span already
// covers its round trip.
func tracedOptions(dialectName string, tp trace.TracerProvider) []otelsql.Option {
	system := semconv.DBSystemNameSQLite
	if dialectName == dialect.Postgres {
		system = semconv.DBSystemNamePostgreSQL
	}
	return []otelsql.Option{
		otelsql.WithTracerProvider(tp),
		otelsql.WithAttributes(system),
		otelsql.WithSpanOptions(otelsql.SpanOptions{
			OmitConnResetSession: true,
			OmitConnPrepare:      true,
			OmitRows:             true,
			OmitConnectorConnect: true,
			DisableErrSkip:       true,
			SpanFilter: func(ctx context.Context, _ otelsql.Method, _ string, _ []driver.NamedValue) bool {
				return trace.SpanContextFromContext(ctx).IsValid()
			},
		}),
	}
}

// tracedDB is stdlib.OpenDB with the connector wrapped.
func tracedDB(c driver.Connector, dialectName string, tp trace.TracerProvider) *sql.DB {
	return otelsql.OpenDB(c, tracedOptions(dialectName, tp)...)
}

// tracedSQLite is sql.Open("sqlite", dsn) with the driver wrapped.
func tracedSQLite(dsn string, tp trace.TracerProvider) (*sql.DB, error) {
	return otelsql.Open("sqlite", dsn, tracedOptions(dialect.SQLite, tp)...)
}
