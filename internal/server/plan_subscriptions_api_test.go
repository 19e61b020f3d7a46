package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/ent/creditplan"
	"github.com/tally-billing/tally/ent/creditsubscription"
	"github.com/tally-billing/tally/ent/payment"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// planFixture is a plan and its subscribers, written to the database as the
// payments side would leave them.
type planFixture struct {
	t    *testing.T
	db   *database.DB
	plan *ent.CreditPlan
	at   time.Time // the next subscription's creation time
}

func newPlanFixture(t *testing.T, db *database.DB) *planFixture {
	plan := db.Ent.CreditPlan.Create().SetName("Monthly").SetCreditsPerPeriod(1000).SetInterval(creditplan.IntervalMonth).
		SetPriceAmount(900).SetCurrency("usd").SaveX(context.Background())
	return &planFixture{t: t, db: db, plan: plan, at: time.Now().UTC().Add(-time.Hour)}
}

// userID provisions a user as their first request would.
func (f *planFixture) userID(externalID string) string {
	return f.db.Ent.User.Create().SetExternalID(externalID).SaveX(context.Background()).ID
}

// subscribe writes a subscription of the user, a second after the one
// before; a stripeID makes it one Stripe knows.
func (f *planFixture) subscribe(userID string, status creditsubscription.Status, stripeID string) *ent.CreditSubscription {
	f.at = f.at.Add(time.Second)
	create := f.db.Ent.CreditSubscription.Create().SetUserID(userID).SetPlanID(f.plan.ID).SetStatus(status).SetCreatedAt(f.at)
	if stripeID != "" {
		create.SetStripeSubscriptionID(stripeID).
			SetCurrentPeriodStart(f.at).SetCurrentPeriodEnd(f.at.AddDate(0, 1, 0))
	}
	return create.SaveX(context.Background())
}

func edgeIDs(t *testing.T, r result, path ...string) []string {
	t.Helper()
	var ids []string
	for _, e := range r.get(t, append(path, "edges")...).([]any) {
		ids = append(ids, e.(map[string]any)["node"].(map[string]any)["id"].(string))
	}
	return ids
}

// TestAPIUserSubscriptions: a user's subscriptions, newest first, seen by
// the user and by admins; another user's are out of reach, by node too.
func TestAPIUserSubscriptions(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		f := newPlanFixture(t, db)
		admin, alice, bob := token(t, "root", auth.RoleAdmin), token(t, "alice", auth.RoleUser), token(t, "bob", auth.RoleUser)
		service := token(t, "app", auth.RoleService)
		aliceID, bobID := f.userID("alice"), f.userID("bob")
		old := f.subscribe(aliceID, creditsubscription.StatusCanceled, "sub_old")
		current := f.subscribe(aliceID, creditsubscription.StatusActive, "sub_current")
		bobs := f.subscribe(bobID, creditsubscription.StatusIncomplete, "")

		mine := `{ viewer { subscriptions { totalCount totalCountCapped edges { node { id status cancelAtPeriodEnd currentPeriodEnd plan { name } user { externalId } } } } } }`
		r := a.ok(alice, mine, nil)
		if ids := edgeIDs(t, r, "viewer", "subscriptions"); fmt.Sprint(ids) != fmt.Sprint([]string{current.ID, old.ID}) {
			t.Fatalf("alice's subscriptions %v, want newest first %v", ids, []string{current.ID, old.ID})
		}
		if r.get(t, "viewer", "subscriptions", "totalCount") != float64(2) || r.get(t, "viewer", "subscriptions", "totalCountCapped") != false ||
			r.get(t, "viewer", "subscriptions", "edges", "0", "node", "plan", "name") != "Monthly" ||
			r.get(t, "viewer", "subscriptions", "edges", "0", "node", "status") != "ACTIVE" {
			t.Fatalf("alice's subscriptions: %s", r.Data)
		}
		r = a.ok(bob, mine, nil)
		if ids := edgeIDs(t, r, "viewer", "subscriptions"); fmt.Sprint(ids) != fmt.Sprint([]string{bobs.ID}) {
			t.Fatalf("bob sees %v, want only his own", ids)
		}
		// Pages: backwards and forwards from a cursor.
		r = a.ok(alice, `{ viewer { subscriptions(first: 1) { pageInfo { hasNextPage endCursor } edges { node { id } } } } }`, nil)
		if r.get(t, "viewer", "subscriptions", "pageInfo", "hasNextPage") != true {
			t.Fatalf("first page: %s", r.Data)
		}
		r = a.ok(alice, `query($c: Cursor) { viewer { subscriptions(first: 1, after: $c) { edges { node { id } } } } }`,
			map[string]any{"c": r.get(t, "viewer", "subscriptions", "pageInfo", "endCursor")})
		if ids := edgeIDs(t, r, "viewer", "subscriptions"); fmt.Sprint(ids) != fmt.Sprint([]string{old.ID}) {
			t.Fatalf("second page %v, want the older subscription", ids)
		}

		// An admin sees anyone's, through user and the admin list.
		r = a.ok(admin, `query($id: ID!) { user(id: $id) { subscriptions { edges { node { id } } } } }`, map[string]any{"id": aliceID})
		if ids := edgeIDs(t, r, "user", "subscriptions"); len(ids) != 2 {
			t.Fatalf("admin reading alice's subscriptions: %s", r.Data)
		}
		list := `query($w: CreditSubscriptionWhereInput) { subscriptions(first: 10, where: $w) { totalCount totalCountCapped edges { node { id user { externalId } } } } }`
		r = a.ok(admin, list, nil)
		if ids := edgeIDs(t, r, "subscriptions"); fmt.Sprint(ids) != fmt.Sprint([]string{bobs.ID, current.ID, old.ID}) {
			t.Fatalf("admin list %v, want every subscription newest first", ids)
		}
		r = a.ok(admin, list, map[string]any{"w": map[string]any{"userID": aliceID, "status": "ACTIVE"}})
		if ids := edgeIDs(t, r, "subscriptions"); fmt.Sprint(ids) != fmt.Sprint([]string{current.ID}) {
			t.Fatalf("admin list filtered by user and status: %v", ids)
		}
		// Filters on unindexed fields are not offered.
		a.refused(admin, list, map[string]any{"w": map[string]any{"cancelAtPeriodEnd": true}}, "GRAPHQL_VALIDATION_FAILED")
		a.refused(admin, list, map[string]any{"w": map[string]any{"planID": f.plan.ID}}, "GRAPHQL_VALIDATION_FAILED")
		for _, tok := range []string{alice, service} {
			a.refused(tok, list, nil, "FORBIDDEN")
		}

		// Nodes: the owner and admins; nobody else, as if it did not exist.
		node := `query($id: ID!) { node(id: $id) { id ... on CreditSubscription { status plan { name } } } }`
		for _, tok := range []string{alice, admin} {
			if r := a.ok(tok, node, map[string]any{"id": current.ID}); r.get(t, "node", "id") != current.ID {
				t.Fatalf("node(alice's subscription): %s", r.Data)
			}
		}
		for _, tok := range []string{bob, service, ""} {
			a.refused(tok, node, map[string]any{"id": current.ID}, "NOT_FOUND")
		}
		a.refused(alice, node, map[string]any{"id": "sub_01jd6m3v9q8x0n2k4t7w5y1zbc"}, "NOT_FOUND")
	})
}

