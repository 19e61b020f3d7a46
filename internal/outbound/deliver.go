package outbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/webhookdelivery"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
)

// Queue is the job queue of deliveries, apart from the checks and sweeps
// so that neither waits for the other.
const Queue = "webhooks"

// DeliverArgs is the job that sends one delivery. It is idempotent: a
// delivery no longer PENDING is left alone, so a job run twice (its
// process died after sending) sends at most once more, with the same
// webhook-id, which is what receivers deduplicate on.
type DeliverArgs struct {
	DeliveryID string `json:"delivery_id"`
}

// Kind names the job in River's table.
func (DeliverArgs) Kind() string { return "webhook_delivery" }

// InsertOpts puts deliveries in their queue, one job per delivery while
// one waits or runs (a redelivery of a delivery still on its way adds
// none). Their own schedule retries failed sends (snoozing the job);
// River's attempts count only errors of Tally's database, and the last of
// them fails the delivery, so that the deliveries after it in its user's
// order do not wait for it for ever.
func (DeliverArgs) InsertOpts() river.InsertOpts {
	unique := river.UniqueOpts{ByArgs: true, ByState: liveStates}
	return river.InsertOpts{Queue: Queue, MaxAttempts: 20, UniqueOpts: unique}
}

// liveStates are those of a job waiting or running (jobs.UniqueWhileLive,
// which this package cannot import).
var liveStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
	rivertype.JobStateRetryable, rivertype.JobStateScheduled,
}

// QueueConfig is the deliveries' queue: workers sending at once, and a
// short pause between fetches (River's default 100 ms would let each
// worker send at most ten a second, whatever the endpoint answers).
func QueueConfig(workers int, poll time.Duration) river.QueueConfig {
	qc := river.QueueConfig{MaxWorkers: workers, FetchCooldown: 5 * time.Millisecond}
	if poll > 0 {
		qc.FetchPollInterval = poll
	}
	return qc
}

// perEndpoint bounds the deliveries to one endpoint this process sends at
// once, so that a slow endpoint holds a few workers, not all of them.
const perEndpoint = 4

// Deliverer runs DeliverArgs jobs.
type Deliverer struct {
	river.WorkerDefaults[DeliverArgs]
	db     *database.DB
	sender *Sender
	logger *slog.Logger
	now    func() time.Time
	// schedule is the wait after each failed attempt (retryAfter).
	schedule []time.Duration

	mu    sync.Mutex
	slots map[string]chan struct{} // per endpoint, a place per delivery in flight
}

// NewDeliverer returns the worker of deliveries.
func NewDeliverer(db *database.DB, sender *Sender, logger *slog.Logger) *Deliverer {
	return &Deliverer{db: db, sender: sender, logger: logger, now: time.Now, schedule: retryAfter, slots: map[string]chan struct{}{}}
}

// WithSchedule replaces the waits between attempts (tests, which cannot
// wait minutes); its length is the number of retries.
func (d *Deliverer) WithSchedule(waits []time.Duration) *Deliverer {
	if waits != nil {
		d.schedule = waits
	}
	return d
}

// Register adds the worker to a queue's workers.
func (d *Deliverer) Register(w *river.Workers) { river.AddWorker(w, d) }

// Work sends the delivery if it is its turn: every earlier event of the
// same user to the same endpoint is delivered or has failed for good (per
// user, events arrive in commit order); otherwise it waits for the one
// before.
func (d *Deliverer) Work(ctx context.Context, job *river.Job[DeliverArgs]) error {
	err := d.work(ctx, job.Args.DeliveryID)
	var snooze *river.JobSnoozeError
	if err == nil || errors.As(err, &snooze) || job.Attempt < job.MaxAttempts {
		return err
	}
	// What failed is Tally's own (its database): logged, not shown.
	d.logger.ErrorContext(ctx, "giving a delivery up", "delivery", job.Args.DeliveryID, "error", err.Error())
	giveUp, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	failed := d.db.Ent.WebhookDelivery.UpdateOneID(job.Args.DeliveryID).
		Where(webhookdelivery.StatusEQ(webhookdelivery.StatusPending)).
		SetStatus(webhookdelivery.StatusFailed).ClearNextAttemptAt().
		SetLastError(fmt.Sprintf("given up after %d attempts that failed inside Tally (see its logs)", job.Attempt)).
		Exec(giveUp)
	if failed != nil && !ent.IsNotFound(failed) {
		return errors.Join(err, failed)
	}
	return err
}

