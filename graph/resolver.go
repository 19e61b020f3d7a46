// Package graph serves Tally's GraphQL API. Resolvers stay thin: they decode
// the request, call an internal service and map its errors.
package graph

import (
	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/admin"
	"github.com/tally-billing/tally/internal/events"
	"github.com/tally-billing/tally/internal/jobs"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/users"
)

// Resolver holds the dependencies of every resolver.
type Resolver struct {
	Client   *ent.Client
	Ledger   *ledger.Service
	Accounts *users.Service
	Admin    *admin.Service
	Payments *payments.Service
	// Checks queues the ledger's background checks; nil refuses
	// startLedgerCheck.
	Checks *jobs.Queue
	// Events fans out balance changes to subscriptions; nil disables them.
	Events events.Broker
}
