package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
	"github.com/vektah/gqlparser/v2/validator"

	"github.com/tally-billing/tally/graph/generated"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/testdb"
)

// cpuTime is the CPU the whole test process has used (server and client).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHostileQueryRefusal measures what the review's CPU attack costs
// now: each hostile document (a random comment, then N repeated fields) is
// posted to a real server and refused by the query guard. Beside it, in the
// same run, a trivial query and what validating the same documents would
// cost without the guard (gqlparser in process). Report cpu-µs/op (the
// process's CPU per request, client included) against the trivial query's:
//
//	go test -run '^$' -bench HostileQueryRefusal ./internal/server
func BenchmarkHostileQueryRefusal(b *testing.B) {
	_, _, ts := benchServer(b, testdb.SQLite)
	alice := token(b, "alice", auth.RoleUser)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	// post sends a body and checks the answer: the status, and a refusal
	// (INVALID_ARGUMENT) for the attack or data for the trivial query.
	post := func(tok string, body []byte, want int, refused bool) {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ok := resp.StatusCode == want
		if want == 200 {
			ok = ok && bytes.Contains(out, []byte("INVALID_ARGUMENT")) == refused && bytes.Contains(out, []byte(`"data"`)) != refused
		}
		if !ok {
			b.Fatalf("%.40q…: %d %s", body, resp.StatusCode, out)
		}
	}
	attack := func(n, i int) string { return fmt.Sprintf("#%d\n{ %s}", i, strings.Repeat("__typename ", n)) }
	cases := []struct {
		name   string
		tok    string
		fields int // 0: the trivial query
		status int
	}{
		{"trivial/anonymous", "", 0, 200},
		{"trivial/token", alice, 0, 200},
		{"refused/anonymous-50", "", 50, 200},     // repeated names
		{"refused/anonymous-300", "", 300, 200},   // fields
		{"refused/anonymous-500", "", 500, 200},   // query bytes
		{"refused/anonymous-4000", "", 4000, 413}, // the body cap
		{"refused/token-200", alice, 200, 200},    // repeated names
		{"refused/token-1000", alice, 1000, 200},  // fields
		{"refused/token-4000", alice, 4000, 200},  // query bytes
		{"refused/token-12000", alice, 12000, 413},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// The body is encoded once, with a fixed-width comment the loop
			// rewrites, so that the client's share of the CPU stays small
			// and every request is a query the server has not seen.
			query := "#0000000000\n{ __typename }"
			if c.fields > 0 {
				query = attack(c.fields, 0)
				query = "#0000000000" + query[strings.IndexByte(query, '\n'):]
			}
			body, _ := json.Marshal(map[string]string{"query": query})
			digits := bytes.Index(body, []byte("#0000000000")) + 1
			start, i := cpuTime(), 0
			for b.Loop() {
				copy(body[digits:digits+10], fmt.Sprintf("%010d", i))
				post(c.tok, body, c.status, c.fields > 0)
				i++
			}
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}

	// Without the guard: parsing and validating the same documents.
	schema := generated.NewExecutableSchema(generated.Config{}).Schema()
	for _, n := range []int{50, 200, 300, 1000} {
		b.Run(fmt.Sprintf("unguarded-validation/%d", n), func(b *testing.B) {
			start, i := cpuTime(), 0
			for b.Loop() {
				doc, err := parser.ParseQuery(&ast.Source{Input: attack(n, i)})
				if err != nil {
					b.Fatal(err)
				}
				if errs := validator.Validate(schema, doc); len(errs) > 0 {
					b.Fatal(errs)
				}
				i++
			}
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
