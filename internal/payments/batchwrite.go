package payments

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// writeSessionsAndRecords runs the payments' updates and inserts the
// events' records. On PostgreSQL that is one statement, the updates and the
// insert as data-modifying WITH queries, each counted (one round trip fewer
// while the users are locked; each part writes rows of its own, of users
// the batch locked). Elsewhere, one statement each.
func (s *Service) writeSessionsAndRecords(ctx context.Context, t *ledger.Tx, updates []*database.RowUpdate, records []*ent.ProcessedEventCreate) error {
	if s.db.Dialect != dialect.Postgres {
		for _, u := range updates {
			if err := u.Exec(ctx, s.db, t.Ent()); err != nil {
				return fmt.Errorf("payments: %w", err)
			}
		}
		if len(records) == 0 {
			return nil
		}
		return recorded(t.Ent().ProcessedEvent.CreateBulk(records...).Exec(ctx), len(records))
	}
	if len(updates) == 0 && len(records) == 0 {
		return nil
	}
	var parts, counts []string
	var args []any
	want := make([]int64, 0, len(updates)+1)
	for i, u := range updates {
		text, a := u.Statement()
		parts = append(parts, fmt.Sprintf("updated%d AS (%s RETURNING 1)", i, text))
		counts = append(counts, fmt.Sprintf("(SELECT count(*) FROM updated%d)", i))
		args, want = append(args, a...), append(want, int64(u.Rows()))
	}
	if len(records) > 0 {
		text, a, err := insertRecords(records)
		if err != nil {
			return err
		}
		parts = append(parts, "recorded AS ("+text+" RETURNING 1)")
		counts = append(counts, "(SELECT count(*) FROM recorded)")
		args, want = append(args, a...), append(want, int64(len(records)))
	}
	q := "WITH " + strings.Join(parts, ", ") + " SELECT " + strings.Join(counts, ", ")
	rows, err := t.Ent().QueryContext(ctx, s.db.Rebind(q), args...)
	if err != nil {
		return recorded(err, len(records))
	}
	defer rows.Close()
	got := make([]int64, len(want))
	dest := make([]any, len(got))
	for i := range got {
		dest[i] = &got[i]
	}
	if !rows.Next() {
		return recorded(fmt.Errorf("no counts: %w", rows.Err()), len(records))
	}
	if err := rows.Scan(dest...); err != nil {
		return fmt.Errorf("payments: reading what the batch wrote: %w", err)
	}
	for i, n := range want {
		if got[i] != n {
			return fmt.Errorf("payments: the batch wrote %v rows, want %v", got, want)
		}
	}
	return rows.Close()
}

// recorded is what an insert of n events' records returning err means: a
// record written concurrently (a unique violation) has the batch start over,
// and the retry finds it.
func recorded(err error, n int) error {
	var pgErr *pgconn.PgError
	if ent.IsConstraintError(err) || (errors.As(err, &pgErr) && pgErr.ConstraintName == recordPerEvent) {
		return fmt.Errorf("payments: an event of the batch was recorded concurrently: %w", ledger.ErrRetry)
	}
	if err != nil {
		return fmt.Errorf("payments: recording %d events: %w", n, err)
	}
	return nil
}

// recordPerEvent is the unique index of an event's record.
const recordPerEvent = "processedevent_stripe_event_id"

// recordColumns are those insertRecords writes.
var recordColumns = []string{
	processedevent.FieldID, processedevent.FieldStripeEventID, processedevent.FieldType, processedevent.FieldLivemode,
	processedevent.FieldAPIVersion, processedevent.FieldOutcome, processedevent.FieldError, processedevent.FieldPaymentID,
	processedevent.FieldAttempts, processedevent.FieldPayload, processedevent.FieldReceivedAt, processedevent.FieldProcessedAt,
}

// insertRecords is the INSERT of the records recordCreate made, with ?
// placeholders, checked by the schema's validators as ent would check them.
func insertRecords(records []*ent.ProcessedEventCreate) (string, []any, error) {
	var q strings.Builder
	q.WriteString("INSERT INTO " + processedevent.Table + " (" + strings.Join(recordColumns, ", ") + ") VALUES ")
	row := "(" + strings.Repeat("?, ", len(recordColumns)-1) + "?)"
	args := make([]any, 0, len(records)*len(recordColumns))
	for i, c := range records {
		m := c.Mutation()
		eventID, _ := m.StripeEventID()
		typ, _ := m.GetType()
		livemode, _ := m.Livemode()
		apiVersion, _ := m.APIVersion()
		outcome, _ := m.Outcome()
		reason, _ := m.Error()
		var paymentID *string
		if id, ok := m.PaymentID(); ok {
			paymentID = &id
		}
		payload, _ := m.Payload()
		received, _ := m.ReceivedAt()
		processed, _ := m.ProcessedAt()
		for _, check := range []error{
			processedevent.StripeEventIDValidator(eventID), processedevent.TypeValidator(typ),
			processedevent.APIVersionValidator(apiVersion), processedevent.OutcomeValidator(outcome),
			processedevent.ErrorValidator(reason),
		} {
			if check != nil {
				return "", nil, fmt.Errorf("payments: the record of %s: %w", eventID, check)
			}
		}
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(row)
		args = append(args, processedevent.DefaultID(), eventID, typ, livemode, apiVersion, string(outcome), reason, paymentID,
			processedevent.DefaultAttempts, payload, received, processed)
	}
	return q.String(), args, nil
}
