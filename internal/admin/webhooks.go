package admin

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/webhookdelivery"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/outbound"
)

// Webhook endpoint actions recorded in AdminAction.action.
const (
	ActionCreateWebhookEndpoint = "create_webhook_endpoint"
	ActionUpdateWebhookEndpoint = "update_webhook_endpoint"
	ActionRotateWebhookSecret   = "rotate_webhook_endpoint_secret"
	ActionDeleteWebhookEndpoint = "delete_webhook_endpoint"
	ActionRedeliverWebhookEvent = "redeliver_webhook_event"
	ActionSetLowBalance         = "set_low_balance_threshold"
)

// RotationOverlap is how long the secret being rotated out keeps signing
// beside the new one, so that receivers can switch without losing events.
const RotationOverlap = 24 * time.Hour

// maxEndpoints bounds the endpoints: every event is written once per
// endpoint, in the transaction of its cause.
const maxEndpoints = 50

// WithWebhooks lets the service manage endpoints: which URLs they may
// have, and the queue that redeliveries go through.
func (s *Service) WithWebhooks(policy outbound.Policy, queue outbound.Inserter) *Service {
	s.policy, s.queue = policy, queue
	return s
}

// EndpointFields are the editable fields of an endpoint; nil leaves one as
// it is (on create, URL is required).
type EndpointFields struct {
	URL         *string
	EventTypes  []string // nil: unchanged; empty: every type
	Description *string
	Enabled     *bool
}

func (s *Service) validateEndpoint(f EndpointFields, creating bool) error {
	if creating && f.URL == nil {
		return apperr.Invalid("url", "url is required")
	}
	if f.URL != nil {
		if err := s.policy.CheckURL(*f.URL); err != nil {
			return err
		}
	}
	if f.Description != nil {
		if err := ledger.ValidateText("description", *f.Description, 1000); err != nil {
			return err
		}
	}
	if len(f.EventTypes) > len(outbound.Types) {
		return apperr.Invalid("eventTypes", "at most %d event types", len(outbound.Types))
	}
	for i, t := range f.EventTypes {
		if !outbound.KnownType(t) {
			return apperr.Invalid("eventTypes", "unknown event type %q (known: %v)", apperr.Clip(t, 100), outbound.Types)
		}
		if slices.Contains(f.EventTypes[:i], t) {
			return apperr.Invalid("eventTypes", "event type %q is listed twice", t)
		}
	}
	return nil
}

// CreateWebhookEndpoint adds an endpoint and returns its secret, which is
// never shown again.
func (s *Service) CreateWebhookEndpoint(ctx context.Context, a Admin, f EndpointFields) (*ent.WebhookEndpoint, string, error) {
	if err := s.validateEndpoint(f, true); err != nil {
		return nil, "", err
	}
	secret, err := outbound.NewSecret()
	if err != nil {
		return nil, "", fmt.Errorf("admin: making a secret: %w", err)
	}
	var endpoint *ent.WebhookEndpoint
	err = s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		n, err := t.Ent().WebhookEndpoint.Query().Count(ctx)
		if err != nil {
			return fmt.Errorf("admin: counting endpoints: %w", err)
		}
		if n >= maxEndpoints {
			return apperr.New(apperr.InvalidArgument, "at most %d webhook endpoints; delete one first", maxEndpoints)
		}
		endpoint, err = t.Ent().WebhookEndpoint.Create().
			SetURL(*f.URL).
			SetEventTypes(f.EventTypes).
			SetNillableDescription(f.Description).
			SetNillableEnabled(f.Enabled).
			SetSecret(secret).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("admin: creating an endpoint: %w", err)
		}
		_, err = a.write(ctx, t.Ent(), record{action: ActionCreateWebhookEndpoint, targetID: endpoint.ID, reason: "created, sending to " + hostOf(endpoint.URL)})
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return endpoint.Unwrap(), secret, nil
}