func (d *Deliverer) work(ctx context.Context, deliveryID string) error {
	del, err := d.db.Ent.WebhookDelivery.Query().
		Where(webhookdelivery.ID(deliveryID)).
		WithEvent().WithEndpoint().
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil // its endpoint was deleted
	}
	if err != nil {
		return fmt.Errorf("outbound: reading delivery %s: %w", deliveryID, err)
	}
	if del.Status != webhookdelivery.StatusPending {
		return nil
	}
	endpoint := del.Edges.Endpoint
	if !endpoint.Enabled {
		return d.finish(ctx, del, webhookdelivery.StatusFailed, nil, "the endpoint is disabled", false)
	}
	if wait, err := d.turn(ctx, del); err != nil || wait > 0 {
		if err != nil {
			return err
		}
		return river.JobSnooze(wait)
	}
	if !d.acquire(ctx, endpoint.ID) {
		return river.JobSnooze(slotWait + time.Duration(rand.Int64N(int64(slotWait))))
	}
	res, sendErr := d.sendHeld(ctx, del)
	return d.record(ctx, del, res, sendErr)
}

// sendHeld sends while holding one of the endpoint's places.
func (d *Deliverer) sendHeld(ctx context.Context, del *ent.WebhookDelivery) (Response, error) {
	defer d.release(del.EndpointID)
	return d.send(ctx, del)
}

// turn is how long the delivery must wait for an earlier one of its user
// to the same endpoint (0: it may go).
func (d *Deliverer) turn(ctx context.Context, del *ent.WebhookDelivery) (time.Duration, error) {
	if del.UserID == nil {
		return 0, nil
	}
	earlier, err := d.db.Ent.WebhookDelivery.Query().
		Where(webhookdelivery.EndpointID(del.EndpointID), webhookdelivery.UserID(*del.UserID),
			webhookdelivery.StatusEQ(webhookdelivery.StatusPending), webhookdelivery.SeqLT(del.Seq)).
		Order(ent.Asc(webhookdelivery.FieldSeq)).
		First(ctx)
	if ent.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("outbound: reading the deliveries before %s: %w", del.ID, err)
	}
	wait := slotWait // the earlier one is on its way
	if earlier.NextAttemptAt != nil {
		wait = max(wait, earlier.NextAttemptAt.Sub(d.now())+time.Second)
	}
	return min(wait, time.Hour), nil
}

// slotWait is how long a delivery waits for one of its endpoint's places
// before it gives its worker back (and is tried again a moment later): a
// fast endpoint frees one within it, a hung one holds its few workers
// only.
const slotWait = 200 * time.Millisecond

// acquire takes one of the endpoint's places, waiting up to slotWait.
func (d *Deliverer) acquire(ctx context.Context, endpointID string) bool {
	d.mu.Lock()
	slots, ok := d.slots[endpointID]
	if !ok {
		slots = make(chan struct{}, perEndpoint)
		d.slots[endpointID] = slots
	}
	d.mu.Unlock()
	wait := time.NewTimer(slotWait)
	defer wait.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-wait.C:
	case <-ctx.Done():
	}
	return false
}

func (d *Deliverer) release(endpointID string) {
	d.mu.Lock()
	slots := d.slots[endpointID]
	d.mu.Unlock()
	<-slots
}

// send makes one attempt, signed with the endpoint's secret and, during a
// rotation, the previous one.
func (d *Deliverer) send(ctx context.Context, del *ent.WebhookDelivery) (Response, error) {
	endpoint, event := del.Edges.Endpoint, del.Edges.Event
	secrets := []string{endpoint.Secret}
	if endpoint.PreviousSecret != nil && endpoint.PreviousSecretExpiresAt != nil && d.now().Before(*endpoint.PreviousSecretExpiresAt) {
		secrets = append(secrets, *endpoint.PreviousSecret)
	}
	body := []byte(event.Payload)
	header, err := Headers(event.ID, d.now(), body, secrets...)
	if err != nil {
		return Response{}, fmt.Errorf("signing: %w", err)
	}
	return d.sender.Send(ctx, endpoint.URL, header, body)
}

