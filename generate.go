// Package tally holds the code generation entry point; the service itself is
// under cmd/ and internal/.
package tally

// The order matters: ent writes graph/ent.graphqls, which gqlgen then reads.
//go:generate go run ./ent/entc.go
//go:generate go run ./graph/codegen
