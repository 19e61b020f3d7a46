package graph

import (
	"testing"

	"github.com/tally-billing/tally/graph/generated"
)

// publicFields may be used without a token; every other root field must
// carry an authorization directive.
var publicFields = map[string]bool{"creditPackages": true, "creditPlans": true, "node": true, "nodes": true}

// adminFields must be guarded by @admin itself, not by a role list that
// could grow by mistake.
var adminFields = map[string]bool{
	"users": true, "user": true, "payments": true, "creditTransactions": true,
	"adminActions": true, "processedEvents": true, "ledgerReport": true,
	"grantCredits": true, "revokeCredits": true, "freezeUser": true, "unfreezeUser": true,
	"createCreditPackage": true, "updateCreditPackage": true, "refundPayment": true, "replayStripeEvent": true,
	"createCreditPlan": true, "updateCreditPlan": true, "subscriptions": true,
}

// TestEveryRootFieldIsGuarded walks the schema: a new Query, Mutation or
// Subscription field without @admin or @hasRole fails here.
func TestEveryRootFieldIsGuarded(t *testing.T) {
	schema := generated.NewExecutableSchema(generated.Config{Resolvers: &Resolver{}, Directives: directives()}).Schema()
	seen := map[string]bool{}
	for _, root := range []string{"Query", "Mutation", "Subscription"} {
		def := schema.Types[root]
		if def == nil {
			t.Fatalf("no %s type", root)
		}
		for _, f := range def.Fields {
			if len(f.Name) > 1 && f.Name[:2] == "__" {
				continue
			}
			seen[f.Name] = true
			guarded := f.Directives.ForName("admin") != nil || f.Directives.ForName("hasRole") != nil
			switch {
			case publicFields[f.Name] && guarded:
				t.Errorf("%s.%s is listed as public but carries a directive", root, f.Name)
			case !publicFields[f.Name] && !guarded:
				t.Errorf("%s.%s has neither @admin nor @hasRole", root, f.Name)
			case adminFields[f.Name] && f.Directives.ForName("admin") == nil:
				t.Errorf("%s.%s is an admin field without @admin", root, f.Name)
			}
		}
	}
	for name := range adminFields {
		if !seen[name] {
			t.Errorf("admin field %s is not in the schema any more; update the list", name)
		}
	}
}

// TestEveryPageFieldCarriesPage walks every type of the schema: a field with
// a first argument and no @page would read as many rows as asked, or all of
// them when first is left out.
func TestEveryPageFieldCarriesPage(t *testing.T) {
	schema := generated.NewExecutableSchema(generated.Config{Resolvers: &Resolver{}, Directives: directives()}).Schema()
	pages := 0
	for name, def := range schema.Types {
		if len(name) > 1 && name[:2] == "__" {
			continue
		}
		for _, f := range def.Fields {
			if f.Arguments.ForName("first") == nil {
				if f.Directives.ForName("page") != nil {
					t.Errorf("%s.%s carries @page but has no first argument", name, f.Name)
				}
				continue
			}
			pages++
			if f.Directives.ForName("page") == nil {
				t.Errorf("%s.%s takes first but has no @page", name, f.Name)
			}
		}
	}
	// The user's and admins' lists, the statement's, a payment's and the
	// job list: fewer means the walk missed types.
	if pages < 16 {
		t.Errorf("found %d fields with first; the schema has at least 16", pages)
	}
}
