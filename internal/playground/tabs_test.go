package playground_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/validator"

	"github.com/tally-billing/tally/graph/generated"
	"github.com/tally-billing/tally/internal/playground"
)

// TestTabsAreValidAgainstTheSchema checks every opening tab the way the
// server would: each document parses and validates against the generated
// schema, and its variables fit every operation that declares them. A
// schema change that breaks a tab fails here, not in a user's browser.
func TestTabsAreValidAgainstTheSchema(t *testing.T) {
	schema := generated.NewExecutableSchema(generated.Config{}).Schema()
	tabs, err := playground.Tabs()
	if err != nil {
		t.Fatal(err)
	}
	// The main operations the issue names: history, a grant, a spend, a
	// purchase.
	want := []string{"viewer", "grantCredits", "spendCredits", "createCheckoutSession"}
	var all strings.Builder
	for i, tab := range tabs {
		doc, errs := gqlparser.LoadQuery(schema, tab.Query)
		if errs != nil {
			t.Errorf("tab %d does not validate: %v", i+1, errs)
			continue
		}
		all.WriteString(tab.Query)
		var vars map[string]any
		if tab.Variables != "" {
			if err := json.Unmarshal([]byte(tab.Variables), &vars); err != nil {
				t.Errorf("tab %d: variables: %v", i+1, err)
			}
		}
		for _, op := range doc.Operations {
			if op.Name == "" {
				t.Errorf("tab %d has an unnamed operation: GraphiQL titles tabs by name", i+1)
			}
			if len(op.VariableDefinitions) == 0 {
				continue
			}
			if _, err := validator.VariableValues(schema, op, vars); err != nil {
				t.Errorf("tab %d, %s: the variables do not fit: %v", i+1, op.Name, err)
			}
		}
	}
	for _, field := range want {
		if !strings.Contains(all.String(), field) {
			t.Errorf("no tab calls %s", field)
		}
	}
	if !strings.Contains(tabs[0].Query, "go run ./cmd/tally token --sub root --role admin") {
		t.Error("the first tab does not say how to get a token")
	}
}
