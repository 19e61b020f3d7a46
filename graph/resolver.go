// Package graph serves Tally's GraphQL API. Resolvers stay thin: they decode
// the request, call an internal service and map its errors.
package graph

import "github.com/tally-billing/tally/ent"

// Resolver holds the dependencies of every resolver.
type Resolver struct {
	Client *ent.Client
}
