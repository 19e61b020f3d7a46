package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// scaleOp is one row of the --scale table: an API operation timed
// sequentially on each database. Each is written as the GraphQL a client
// sends, against the current schema, so that a change of the schema or of a
// resolver shows up here as it would for a client.
type scaleOp struct {
	name string
	// do makes one request (or, for reserve + capture, two); seq numbers
	// the calls so that writes get fresh idempotency keys.
	do func(ctx context.Context, s *scaleSession, seq int) error
}

// scaleOps are the operations of the table, in its order (issue 18, item
// 2). Edit this list to add or change a row; the table and the test follow.
func scaleOps() []scaleOp {
	return []scaleOp{
		{"spendCredits (service, fresh key)", func(ctx context.Context, s *scaleSession, seq int) error {
			return s.spend(ctx)
		}},
		{"grantCredits (admin)", func(ctx context.Context, s *scaleSession, seq int) error {
			return s.grant(ctx, s.f.granted, 1, s.key("grant", seq))
		}},
		{"reserveCredits + captureReservation", func(ctx context.Context, s *scaleSession, seq int) error {
			return s.reserveCapture(ctx, seq)
		}},
		gqlOp("viewer { creditsBalance }", asHeavy, `{ viewer { creditsBalance } }`, nil),
		gqlOp("viewer { availableCredits }", asHeavy, `{ viewer { availableCredits } }`, nil),
		gqlOp("viewer { reservedCredits }", asHeavy, `{ viewer { reservedCredits } }`, nil),
		gqlOp("viewer { heldCredits }", asHeavy, `{ viewer { heldCredits } }`, nil),
		gqlOp("viewer { lots(first: 10) }", asHeavy,
			`{ viewer { lots(first: 10) { edges { node { id remaining } } } } }`, nil),
		gqlOp("history, first page (50)", asHeavy, pageQuery, func(s *scaleSession) map[string]any {
			return map[string]any{"first": historyPage}
		}),
		{"history, page deep (50)", func(ctx context.Context, s *scaleSession, seq int) error {
			p, err := s.api.page(ctx, s.heavyToken, historyPage, s.f.deep.apiCursor)
			if err != nil {
				return err
			}
			if len(p.ids) != historyPage || p.ids[0] != s.f.deep.firstID {
				return fmt.Errorf("page at depth %d: %d rows from %s, want %d from %s",
					s.f.deep.depth, len(p.ids), first(p.ids), historyPage, s.f.deep.firstID)
			}
			return nil
		}},
		gqlOp("history with totalCount", asHeavy,
			`{ viewer { transactions(first: 10) { totalCount edges { node { id } } } } }`, nil),
		gqlOp("admin users(first: 10) with totalCount", asAdmin,
			`{ users(first: 10) { totalCount edges { node { id externalId } } } }`, nil),
		gqlOp("admin creditTransactions(first: 10) with totalCount", asAdmin,
			`{ creditTransactions(first: 10) { totalCount edges { node { id amount } } } }`, nil),
		gqlOp("admin users filtered by externalID", asAdmin,
			`query U($x: String!) { users(first: 10, where: {externalID: $x}) { edges { node { id creditsBalance } } } }`,
			func(s *scaleSession) map[string]any { return map[string]any{"x": s.f.ordinary} }),
		gqlOp("ledgerReport", asAdmin, `{ ledgerReport { ok users transactions postings lots } }`, nil),
	}
}

// Who sends a gqlOp.
const (
	asHeavy = "heavy"
	asAdmin = "admin"
)

// gqlOp is a read sent as is, with variables from vars (nil: none).
func gqlOp(name, as, query string, vars func(s *scaleSession) map[string]any) scaleOp {
	return scaleOp{name: name, do: func(ctx context.Context, s *scaleSession, seq int) error {
		body := map[string]any{"query": query}
		if vars != nil {
			body["variables"] = vars(s)
		}
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		token := s.heavyToken
		if as == asAdmin {
			token = s.adminToken
		}
		return s.api.post(ctx, token, raw, nil)
	}}
}

// key is a fresh idempotency key: the run's prefix makes it unique across
// runs on the same database.
func (s *scaleSession) key(what string, seq int) string {
	return s.prefix + "-" + what + "-" + strconv.Itoa(seq)
}

const grantQuery = `mutation G($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed transaction { id } } }`

// grant gives a user credits as the admin.
func (s *scaleSession) grant(ctx context.Context, externalID string, amount int64, key string) error {
	body, err := json.Marshal(map[string]any{"query": grantQuery, "variables": map[string]any{"input": map[string]any{
		"externalUserId": externalID, "amount": amount, "reason": "tallybench --scale", "idempotencyKey": key,
	}}})
	if err != nil {
		return err
	}
	var out struct {
		GrantCredits struct{ Replayed bool } `json:"grantCredits"`
	}
	if err := s.api.post(ctx, s.adminToken, body, &out); err != nil {
		return err
	}
	if out.GrantCredits.Replayed {
		return fmt.Errorf("grant with a fresh key %s was replayed", key)
	}
	return nil
}

const (
	reserveQuery = `mutation R($input: ReserveCreditsInput!) { reserveCredits(input: $input) { replayed reservation { id } } }`
	captureQuery = `mutation C($input: CaptureReservationInput!) { captureReservation(input: $input) { replayed transaction { id } } }`
)

// reserveCapture reserves 1 credit of the ordinary user as the service and
// captures it: the two requests of a metered call.
func (s *scaleSession) reserveCapture(ctx context.Context, seq int) error {
	body, err := json.Marshal(map[string]any{"query": reserveQuery, "variables": map[string]any{"input": map[string]any{
		"externalUserId": s.f.ordinary, "amount": 1, "idempotencyKey": s.key("reserve", seq),
	}}})
	if err != nil {
		return err
	}
	var r struct {
		ReserveCredits struct {
			Replayed    bool
			Reservation struct{ ID string } `json:"reservation"`
		} `json:"reserveCredits"`
	}
	if err := s.api.post(ctx, s.serviceToken, body, &r); err != nil {
		return fmt.Errorf("reserving: %w", err)
	}
	if r.ReserveCredits.Replayed || r.ReserveCredits.Reservation.ID == "" {
		return fmt.Errorf("reserve with a fresh key answered %+v", r.ReserveCredits)
	}
	body, err = json.Marshal(map[string]any{"query": captureQuery, "variables": map[string]any{"input": map[string]any{
		"reservationId": r.ReserveCredits.Reservation.ID, "idempotencyKey": s.key("capture", seq),
	}}})
	if err != nil {
		return err
	}
	if err := s.api.post(ctx, s.serviceToken, body, nil); err != nil {
		return fmt.Errorf("capturing: %w", err)
	}
	return nil
}
