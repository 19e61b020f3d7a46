package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/testdb"
)

// subscriptionView is a user's balance and subscriptions as they see them.
type subscriptionView struct {
	CreditsBalance int64
	Subscriptions  struct {
		Edges []struct {
			Node struct {
				ID                string
				Status            string
				CurrentPeriodEnd  time.Time
				CancelAtPeriodEnd bool
				Plan              struct{ Name string }
			}
		}
	}
}

func viewSubscriptions(t *testing.T, base, token string) subscriptionView {
	t.Helper()
	var data struct{ Viewer subscriptionView }
	graphql(t, base, token, `{ viewer { creditsBalance subscriptions(first: 5) { edges { node {
		id status currentPeriodEnd cancelAtPeriodEnd plan { name } } } } } }`, nil, &data)
	return data.Viewer
}

// TestSimulateSubscription walks a subscription to the demo plan "Starter
// monthly" (1,000 credits a month, up to 500 rolled over) through a real
// server without Stripe, as the README does: subscribe, spend, renew (the
// rollover), a failed renewal (PAST_DUE) paid by the next renew, a
// cancellation at the period's end and then now; what Stripe would not
// send is refused before anything is posted; subscription.* events reach a
// registered endpoint in order.
func TestSimulateSubscription(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir, url := t.TempDir(), testdb.NewEmpty(t, kind).URL
			env := []string{"DATABASE_URL=" + url}
			srv := startServe(t, dir, env)
			admin := mint(t, dir, env, "--sub", "root", "--role", "admin")
			alice := mint(t, dir, env, "--sub", "alice")
			simulate := func(want int, args ...string) string {
				t.Helper()
				out, stderr, code := run(t, dir, env, append([]string{"simulate", "--server", srv.base}, args...)...)
				if code != want {
					t.Fatalf("simulate %v: exit %d, want %d\n%s%s", args, code, want, out, stderr)
				}
				return out + stderr
			}
			spends := 0
			spend := func(n int) {
				t.Helper()
				spends++
				graphql(t, srv.base, alice, fmt.Sprintf(`mutation { spendCredits(input: {amount: %d, idempotencyKey: "s%d"}) { transaction { id } } }`, n, spends), nil, nil)
			}
			view := func(balance int64, status string) subscriptionView {
				t.Helper()
				v := viewSubscriptions(t, srv.base, alice)
				if v.CreditsBalance != balance || len(v.Subscriptions.Edges) != 1 || v.Subscriptions.Edges[0].Node.Status != status ||
					v.Subscriptions.Edges[0].Node.Plan.Name != "Starter monthly" {
					t.Fatalf("viewer %+v, want balance %d and one %s subscription to Starter monthly", v, balance, status)
				}
				return v
			}

			rcv := outboundtest.New(t)
			var created struct {
				CreateWebhookEndpoint struct{ Secret string } `json:"createWebhookEndpoint"`
			}
			graphql(t, srv.base, admin, `mutation($url: String!) { createWebhookEndpoint(input: {url: $url,
				eventTypes: ["subscription.activated", "subscription.renewed", "subscription.past_due", "subscription.canceled"]}) { secret } }`,
				map[string]any{"url": rcv.URL}, &created)
			rcv.Trust(created.CreateWebhookEndpoint.Secret)

			db := testdb.Open(t, url)
			plan := db.Ent.CreditPlan.Query().Where(creditplan.Name("Starter monthly")).OnlyX(context.Background())

			out := simulate(0, "subscribe", "--user", "alice", "--plan", plan.ID)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "sub_") ||
				!strings.HasSuffix(lines[0], " checkout.session.completed outcome applied (webhook answered 200)") ||
				!strings.HasSuffix(lines[1], " invoice.paid outcome applied (webhook answered 200)") {
				t.Fatalf("subscribe: %s", out)
			}
			subID := strings.Fields(lines[0])[0]
			v := view(1000, "ACTIVE")
			firstEnd := v.Subscriptions.Edges[0].Node.CurrentPeriodEnd
			if v.Subscriptions.Edges[0].Node.ID != subID || firstEnd.Before(time.Now().AddDate(0, 1, -1)) || firstEnd.After(time.Now().AddDate(0, 1, 1)) {
				t.Fatalf("after subscribe: %+v", v)
			}
			if out := simulate(1, "subscribe", "--user", "alice", "--plan", plan.ID); !strings.Contains(out, "alice already has a subscription") {
				t.Fatalf("a second subscription: %s", out)
			}

			spend(300) // 700 left
			if out := simulate(0, "renew", "--user", "alice"); strings.Count(out, subID+" ") != 2 ||
				!strings.Contains(out, " invoice.paid outcome applied") || !strings.Contains(out, " customer.subscription.updated outcome applied") {
				t.Fatalf("renew: %s", out)
			}
			// January's 700 expire, 500 of them roll over; February's 1,000.
			v = view(1500, "ACTIVE")
			if end := v.Subscriptions.Edges[0].Node.CurrentPeriodEnd; !end.Equal(firstEnd.AddDate(0, 1, 0)) {
				t.Fatalf("period end %v after renew, want %v", end, firstEnd.AddDate(0, 1, 0))
			}

			if out := simulate(0, "fail-renewal", "--user", "alice"); !strings.Contains(out, subID+" invoice.payment_failed outcome applied") {
				t.Fatalf("fail-renewal: %s", out)
			}
			view(1500, "PAST_DUE")
			spend(1200) // 300 left
			// Stripe's retry pays the invoice that failed.
			simulate(0, "renew", "--subscription", subID)
			view(1300, "ACTIVE")

			simulate(0, "cancel", "--user", "alice", "--at-period-end")
			if v := view(1300, "ACTIVE"); !v.Subscriptions.Edges[0].Node.CancelAtPeriodEnd {
				t.Fatalf("cancel --at-period-end: %+v", v)
			}
			if out := simulate(1, "renew", "--user", "alice"); !strings.Contains(out, "cancels at the end of its period") {
				t.Fatalf("renew of a subscription ending: %s", out)
			}
			if out := simulate(0, "cancel", "--subscription", subID, "--user", "alice"); !strings.Contains(out, subID+" customer.subscription.deleted outcome applied") {
				t.Fatalf("cancel: %s", out)
			}
			view(1300, "CANCELED") // what was granted stays until it expires
			for _, args := range [][]string{{"renew", "--user", "alice"}, {"fail-renewal", "--user", "alice"}, {"cancel", "--user", "alice"}} {
				if out := simulate(1, args...); !strings.Contains(out, "is CANCELED: Stripe sends nothing more about it") {
					t.Fatalf("%v of a canceled subscription: %s", args, out)
				}
			}

			want := []string{"subscription.activated", "subscription.renewed", "subscription.past_due", "subscription.renewed", "subscription.canceled"}
			got := rcv.WaitAccepted(len(want), 20*time.Second)
			var types []string
			for _, d := range got {
				types = append(types, d.Type)
			}
			if !slices.Equal(types, want) {
				t.Fatalf("events %v, want %v", types, want)
			}

			for args, want := range map[string]string{
				"renew --user nobody":                      `nobody has no subscription (simulate subscribe makes one)`,
				"cancel --subscription sub_nope":           `no subscription "sub_nope"`,
				"renew --user bob --subscription " + subID: `bob has no subscription "` + subID + `"`,
				"subscribe --user bob --plan pln_nope":     `no credit plan with id "pln_nope"`,
			} {
				if out := simulate(1, strings.Fields(args)...); !strings.Contains(out, want) {
					t.Errorf("%s: %s; want %q", args, out, want)
				}
			}
			// A subscription whose Checkout is not paid has not begun.
			inactive := db.Ent.CreditSubscription.Create().SetUserID(db.Ent.CreditSubscription.GetX(context.Background(), subID).UserID).
				SetPlanID(plan.ID).SaveX(context.Background())
			if out := simulate(1, "renew", "--subscription", inactive.ID); !strings.Contains(out, "has not begun (INCOMPLETE): simulate subscribe pays its first invoice") {
				t.Fatalf("renew of an INCOMPLETE subscription: %s", out)
			}
			// Every grant, expiry and rollover balances.
			if out, stderr, code := run(t, dir, env, "reconcile"); code != 0 || !strings.Contains(out, "every invariant holds") {
				t.Fatalf("reconcile after the walk: exit %d\n%s%s", code, out, stderr)
			}
		})
	}
}

func TestSimulateSubscriptionCommandLineMistakes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"subscribe without a plan", []string{"subscribe", "--user", "alice"}, "--plan is required"},
		{"subscribe without a user", []string{"subscribe", "--plan", "pln_x"}, "--user is required"},
		{"plan id with a control character", []string{"subscribe", "--user", "alice", "--plan", "pln_\x01"}, "--plan"},
		{"renew of nobody", []string{"renew"}, "--user or --subscription is required"},
		{"fail-renewal of nobody", []string{"fail-renewal"}, "--user or --subscription is required"},
		{"cancel with a long id", []string{"cancel", "--subscription", "sub_" + strings.Repeat("x", 100)}, "is not a subscription id"},
		{"cancel for a long user", []string{"cancel", "--user", strings.Repeat("u", 256)}, "--user is longer than 255 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := run(t, t.TempDir(), nil, append([]string{"simulate"}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and one line mentioning %q", code, stdout, stderr, c.want)
			}
		})
	}
}
