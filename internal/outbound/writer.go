package outbound

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/riverqueue/river"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/user"
	"github.com/tally-billing/tally/ent/webhookendpoint"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/pulid"
)

// Inserter inserts jobs in a transaction (jobs.Inserter).
type Inserter interface {
	InsertManyTx(ctx context.Context, tx *sql.Tx, params []river.InsertManyParams) error
	// InsertTx inserts one job; false when a unique job like it was
	// already waiting or running, and none was added.
	InsertTx(ctx context.Context, tx *sql.Tx, args river.JobArgs) (bool, error)
}

// Writer writes outbound events in the transaction of their cause: the
// event rows, a delivery for every enabled endpoint subscribed to each,
// and the jobs that send them. It is the ledger's EventWriter.
type Writer struct {
	db    *database.DB
	queue Inserter
}

// NewWriter returns a Writer inserting its jobs through queue.
func NewWriter(db *database.DB, queue Inserter) *Writer { return &Writer{db: db, queue: queue} }

// WriteEvents numbers each user's events after the user's previous ones
// (under the user's row lock, which every writer of the user's events
// holds, so the numbers are their commit order), and writes them with
// their deliveries and jobs: a few statements, on the rare transaction
// that has events at all. Events no endpoint subscribes to are not
// written (one statement, the endpoints' read): an endpoint gets the
// events committed after it exists.
func (w *Writer) WriteEvents(ctx context.Context, t *ledger.Tx, events []ledger.Event) error {
	endpoints, err := w.endpoints(ctx, t)
	if err != nil {
		return err
	}
	events = slices.DeleteFunc(slices.Clone(events), func(ev ledger.Event) bool {
		return !slices.ContainsFunc(endpoints, func(e *ent.WebhookEndpoint) bool { return subscribed(e, ev.Type) })
	})
	if len(events) == 0 {
		return nil
	}
	seqs, externalIDs, err := w.number(ctx, t, events)
	if err != nil {
		return err
	}
	balances, err := w.balancesOf(ctx, t, events)
	if err != nil {
		return err
	}
	creates := make([]*ent.WebhookEventCreate, len(events))
	var deliveries []*ent.WebhookDeliveryCreate
	var jobs []river.InsertManyParams
	for i, ev := range events {
		b := balances[ev.User.ID]
		if ev.Balance != nil {
			b = *ev.Balance
		}
		body, err := payload(ev, externalIDs[ev.User.ID], b)
		if err != nil {
			return err
		}
		id := pulid.New("whe")
		creates[i] = t.Ent().WebhookEvent.Create().SetID(id).SetType(ev.Type).SetUserID(ev.User.ID).
			SetSeq(seqs[i]).SetPayload(string(body)).SetCreatedAt(ev.At)
		for _, e := range endpoints {
			if !subscribed(e, ev.Type) {
				continue
			}
			did := pulid.New("whd")
			deliveries = append(deliveries, t.Ent().WebhookDelivery.Create().SetID(did).SetEventID(id).
				SetEndpointID(e.ID).SetUserID(ev.User.ID).SetSeq(seqs[i]))
			jobs = append(jobs, river.InsertManyParams{Args: DeliverArgs{DeliveryID: did}})
		}
	}
	if err := t.Ent().WebhookEvent.CreateBulk(creates...).Exec(ctx); err != nil {
		return fmt.Errorf("outbound: writing %d events: %w", len(creates), err)
	}
	if err := t.Ent().WebhookDelivery.CreateBulk(deliveries...).Exec(ctx); err != nil {
		return fmt.Errorf("outbound: writing %d deliveries: %w", len(deliveries), err)
	}
	return w.queue.InsertManyTx(ctx, t.SQL(), jobs)
}

func subscribed(e *ent.WebhookEndpoint, typ string) bool {
	return len(e.EventTypes) == 0 || slices.Contains(e.EventTypes, typ)
}

// endpoints reads the enabled endpoints, locked against deletion until
// the transaction ends (unless the users' lock read them: LockColumn).
func (w *Writer) endpoints(ctx context.Context, t *ledger.Tx) ([]*ent.WebhookEndpoint, error) {
	if read, ok := t.ReadWithLock().([]*ent.WebhookEndpoint); ok {
		return read, nil
	}
	query := t.Ent().WebhookEndpoint.Query().
		Where(webhookendpoint.Enabled(true)).
		Select(webhookendpoint.FieldID, webhookendpoint.FieldEventTypes)
	if w.db.Dialect == dialect.Postgres {
		// An endpoint deleted before this commits would fail the
		// deliveries' foreign key, and the movement with them; SQLite
		// has one writer at a time anyway.
		query.ForShare()
	}
	endpoints, err := query.All(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbound: reading the endpoints: %w", err)
	}
	return endpoints, nil
}

