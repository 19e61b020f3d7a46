package database

import (
	"context"
	stdsql "database/sql"
	"fmt"
	"strings"
)

// RowUpdate is one UPDATE of several rows, found by id, where a column may
// take a different value on each row:
//
//	UPDATE t SET a = ?, b = CASE id WHEN ? THEN ? … ELSE b END WHERE id IN (…)
//
// The ledger writes a batch's balances and lots with it and the payments
// package a batch's Checkout Sessions: one statement, one round trip under
// the locks, however many rows.
type RowUpdate struct {
	table string
	ids   []string
	set   strings.Builder
	args  []any
}

// Execer runs a statement: a transaction or a connection pool.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (stdsql.Result, error)
}

// UpdateRows starts an update of the rows of table with the given ids
// (table and column names are the program's, never a caller's).
func UpdateRows(table string, ids []string) *RowUpdate {
	return &RowUpdate{table: table, ids: ids}
}

func (u *RowUpdate) assign(column string) {
	if u.set.Len() > 0 {
		u.set.WriteString(", ")
	}
	u.set.WriteString(column + " = ")
}

// Set gives column the same value on every row.
func (u *RowUpdate) Set(column string, v any) *RowUpdate {
	u.assign(column)
	u.set.WriteString("?")
	u.args = append(u.args, v)
	return u
}

// SetEach gives column the value of each row's id in values, in the order
// of the ids; a row without one keeps its value. sqlType, when not empty,
// casts each value (PostgreSQL types an untyped parameter in a CASE as
// text, which an integer column refuses).
func (u *RowUpdate) SetEach(column, sqlType string, values map[string]any) *RowUpdate {
	u.assign(column)
	u.cases(sqlType, values, column)
	return u
}

// AddEach adds to column the value of each row's id in values (a row
// without one adds nothing): an increment, right whatever the caller last
// read of the row.
func (u *RowUpdate) AddEach(column, sqlType string, values map[string]any) *RowUpdate {
	u.assign(column)
	u.set.WriteString(column + " + ")
	u.cases(sqlType, values, "0")
	return u
}

// cases writes CASE id WHEN … THEN value … ELSE otherwise END.
func (u *RowUpdate) cases(sqlType string, values map[string]any, otherwise string) {
	u.set.WriteString("CASE id")
	param := "?"
	if sqlType != "" {
		param = "CAST(? AS " + sqlType + ")"
	}
	for _, id := range u.ids {
		if v, ok := values[id]; ok {
			u.set.WriteString(" WHEN ? THEN " + param)
			u.args = append(u.args, id, v)
		}
	}
	u.set.WriteString(" ELSE " + otherwise + " END")
}

// Rows is how many rows the update writes.
func (u *RowUpdate) Rows() int { return len(u.ids) }

// Statement is the update's SQL with ? placeholders, and its arguments.
func (u *RowUpdate) Statement() (string, []any) {
	var q strings.Builder
	fmt.Fprintf(&q, "UPDATE %s SET %s WHERE id IN (", u.table, u.set.String())
	args := append([]any(nil), u.args...)
	for i, id := range u.ids {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args = append(args, id)
	}
	q.WriteString(")")
	return q.String(), args
}

// Exec runs the update on x, in db's dialect, and fails unless every row
// was there to update.
func (u *RowUpdate) Exec(ctx context.Context, db *DB, x Execer) error {
	q, args := u.Statement()
	res, err := x.ExecContext(ctx, db.Rebind(q), args...)
	if err != nil {
		return fmt.Errorf("updating %d rows of %s: %w", len(u.ids), u.table, err)
	}
	if n, err := res.RowsAffected(); err == nil && n != int64(len(u.ids)) {
		return fmt.Errorf("%d of %d rows of %s updated", n, len(u.ids), u.table)
	}
	return nil
}
