package payments

import (
	"context"
	"fmt"
	"strings"
	"time"

	"entgo.io/ent/dialect"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
)

// writeSessions runs the updates of the payments' session details at
// once (the path of one event).
func (s *Service) writeSessions(ctx context.Context, t *ledger.Tx, ws []sessionWrite, now time.Time) error {
	for _, u := range sessionUpdates(t, ws, now) {
		if err := u.Exec(ctx, s.db, t.Ent()); err != nil {
			return fmt.Errorf("payments: %w", err)
		}
	}
	return nil
}

// writeSessionsAndRecords writes a batch's payments and the events'
// records. On PostgreSQL the ledger's write of the batch's grants carries
// them (ledger.Along: one round trip instead of three while the users are
// locked), or, with no grant, one statement before the commit. Elsewhere,
// one statement each, at once.
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
	along := make([]ledger.Along, 0, len(updates)+1)
	for _, u := range updates {
		text, args := u.Statement()
		along = append(along, ledger.Along{What: "payments", SQL: text, Args: args, Rows: int64(u.Rows())})
	}
	if len(records) > 0 {
		text, args, err := insertRecords(records)
		if err != nil {
			return err
		}
		along = append(along, ledger.Along{What: "the events' records", SQL: text, Args: args, Rows: int64(len(records))})
	}
	return t.WriteAlong(along...)
}

// recorded is what an insert of n events' records returning err means: a
// record written concurrently (a unique violation) has the batch start over,
// and the retry finds it.
func recorded(err error, n int) error {
	if ent.IsConstraintError(err) {
		return fmt.Errorf("payments: an event of the batch was recorded concurrently: %w", ledger.ErrRetry)
	}
	if err != nil {
		return fmt.Errorf("payments: recording %d events: %w", n, err)
	}
	return nil
}

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