// number gives each event the next number of its user, and reads the
// users' external ids (events may name a user by id alone).
func (w *Writer) number(ctx context.Context, t *ledger.Tx, events []ledger.Event) ([]int64, map[string]string, error) {
	counts := map[string]int64{}
	var order []string
	for _, ev := range events {
		if counts[ev.User.ID] == 0 {
			order = append(order, ev.User.ID)
		}
		counts[ev.User.ID]++
	}
	next := make(map[string]int64, len(order))
	externalIDs := make(map[string]string, len(order))
	added := map[string]any{}
	for _, id := range order {
		// A user the transaction locked has its number in the copy it
		// read under the lock: all of them are counted in one statement.
		if u := t.Locked(id); u != nil {
			next[id], externalIDs[id] = u.EventSeq+1, u.ExternalID
			u.EventSeq += counts[id]
			added[id] = counts[id]
			continue
		}
		last, externalID, err := w.lastNumber(ctx, t, id, counts[id])
		if err != nil {
			return nil, nil, err
		}
		next[id], externalIDs[id] = last-counts[id]+1, externalID
	}
	if len(added) > 0 {
		err := database.UpdateRows(user.Table, slices.Sorted(maps.Keys(added))).
			AddEach(user.FieldEventSeq, "BIGINT", added).Exec(ctx, w.db, t.Ent())
		if err != nil {
			return nil, nil, fmt.Errorf("outbound: numbering the events of %d users: %w", len(added), err)
		}
	}
	seqs := make([]int64, len(events))
	for i, ev := range events {
		seqs[i] = next[ev.User.ID]
		next[ev.User.ID]++
	}
	return seqs, externalIDs, nil
}

// lastNumber adds n to the user's event count and returns it with the
// user's external id. The update takes the user's row lock, so that even
// a writer that did not lock the user (a payment that moved no credits)
// numbers its events in commit order.
func (w *Writer) lastNumber(ctx context.Context, t *ledger.Tx, userID string, n int64) (int64, string, error) {
	rows, err := t.Ent().QueryContext(ctx,
		w.db.Rebind("UPDATE users SET event_seq = event_seq + ? WHERE id = ? RETURNING event_seq, external_id"), n, userID)
	if err != nil {
		return 0, "", fmt.Errorf("outbound: numbering the events of %s: %w", userID, err)
	}
	defer rows.Close()
	var last int64
	var externalID string
	if !rows.Next() {
		return 0, "", fmt.Errorf("outbound: numbering the events of %s: no such user (%v)", userID, rows.Err())
	}
	if err := rows.Scan(&last, &externalID); err != nil {
		return 0, "", fmt.Errorf("outbound: numbering the events of %s: %w", userID, err)
	}
	return last, externalID, rows.Close()
}

// balancesOf reads, in the transaction, the balances of the users of the
// events that do not carry theirs.
func (w *Writer) balancesOf(ctx context.Context, t *ledger.Tx, events []ledger.Event) (map[string]ledger.Balance, error) {
	var ids []string
	for _, ev := range events {
		if ev.Balance == nil && !slices.Contains(ids, ev.User.ID) {
			ids = append(ids, ev.User.ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return t.Balances(ctx, ids)
}

// LedgerEvents is the ledger option of every process that moves credits
// (the server, `tally reconcile --apply`): its transactions write the
// events they cause, and their jobs, whether or not the process works
// jobs itself.
func LedgerEvents(db *database.DB, defaultThreshold int64, queue Inserter) ledger.Option {
	return ledger.WithEvents(NewWriter(db, queue), defaultThreshold)
}

var _ ledger.LockReader = (*Writer)(nil)

// endpointsRead is what LockColumn reads: the enabled endpoints, as
// endpoints reads them (and locks them: FOR SHARE), as JSON.
var endpointsRead = fmt.Sprintf(`(SELECT CAST(COALESCE(json_agg(e), '[]') AS TEXT) FROM
	(SELECT %[1]s, %[2]s FROM %[3]s WHERE %[4]s FOR SHARE) AS e)`,
	webhookendpoint.FieldID, webhookendpoint.FieldEventTypes, webhookendpoint.Table, webhookendpoint.FieldEnabled)

// LockColumn reads the endpoints with the statement that locks a
// transaction's users (ledger.LockReader; PostgreSQL only).
func (w *Writer) LockColumn() entsql.Querier { return entsql.Raw(endpointsRead) }

// FromLock decodes what LockColumn read.
func (w *Writer) FromLock(v any) (any, error) {
	text, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("outbound: the endpoints read with the lock as %T", v)
	}
	var endpoints []*ent.WebhookEndpoint
	if err := json.Unmarshal([]byte(text), &endpoints); err != nil {
		return nil, fmt.Errorf("outbound: decoding the endpoints read with the lock: %w", err)
	}
	return endpoints, nil
}
