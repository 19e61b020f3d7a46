package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/outbound/outboundtest"
	"github.com/tally-billing/tally/internal/testdb"
)

// autoRechargeView is a user's auto-recharge and balance as they see them.
type autoRechargeView struct {
	CreditsBalance int64
	AutoRecharge   struct {
		Status                 string
		LastError              *string
		LastRechargeAt         *string
		ChargedThisMonthAmount int64
		PaymentMethod          *struct {
			Brand, Last4 string
			ExpYear      int
		}
	}
}

func viewAutoRecharge(t *testing.T, base, token string) autoRechargeView {
	t.Helper()
	var data struct{ Viewer autoRechargeView }
	graphql(t, base, token, `{ viewer { creditsBalance autoRecharge { status lastError lastRechargeAt chargedThisMonthAmount
		paymentMethod { brand last4 expYear } } } }`, nil, &data)
	return data.Viewer
}

// TestSimulateRecharge walks auto-recharge through a real server without
// Stripe, as the README does: a simulated card, setAutoRecharge, a spend
// below the threshold, then each outcome posted by simulate recharge;
// recharge.* events reach a registered endpoint in order.
func TestSimulateRecharge(t *testing.T) {
	for _, kind := range testdb.Kinds() {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir, url := t.TempDir(), testdb.NewEmpty(t, kind).URL
			// Declined recharges are tried again at the next movement.
			env := []string{"DATABASE_URL=" + url, "TALLY_RECHARGE_RETRY_AFTER=1ms"}
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

			rcv := outboundtest.New(t)
			var created struct {
				CreateWebhookEndpoint struct{ Secret string } `json:"createWebhookEndpoint"`
			}
			graphql(t, srv.base, admin, `mutation($url: String!) { createWebhookEndpoint(input: {url: $url,
				eventTypes: ["recharge.succeeded", "recharge.failed", "recharge.action_required", "recharge.disabled"]}) { secret } }`,
				map[string]any{"url": rcv.URL}, &created)
			rcv.Trust(created.CreateWebhookEndpoint.Secret)

			if out := simulate(0, "card", "--user", "alice"); !strings.Contains(out, "card saved: visa 4242") || !strings.Contains(out, "customer cus_sim_usr_") {
				t.Fatalf("simulate card: %s", out)
			}
			v := viewAutoRecharge(t, srv.base, alice)
			if pm := v.AutoRecharge.PaymentMethod; pm == nil || pm.Brand != "visa" || pm.Last4 != "4242" || pm.ExpYear <= time.Now().Year() {
				t.Fatalf("the saved card: %+v", v.AutoRecharge)
			}
			var packs struct {
				CreditPackages []struct {
					ID      string
					Credits int64
				}
			}
			graphql(t, srv.base, alice, `{ creditPackages { id credits } }`, nil, &packs)
			pack := packs.CreditPackages[0] // Starter: 100 credits for 500
			graphql(t, srv.base, admin, `mutation { grantCredits(input: {externalUserId: "alice", amount: 150, reason: "test", idempotencyKey: "g1"}) { transaction { id } } }`, nil, nil)
			setAutoRecharge := `mutation($pkg: ID!) { setAutoRecharge(input: {enabled: true, thresholdCredits: 100, packageId: $pkg,
				monthlyLimitAmount: 100000}) { autoRecharge { status } } }`
			graphql(t, srv.base, alice, setAutoRecharge, map[string]any{"pkg": pack.ID}, nil)

			// Nothing in flight above the threshold.
			if out := simulate(1, "recharge", "--user", "alice"); !strings.Contains(out, "no recharge in flight: turn auto-recharge on (setAutoRecharge) and spend below the threshold") {
				t.Fatalf("no recharge: %s", out)
			}
			spend(60) // 90: below 100
			if out := simulate(0, "recharge", "--user", "alice"); !strings.Contains(out, " outcome applied (webhook answered 200)") || !strings.HasPrefix(out, "pay_") {
				t.Fatalf("succeeded: %s", out)
			}
			v = viewAutoRecharge(t, srv.base, alice)
			if v.CreditsBalance != 190 || v.AutoRecharge.Status != "ACTIVE" || v.AutoRecharge.LastRechargeAt == nil || v.AutoRecharge.ChargedThisMonthAmount != 500 {
				t.Fatalf("after a recharge: %+v", v)
			}
			// The same outcome again: no recharge left in flight.
			simulate(1, "recharge", "--user", "alice")

			spend(100) // 90
			for round, want := range []string{"FAILING", "FAILING", "DISABLED"} {
				if round > 0 {
					spend(1) // still below: the next try, the wait (1ms) being over
				}
				simulate(0, "recharge", "--user", "alice", "--outcome", "declined")
				v = viewAutoRecharge(t, srv.base, alice)
				if v.AutoRecharge.Status != want || v.AutoRecharge.LastError == nil || !strings.Contains(*v.AutoRecharge.LastError, "declined") {
					t.Fatalf("decline %d: %+v, want %s", round+1, v.AutoRecharge, want)
				}
			}
			spend(1) // disabled: no recharge
			simulate(1, "recharge", "--user", "alice", "--outcome", "declined")
			if v = viewAutoRecharge(t, srv.base, alice); v.CreditsBalance != 87 {
				t.Fatalf("balance %d after three declines, want 87", v.CreditsBalance)
			}

			// On again, below the threshold: a recharge starts at once.
			graphql(t, srv.base, alice, setAutoRecharge, map[string]any{"pkg": pack.ID}, nil)
			simulate(0, "recharge", "--user", "alice", "--outcome", "authentication_required")
			if v = viewAutoRecharge(t, srv.base, alice); v.AutoRecharge.Status != "ACTION_REQUIRED" || v.CreditsBalance != 87 {
				t.Fatalf("authentication required: %+v", v)
			}
			// A decline cannot end a recharge that waits for the customer.
			if out := simulate(1, "recharge", "--user", "alice", "--outcome", "declined"); !strings.Contains(out, "outcome ignored") || !strings.Contains(out, "AWAITING_PAYMENT") {
				t.Fatalf("declined while waiting: %s", out)
			}
			simulate(0, "recharge", "--user", "alice")
			if v = viewAutoRecharge(t, srv.base, alice); v.AutoRecharge.Status != "ACTIVE" || v.CreditsBalance != 187 {
				t.Fatalf("completed: %+v", v)
			}

			want := []string{"recharge.succeeded", "recharge.failed", "recharge.failed", "recharge.failed", "recharge.disabled",
				"recharge.action_required", "recharge.succeeded"}
			got := rcv.WaitAccepted(len(want), 20*time.Second)
			var types []string
			for _, d := range got {
				types = append(types, d.Type)
			}
			if !slices.Equal(types, want) {
				t.Fatalf("events %v, want %v", types, want)
			}
			if secret, _ := got[5].Data["clientSecret"].(string); !strings.HasPrefix(secret, "pi_sim_pay_") {
				t.Fatalf("recharge.action_required without the intent's client secret: %v", got[5].Data)
			}

			if out := simulate(1, "recharge", "--user", "nobody"); !strings.Contains(out, `--user: no user "nobody"`) {
				t.Fatalf("unknown user: %s", out)
			}
		})
	}
}
