package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// auditTools returns node and npm, or skips the test where they are not
// installed; CI installs them, and there a missing tool fails the test.
func auditTools(t *testing.T) (node, npm string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the graphql-http audit needs node and npm; CI installs them (see .ci/run)")
		}
		t.Skip("node and npm are not installed: the graphql-http audit does not run here (CI runs it)")
	}
	return node, npm
}

// installAudit installs the pinned graphql-http package in a directory of
// its own and returns it.
func installAudit(t *testing.T, npm string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json", "audit.mjs"} {
		data, err := os.ReadFile(filepath.Join("testdata", "graphql-http", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	return dir
}

type auditResult struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// TestGraphQLOverHTTPAudit runs the reference suite of the GraphQL over
// HTTP specification (graphql-http's server audit) against a real server,
// in development and in production: every MUST (error) and every SHOULD
// (warn) must pass. MAY items (notice) are reported, not required. The
// suite's queries use __type, so production runs with introspection on;
// everything else about it (no suggestions, its limits) is production's.
func TestGraphQLOverHTTPAudit(t *testing.T) {
	node, npm := auditTools(t)
	dir := installAudit(t, npm)
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		for name, env := range map[string]map[string]string{"development": nil, "production": with(production, "TALLY_INTROSPECTION", "true")} {
			a := newAPI(t, db, env)
			out, err := exec.Command(node, filepath.Join(dir, "audit.mjs"), a.ts.URL+"/graphql").Output()
			if err != nil {
				t.Fatalf("%s: the audit failed to run: %v", name, err)
			}
			var passed, notices int
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				var r auditResult
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatalf("%s: audit output %q: %v", name, sc.Text(), err)
				}
				switch r.Status {
				case "ok":
					passed++
				case "notice":
					notices++
				default:
					t.Errorf("%s: %s %s: %s (%s)", name, r.ID, r.Name, r.Status, r.Reason)
				}
			}
			if passed < 30 {
				t.Fatalf("%s: only %d audits passed; the suite did not run in full:\n%s", name, passed, out)
			}
			t.Logf("%s: %d audits passed, %d optional ones not met", name, passed, notices)
		}
	})
}

// TestGraphQLOverHTTPStatuses pins what the audit checks, so that it is
// tested where node is not installed too: request errors are 200 for a JSON
// client and 400 without data for a graphql-response+json one; no Accept
// means JSON; a mutation over GET is 405 with Allow: POST.
func TestGraphQLOverHTTPStatuses(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		alice := token(t, "alice", auth.RoleUser)
		post := func(accept, body string) (*http.Response, map[string]json.RawMessage) {
			req, _ := http.NewRequest(http.MethodPost, a.ts.URL+"/graphql", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			return send(t, req)
		}
		for _, c := range []struct {
			body          string
			json, graphql int
		}{
			{`{"query":"{"}`, 200, 400},        // does not parse
			{`{"query":"{ nope }"}`, 200, 400}, // does not validate
			{`{"query":"query($n: Int!) { __typename }","variables":{"n":"x"}}`, 200, 400}, // variables do not fit
			{`{"query":`, 400, 400},   // not JSON
			{`{"query":1}`, 400, 400}, // query not a string
			{`{}`, 400, 400},          // no query
		} {
			for accept, want := range map[string]int{"": c.json, "application/json": c.json, "*/*": c.json, "application/graphql-response+json": c.graphql} {
				resp, body := post(accept, c.body)
				media := "application/json"
				if accept == "application/graphql-response+json" {
					media = accept
				}
				if resp.StatusCode != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), media) {
					t.Errorf("%s with Accept %q: %d %s; want %d %s", c.body, accept, resp.StatusCode, resp.Header.Get("Content-Type"), want, media)
				}
				if _, ok := body["data"]; ok {
					t.Errorf("%s with Accept %q: a request error has a data entry", c.body, accept)
				}
				if len(body["errors"]) == 0 {
					t.Errorf("%s with Accept %q: no errors", c.body, accept)
				}
			}
		}
		if resp, _ := post("text/html", `{"query":"{ __typename }"}`); resp.StatusCode != 406 {
			t.Errorf("Accept: text/html: %d, want 406", resp.StatusCode)
		}

		get := func(query string) *http.Request {
			req, _ := http.NewRequest(http.MethodGet, a.ts.URL+"/graphql?query="+url.QueryEscape(query), nil)
			return req
		}
		if resp, body := send(t, get(`{ __typename }`)); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || len(body["data"]) == 0 {
			t.Errorf("GET without Accept: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		req := get(`mutation { spendCredits(input: {amount: 1, idempotencyKey: "get"}) { replayed } }`)
		req.Header.Set("Authorization", "Bearer "+alice)
		before := moneyDigest(t, db)
		if resp, _ := send(t, req); resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Errorf("a mutation over GET: %d, Allow %q; want 405, POST", resp.StatusCode, resp.Header.Get("Allow"))
		}
		if moneyDigest(t, db) != before {
			t.Error("a mutation over GET moved credits")
		}
	})
}

func send(t *testing.T, req *http.Request) (*http.Response, map[string]json.RawMessage) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}
