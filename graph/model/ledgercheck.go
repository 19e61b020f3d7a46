package model

import "time"

// LedgerCheck is a check run as the API shows it. It is written by hand
// (gqlgen.yml binds it) because the ent type of the same name, which
// gqlgen would bind otherwise, has no progress or age.
type LedgerCheck struct {
	ID           string            `json:"id"`
	Kind         LedgerCheckKind   `json:"kind"`
	Status       LedgerCheckStatus `json:"status"`
	RequestedAt  time.Time         `json:"requestedAt"`
	StartedAt    *time.Time        `json:"startedAt,omitempty"`
	FinishedAt   *time.Time        `json:"finishedAt,omitempty"`
	AgeSeconds   int               `json:"ageSeconds"`
	Progress     float64           `json:"progress"`
	Phase        *string           `json:"phase,omitempty"`
	Users        int               `json:"users"`
	Transactions int               `json:"transactions"`
	Payments     int               `json:"payments"`
	Postings     int               `json:"postings"`
	Lots         int               `json:"lots"`
	ProblemCount int               `json:"problemCount"`
	Problems     []*LedgerProblem  `json:"problems"`
	Error        *string           `json:"error,omitempty"`
}