// TestAPIUserSubscriptionsAreBounded: pages are of the usual sizes, and a
// list of users pays a read for each user's subscriptions.
func TestAPIUserSubscriptionsAreBounded(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		f := newPlanFixture(t, db)
		alice, admin := token(t, "alice", auth.RoleUser), token(t, "root", auth.RoleAdmin)
		aliceID := f.userID("alice")
		for range 25 {
			f.subscribe(aliceID, creditsubscription.StatusCanceled, "")
		}
		r := a.ok(alice, `{ viewer { subscriptions { totalCount pageInfo { hasNextPage } edges { node { id } } } } }`, nil)
		if n := len(edgeIDs(t, r, "viewer", "subscriptions")); n != 20 || r.get(t, "viewer", "subscriptions", "totalCount") != float64(25) ||
			r.get(t, "viewer", "subscriptions", "pageInfo", "hasNextPage") != true {
			t.Fatalf("a page without first: %d subscriptions, %s", n, r.Data)
		}
		a.refused(alice, `{ viewer { subscriptions(first: 101) { totalCount } } }`, nil, "INVALID_ARGUMENT")
		a.refused(alice, `{ viewer { subscriptions(first: 1, last: 1) { totalCount } } }`, nil, "INVALID_ARGUMENT")
		a.ok(admin, `{ users(first: 10) { edges { node { subscriptions(first: 5) { edges { node { id status } } } } } } }`, nil)
		a.limited(admin, `{ users(first: 100) { edges { node { subscriptions { edges { node { id status plan { name } } } } } } } }`, nil, "complexity")
	})
}

// TestAPISubscriptionPayments: a subscription's payment names its plan and
// subscription, and no pack.
func TestAPISubscriptionPayments(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		ctx := context.Background()
		a := newAPI(t, db, nil)
		f := newPlanFixture(t, db)
		aliceID := f.userID("alice")
		sub := f.subscribe(aliceID, creditsubscription.StatusActive, "sub_alice")
		db.Ent.Payment.Create().SetUserID(aliceID).SetKind(payment.KindSUBSCRIPTION).SetPlanID(f.plan.ID).SetSubscriptionID(sub.ID).
			SetStripeInvoiceID("in_1").SetAmount(900).SetCurrency("usd").SetCredits(1000).SetStatus(payment.StatusSucceeded).
			SetPeriodStart(*sub.CurrentPeriodStart).SetPeriodEnd(*sub.CurrentPeriodEnd).SaveX(ctx)
		r := a.ok(token(t, "alice", auth.RoleUser), `{ viewer { payments { edges { node {
			kind packageId planId stripeInvoiceId periodEnd package { id } plan { name } subscription { id status } } } } } }`, nil)
		p := r.get(t, "viewer", "payments", "edges", "0", "node").(map[string]any)
		if p["kind"] != "SUBSCRIPTION" || p["package"] != nil || p["packageId"] != nil || p["planId"] != f.plan.ID ||
			p["stripeInvoiceId"] != "in_1" || p["periodEnd"] == nil ||
			r.get(t, "viewer", "payments", "edges", "0", "node", "plan", "name") != "Monthly" ||
			r.get(t, "viewer", "payments", "edges", "0", "node", "subscription", "id") != sub.ID {
			t.Fatalf("a subscription's payment: %s", r.Data)
		}
	})
}
