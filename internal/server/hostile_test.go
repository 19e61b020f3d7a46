package server_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/introspection"
	"github.com/golang-jwt/jwt/v5"

	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// limited fails the test unless the operation was refused, before anything
// ran, for the named limit: INVALID_ARGUMENT with extensions.limit, 200
// with errors and no data (a JSON client), and the money tables unchanged.
func (a *api) limited(tok, query string, vars map[string]any, limit string) result {
	a.t.Helper()
	r := a.refused(tok, query, vars, "INVALID_ARGUMENT")
	if got := r.Errors[0].Extensions["limit"]; got != limit {
		a.t.Fatalf("refused for limit %v (%s); want %s", got, r.Errors[0].Message, limit)
	}
	if r.status != 200 || r.Data != nil {
		a.t.Fatalf("a refused operation answered %d with data %s", r.status, r.Data)
	}
	return r
}

// repeated is a document selecting field n times, behind a random comment
// so that no cached parse can help, as the review's attack did.
func repeated(field string, n int) string {
	return fmt.Sprintf("#%x\n{ %s}", rand.Uint64(), strings.Repeat(field+" ", n))
}

// aliased is a document selecting field n times under distinct aliases.
func aliased(field string, n int) string {
	return fmt.Sprintf("#%x\n{%s }", rand.Uint64(), aliases(field, n))
}

func aliases(field string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, " a%d: %s", i, field)
	}
	return b.String()
}

// signedToken is an HS256 token signed here, not by auth.Mint (which
// refuses to mint what the server refuses), with extra claims in pairs.
func signedToken(t *testing.T, sub string, extra ...string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		claims[extra[i]] = extra[i+1]
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestHostileDocumentsAreRefusedBeforeValidation: the review's attack (a
// random comment, then thousands of repeated fields) cost seconds of CPU in
// validation. Every such document is now refused by a limit on its text,
// tokens, fields or repeated names, tighter without a token; the cost of a
// refusal is measured by BenchmarkHostileQueryRefusal.
func TestHostileDocumentsAreRefusedBeforeValidation(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, `{ viewer { id } }`, nil)

		// Anonymous: the body cap answers first for the review's sizes.
		for _, n := range []int{4000, 12000, 30000} {
			if r := a.gql("", repeated("__typename", n), nil); r.status != 413 {
				t.Fatalf("anonymous, %d fields: status %d %+v; want 413", n, r.status, r.Errors)
			}
		}
		a.limited("", repeated("__typename", 500), nil, "queryBytes")
		a.limited("", repeated("__typename", 300), nil, "queryFields")
		a.limited("", "{ __typename"+strings.Repeat(" @skip(if: false)", 200)+" }", nil, "queryTokens")
		a.limited("", repeated("__typename", 50), nil, "queryOverlap")

		// With a token the limits are wider, but the same attack is refused.
		if r := a.gql(alice, repeated("__typename", 12000), nil); r.status != 413 {
			t.Fatalf("with a token, 12,000 fields: status %d; want 413", r.status)
		}
		a.limited(alice, repeated("__typename", 4000), nil, "queryBytes")
		a.limited(alice, repeated("__typename", 1000), nil, "queryFields")
		a.limited(alice, "{ __typename"+strings.Repeat(" @skip(if: false)", 900)+" }", nil, "queryTokens")
		a.limited(alice, repeated("__typename", 200), nil, "queryOverlap")
		a.limited(alice, repeated("viewer { creditsBalance }", 200), nil, "queryOverlap")

		// What real clients send passes: GraphiQL's introspection query
		// without a token (in development), a page of history with one.
		a.ok("", introspection.Query, nil)
		a.ok("", repeated("__typename", 40), nil)
		a.ok(alice, `{ viewer { transactions(first: 50) { edges { node { id amount kind createdAt postings { account amount } } } pageInfo { endCursor hasNextPage } } } }`, nil)
	})
}