// UpdateWebhookEndpoint changes an endpoint. Enabling it clears why Tally
// disabled it.
func (s *Service) UpdateWebhookEndpoint(ctx context.Context, a Admin, id string, f EndpointFields) (*ent.WebhookEndpoint, error) {
	if err := s.validateEndpoint(f, false); err != nil {
		return nil, err
	}
	var endpoint *ent.WebhookEndpoint
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		update := t.Ent().WebhookEndpoint.UpdateOneID(id).
			SetNillableURL(f.URL).
			SetNillableDescription(f.Description).
			SetNillableEnabled(f.Enabled)
		if f.EventTypes != nil {
			update.SetEventTypes(f.EventTypes)
		}
		if f.Enabled != nil && *f.Enabled {
			update.ClearDisabledReason()
		}
		var err error
		endpoint, err = update.Save(ctx)
		if ent.IsNotFound(err) {
			return apperr.New(apperr.NotFound, "no webhook endpoint with id %q", id)
		}
		if err != nil {
			return fmt.Errorf("admin: updating endpoint %s: %w", id, err)
		}
		_, err = a.write(ctx, t.Ent(), record{action: ActionUpdateWebhookEndpoint, targetID: id, reason: "updated, sending to " + hostOf(endpoint.URL)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return endpoint.Unwrap(), nil
}

// RotateWebhookEndpointSecret gives an endpoint a new secret; the old one
// keeps signing beside it for RotationOverlap.
func (s *Service) RotateWebhookEndpointSecret(ctx context.Context, a Admin, id string) (*ent.WebhookEndpoint, string, error) {
	secret, err := outbound.NewSecret()
	if err != nil {
		return nil, "", fmt.Errorf("admin: making a secret: %w", err)
	}
	var endpoint *ent.WebhookEndpoint
	err = s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		old, err := t.Ent().WebhookEndpoint.Get(ctx, id)
		if ent.IsNotFound(err) {
			return apperr.New(apperr.NotFound, "no webhook endpoint with id %q", id)
		}
		if err != nil {
			return fmt.Errorf("admin: reading endpoint %s: %w", id, err)
		}
		endpoint, err = old.Update().SetSecret(secret).SetPreviousSecret(old.Secret).
			SetPreviousSecretExpiresAt(t.Now().Add(RotationOverlap)).Save(ctx)
		if err != nil {
			return fmt.Errorf("admin: rotating the secret of %s: %w", id, err)
		}
		_, err = a.write(ctx, t.Ent(), record{action: ActionRotateWebhookSecret, targetID: id, reason: "rotated the secret"})
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return endpoint.Unwrap(), secret, nil
}

// DeleteWebhookEndpoint removes an endpoint and its deliveries (their
// pending jobs find nothing to send).
func (s *Service) DeleteWebhookEndpoint(ctx context.Context, a Admin, id string) error {
	return s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		old, err := t.Ent().WebhookEndpoint.Get(ctx, id)
		if ent.IsNotFound(err) {
			return apperr.New(apperr.NotFound, "no webhook endpoint with id %q", id)
		}
		if err != nil {
			return fmt.Errorf("admin: reading endpoint %s: %w", id, err)
		}
		if _, err := t.Ent().WebhookDelivery.Delete().Where(webhookdelivery.EndpointID(id)).Exec(ctx); err != nil {
			return fmt.Errorf("admin: deleting the deliveries of %s: %w", id, err)
		}
		if err := t.Ent().WebhookEndpoint.DeleteOneID(id).Exec(ctx); err != nil {
			return fmt.Errorf("admin: deleting endpoint %s: %w", id, err)
		}
		_, err = a.write(ctx, t.Ent(), record{action: ActionDeleteWebhookEndpoint, targetID: id, reason: "deleted, was sending to " + hostOf(old.URL)})
		return err
	})
}

// RedeliverWebhookEvent sends a delivered or failed delivery again from
// its first attempt, with the same webhook-id (receivers deduplicate on
// it); a pending one whose job was lost gets a new job.
func (s *Service) RedeliverWebhookEvent(ctx context.Context, a Admin, deliveryID string) (*ent.WebhookDelivery, error) {
	var del *ent.WebhookDelivery
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		old, err := t.Ent().WebhookDelivery.Get(ctx, deliveryID)
		if ent.IsNotFound(err) {
			return apperr.New(apperr.NotFound, "no webhook delivery with id %q", deliveryID)
		}
		if err != nil {
			return fmt.Errorf("admin: reading delivery %s: %w", deliveryID, err)
		}
		// A pending delivery keeps its attempts; if its job was lost, a
		// new one takes it on (one job per delivery at a time: River
		// does not add a second while one waits or runs).
		del = old
		if old.Status != webhookdelivery.StatusPending {
			del, err = old.Update().SetStatus(webhookdelivery.StatusPending).SetAttempts(0).ClearNextAttemptAt().
				ClearDeliveredAt().SetLastError("").Save(ctx)
			if err != nil {
				return fmt.Errorf("admin: resetting delivery %s: %w", deliveryID, err)
			}
		}
		inserted, err := s.queue.InsertTx(ctx, t.SQL(), outbound.DeliverArgs{DeliveryID: deliveryID})
		if err != nil {
			return err
		}
		if !inserted && old.Status != webhookdelivery.StatusPending {
			// The job that just finished it has not yet left River's
			// running state, and River adds no second job beside it:
			// reset without a job, the delivery would wait for ever.
			return apperr.New(apperr.Conflict, "delivery %s has only just finished; try again in a few seconds", deliveryID)
		}
		_, err = a.write(ctx, t.Ent(), record{action: ActionRedeliverWebhookEvent, targetID: deliveryID, reason: "redelivered event " + del.EventID})
		return err
	})
	if err != nil {
		return nil, err
	}
	return del.Unwrap(), nil
}

// hostOf is what the audit says of an endpoint's URL: its host, not its
// path or query, which may hold the application's own tokens.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(an invalid URL)"
	}
	return apperr.Clip(u.Host, 300)
}

// SetLowBalanceThreshold sets target's low-balance threshold (nil: the
// default) and audits it.
func (s *Service) SetLowBalanceThreshold(ctx context.Context, a Admin, target *ent.User, threshold *int64) (*ent.User, error) {
	var u *ent.User
	err := s.ledger.Within(ctx, func(ctx context.Context, t *ledger.Tx) error {
		var err error
		if u, err = t.SetLowBalanceThreshold(ctx, target.ID, threshold); err != nil {
			return err
		}
		what := "the default"
		if threshold != nil {
			what = fmt.Sprint(*threshold)
		}
		_, err = a.write(ctx, t.Ent(), record{
			action: ActionSetLowBalance, targetID: target.ID, targetUserID: &target.ID,
			amount: threshold, reason: "low balance threshold set to " + what,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return u.Unwrap(), nil
}