// record writes what an attempt got: delivered on a 2xx; the endpoint
// disabled on a 410; otherwise the next attempt, or FAILED when none is
// left.
func (d *Deliverer) record(ctx context.Context, del *ent.WebhookDelivery, res Response, sendErr error) error {
	status := &res.Status
	if sendErr != nil {
		status = nil
	}
	switch {
	case sendErr == nil && res.Status >= 200 && res.Status < 300:
		return d.finish(ctx, del, webhookdelivery.StatusDelivered, status, "", true)
	case sendErr == nil && res.Status == http.StatusGone:
		return d.disable(ctx, del, res.Status)
	}
	problem := attemptError(res, sendErr)
	wait, again := nextDelay(d.schedule, del.Attempts+1)
	if !again {
		return d.finish(ctx, del, webhookdelivery.StatusFailed, status, problem, true)
	}
	next := d.now().Add(wait)
	err := responded(d.db.Ent.WebhookDelivery.UpdateOneID(del.ID).AddAttempts(1).SetLastError(problem), status).
		SetNextAttemptAt(next).Exec(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return fmt.Errorf("outbound: recording an attempt of %s: %w", del.ID, err)
	}
	return river.JobSnooze(wait)
}

// disable fails the delivery that got a 410 and disables its endpoint in
// one transaction, so that nobody sees the endpoint disabled with the
// delivery that disabled it still pending.
func (d *Deliverer) disable(ctx context.Context, del *ent.WebhookDelivery, code int) error {
	tx, _, err := d.db.BeginTx(ctx)
	if err != nil {
		return fmt.Errorf("outbound: disabling endpoint %s: %w", del.EndpointID, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := tx.WebhookEndpoint.UpdateOneID(del.EndpointID).SetEnabled(false).
		SetDisabledReason("it answered 410 Gone to delivery " + del.ID).Exec(ctx); err != nil && !ent.IsNotFound(err) {
		return fmt.Errorf("outbound: disabling endpoint %s: %w", del.EndpointID, err)
	}
	if err := d.finishWith(ctx, tx.Client(), del, webhookdelivery.StatusFailed, &code, "410 Gone: the endpoint is disabled", true); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbound: disabling endpoint %s: %w", del.EndpointID, err)
	}
	return nil
}

// finish ends a delivery for good; attempted says a request was made.
func (d *Deliverer) finish(ctx context.Context, del *ent.WebhookDelivery, status webhookdelivery.Status, code *int, problem string, attempted bool) error {
	return d.finishWith(ctx, d.db.Ent, del, status, code, problem, attempted)
}

func (d *Deliverer) finishWith(ctx context.Context, client *ent.Client, del *ent.WebhookDelivery, status webhookdelivery.Status, code *int, problem string, attempted bool) error {
	update := responded(client.WebhookDelivery.UpdateOneID(del.ID).SetStatus(status).ClearNextAttemptAt().
		SetLastError(problem), code)
	if attempted {
		update.AddAttempts(1)
	}
	if status == webhookdelivery.StatusDelivered {
		update.SetDeliveredAt(d.now().UTC())
	}
	if err := update.Exec(ctx); err != nil && !ent.IsNotFound(err) {
		return fmt.Errorf("outbound: finishing delivery %s: %w", del.ID, err)
	}
	return nil
}

// responded sets the last response's status, or clears it when the
// attempt got none.
func responded(u *ent.WebhookDeliveryUpdateOne, code *int) *ent.WebhookDeliveryUpdateOne {
	if code == nil {
		return u.ClearLastResponseStatus()
	}
	return u.SetLastResponseStatus(*code)
}

// attemptError says, for admins, why an attempt did not deliver.
func attemptError(res Response, err error) string {
	if err != nil {
		var text string
		if errors.Is(err, context.DeadlineExceeded) {
			text = "no answer in time"
		} else {
			text = err.Error()
		}
		return apperr.Clip(text, 1000)
	}
	msg := fmt.Sprintf("HTTP %d", res.Status)
	if b := strings.TrimSpace(res.Body); b != "" {
		msg += ": " + b
	}
	return apperr.Clip(msg, 1000)
}