// TestAliasesPayForWhatTheyRead: 2,000 aliases of a balance were answered
// in full, each a database read. A field that reads the database costs a
// read in the operation's complexity, whatever its alias.
func TestAliasesPayForWhatTheyRead(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		a.ok(alice, `{ viewer { id } }`, nil)

		var viewers strings.Builder
		for i := range 150 {
			fmt.Fprintf(&viewers, " a%d: viewer { b%d: creditsBalance }", i, i)
		}
		a.limited(alice, "{"+viewers.String()+" }", nil, "complexity")
		a.limited(alice, "{ viewer {"+aliases("availableCredits", 120)+" } }", nil, "complexity")
		var packs strings.Builder
		for i := range 80 {
			fmt.Fprintf(&packs, " a%d: creditPackages { b%d: id }", i, i)
		}
		a.limited("", "{"+packs.String()+" }", nil, "complexity")
		// A user's auto-recharge is read per user of a list, and its
		// month's charges and pack again each.
		a.limited(token(t, "root", auth.RoleAdmin),
			`{ users(first: 100) { edges { node { autoRecharge { chargedThisMonthAmount package { id } } } } } }`, nil, "complexity")

		// Lists of ids are bounded, and nodes pays for each id.
		ids := make([]string, graph.MaxListItems+1)
		for i := range ids {
			ids[i] = fmt.Sprintf("pkg_01jd6m3v9q8x0n2k4t7w5y%04d", i)
		}
		a.limited(alice, `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": ids}, "listItems")
		a.limited(alice, `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": ids[:60]}, "complexity")
		if r := a.gql(alice, `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": ids[:20]}); r.code() != "NOT_FOUND" || len(r.Errors) != 20 {
			t.Fatalf("20 ids (none of them real) were not looked up: %+v", r.Errors)
		}

		// Mutations are transactions: a request holds at most a few.
		var spends strings.Builder
		spends.WriteString("mutation {")
		for i := range 12 {
			fmt.Fprintf(&spends, ` s%d: spendCredits(input: {amount: 1, idempotencyKey: "alias-%d"}) { replayed }`, i, i)
		}
		spends.WriteString(" }")
		a.limited(alice, spends.String(), nil, "complexity")
	})
}

// TestFiltersAreBounded: a filter of 30,000 alternatives took 10 s on
// PostgreSQL, and 70,000 ids past its parameter limit answered INTERNAL.
// Lists and filters are bounded before any query is made.
func TestFiltersAreBounded(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(alice, `{ viewer { id } }`, nil)
		a.ok(admin, `{ viewer { id } }`, nil)

		or := make([]map[string]any, graph.MaxListItems+1)
		for i := range or {
			or[i] = map[string]any{"createdAtGT": time.Unix(int64(i), 0).UTC().Format(time.RFC3339)}
		}
		history := `query($where: CreditTransactionWhereInput) { viewer { transactions(first: 10, where: $where) { edges { node { id } } } } }`
		r := a.limited(alice, history, map[string]any{"where": map[string]any{"or": or}}, "listItems")
		if r.Errors[0].Extensions["field"] != "where.or" {
			t.Fatalf("the refusal names %v, not where.or", r.Errors[0].Extensions["field"])
		}
		ids := make([]string, 70000)
		for i := range ids {
			ids[i] = fmt.Sprintf("t%d", i)
		}
		admins := `query($where: CreditTransactionWhereInput) { creditTransactions(first: 5, where: $where) { totalCount } }`
		a.limited(admin, admins, map[string]any{"where": map[string]any{"idIn": ids[:graph.MaxListItems+1]}}, "listItems")
		if r := a.gql(admin, admins, map[string]any{"where": map[string]any{"idIn": ids}}); r.status != 413 {
			t.Fatalf("70,000 ids: status %d %+v; want 413 (the body cap)", r.status, r.Errors)
		}

		// Within every list, but too many values in all.
		nested := make([]map[string]any, 40)
		for i := range nested {
			nested[i] = map[string]any{"kindIn": []string{"GRANT", "SPEND", "HOLD"}}
		}
		a.limited(alice, history, map[string]any{"where": map[string]any{"or": nested}}, "filterTerms")

		// A filter within the bounds runs, and costs its terms.
		a.ok(alice, history, map[string]any{"where": map[string]any{"or": or[:10]}})
	})
}

// TestArgumentsHoldToTheirTypes: a string of digits for an Int was spent, a
// malformed time answered INTERNAL, enum values matched in any case, and a
// NUL was INTERNAL on PostgreSQL but stored on SQLite.
func TestArgumentsHoldToTheirTypes(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		admin := token(t, "root", auth.RoleAdmin)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{"externalUserId": "alice", "amount": 100, "reason": "seed", "idempotencyKey": "seed"}})

		spend := func(fields map[string]any) map[string]any {
			input := map[string]any{"amount": 1, "idempotencyKey": fmt.Sprintf("k-%x", rand.Uint64())}
			for k, v := range fields {
				input[k] = v
			}
			return map[string]any{"input": input}
		}
		for name, c := range map[string]struct {
			vars  map[string]any
			code  string
			field string
		}{
			"digits for an Int":     {spend(map[string]any{"amount": "5"}), "GRAPHQL_VALIDATION_FAILED", "input.amount"},
			"a number for String":   {spend(map[string]any{"reason": 5}), "GRAPHQL_VALIDATION_FAILED", "input.reason"},
			"NUL in a reason":       {spend(map[string]any{"reason": "a\x00b"}), "INVALID_ARGUMENT", "input.reason"},
			"a control character":   {spend(map[string]any{"reason": "bell\x07"}), "INVALID_ARGUMENT", "input.reason"},
			"NUL in metadata":       {spend(map[string]any{"metadata": []map[string]any{{"key": "k", "value": "\x00"}}}), "INVALID_ARGUMENT", "input.metadata.0.value"},
			"NUL in an id":          {spend(map[string]any{"userId": "usr_\x00"}), "INVALID_ARGUMENT", "input.userId"},
			"NUL in a key":          {spend(map[string]any{"idempotencyKey": "k\x00"}), "INVALID_ARGUMENT", "input.idempotencyKey"},
			"a long metadata value": {spend(map[string]any{"metadata": []map[string]any{{"key": "k", "value": strings.Repeat("x", 501)}}}), "INVALID_ARGUMENT", ""},
			"300 KB of metadata":    {spend(map[string]any{"metadata": []map[string]any{{"key": "k", "value": strings.Repeat("x", 300<<10)}}}), "INVALID_ARGUMENT", ""},
		} {
			r := a.refused(alice, spendMutation, c.vars, c.code)
			if c.field != "" && r.Errors[0].Extensions["field"] != c.field {
				t.Errorf("%s: the error names %v, want %s (%s)", name, r.Errors[0].Extensions["field"], c.field, r.Errors[0].Message)
			}
		}
		// Free text keeps its line breaks and tabs.
		a.ok(alice, spendMutation, spend(map[string]any{"reason": "line one\n\tline two"}))

		// Metadata is bounded as Stripe bounds it.
		many := make([]map[string]any, 51)
		for i := range many {
			many[i] = map[string]any{"key": fmt.Sprintf("k%d", i), "value": "v"}
		}
		a.refused(alice, spendMutation, spend(map[string]any{"metadata": many}), "INVALID_ARGUMENT")
		a.refused(alice, spendMutation, spend(map[string]any{"metadata": []map[string]any{{"key": strings.Repeat("k", 41), "value": "v"}}}), "INVALID_ARGUMENT")

		grant := func(fields map[string]any) map[string]any {
			input := map[string]any{"externalUserId": "alice", "amount": 1, "reason": "r", "idempotencyKey": fmt.Sprintf("g-%x", rand.Uint64())}
			for k, v := range fields {
				input[k] = v
			}
			return map[string]any{"input": input}
		}
		r := a.refused(admin, grantMutation, grant(map[string]any{"expiresAt": "next tuesday"}), "INVALID_ARGUMENT")
		if r.Errors[0].Extensions["field"] != "input.expiresAt" {
			t.Errorf("a malformed time: %+v", r.Errors)
		}
		a.refused(admin, grantMutation, grant(map[string]any{"expiresAt": ""}), "INVALID_ARGUMENT")
		a.refused(admin, `mutation { grantCredits(input: {externalUserId: "alice", amount: 1, reason: "r", idempotencyKey: "lit", expiresAt: "soon"}) { replayed } }`, nil, "INVALID_ARGUMENT")

		// Enum values are matched exactly, as the specification says.
		a.refused(admin, `query($d: OrderDirection!) { users(first: 1, orderBy: {field: CREATED_AT, direction: $d}) { totalCount } }`,
			map[string]any{"d": "desc"}, "GRAPHQL_VALIDATION_FAILED")
		a.ok(admin, `query($d: OrderDirection!) { users(first: 1, orderBy: {field: CREATED_AT, direction: $d}) { totalCount } }`,
			map[string]any{"d": "DESC"})

		// A TTL past 2^63 nanoseconds wrapped to a 60 s reservation.
		reserve := `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { reservation { id expiresAt } } }`
		for _, ttl := range []any{36028797018964028, 86401, 0, -1} {
			a.refused(alice, reserve, map[string]any{"input": map[string]any{"amount": 1, "ttlSeconds": ttl, "idempotencyKey": fmt.Sprintf("ttl-%v", ttl)}}, "INVALID_ARGUMENT")
		}
		a.ok(alice, reserve, map[string]any{"input": map[string]any{"amount": 1, "ttlSeconds": 86400, "idempotencyKey": "ttl-ok"}})

		// Pack names and descriptions refuse control characters too.
		create := `mutation($input: CreateCreditPackageInput!) { createCreditPackage(input: $input) { creditPackage { id } } }`
		a.refused(admin, create, map[string]any{"input": map[string]any{"name": "Mega\x00", "credits": 10, "priceAmount": 100, "currency": "usd"}}, "INVALID_ARGUMENT")
	})
}

// TestExternalIDsAreOneRuleEverywhere: an externalUserId was trimmed for
// services and admins but a token's sub was not, so " alice" was another
// account for her token and alice herself for a service.
func TestExternalIDsAreOneRuleEverywhere(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		admin := token(t, "root", auth.RoleAdmin)
		service := token(t, "backend", auth.RoleService)
		a.ok(admin, grantMutation, map[string]any{"input": map[string]any{"externalUserId": "alice", "amount": 10, "reason": "seed", "idempotencyKey": "seed"}})

		for _, ext := range []string{" alice", "alice ", "\talice", "bad\x01id", ""} {
			a.refused(service, spendMutation, map[string]any{"input": map[string]any{"externalUserId": ext, "amount": 1, "idempotencyKey": "s"}}, "INVALID_ARGUMENT")
			a.refused(admin, grantMutation, map[string]any{"input": map[string]any{"externalUserId": ext, "amount": 1, "reason": "r", "idempotencyKey": "g"}}, "INVALID_ARGUMENT")
		}
		for _, sub := range []string{" alice", "alice "} {
			if _, err := auth.Mint([]byte(testSecret), auth.MintClaims{Subject: sub}, time.Hour); err == nil {
				t.Errorf("tally token minted a token for %q, which the server refuses", sub)
			}
			if r := a.gql(signedToken(t, sub), `{ viewer { id } }`, nil); r.status != 401 || r.code() != "UNAUTHENTICATED" {
				t.Errorf("token for %q: %d %+v", sub, r.status, r.Errors)
			}
		}
		if r := a.gql(signedToken(t, "alice", "email", "a\x00@example.com"), `{ viewer { id } }`, nil); r.status != 401 {
			t.Errorf("an email claim with NUL: %d %+v", r.status, r.Errors)
		}
	})
}
