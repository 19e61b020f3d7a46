// Package model holds GraphQL types that have no ent counterpart; gqlgen writes
// them to models_gen.go.
package model
