package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent/credittransaction"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/testdb"
)

func TestGrant(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")

		expires := e.clock.Now().Add(48 * time.Hour)
		res, err := e.l.Grant(ctx, admin, ledger.GrantRequest{
			UserID: u.ID, Amount: 100, ExpiresAt: &expires, Priority: 1, Reason: "welcome", IdempotencyKey: "g1",
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Balance != 100 || res.Amount != 100 || res.Replayed || res.Transaction.Kind != credittransaction.KindGrant {
			t.Fatalf("result %+v", res)
		}
		total, accounts := sumPostings(res)
		if total != 0 || !contains(accounts, "user:"+u.ID+":100") || !contains(accounts, ledger.AccountGrants+":-100") {
			t.Fatalf("postings %v", accounts)
		}
		if res.Transaction.Actor != "admin:usr_admin" || res.Transaction.Reason != "welcome" {
			t.Fatalf("transaction %+v", res.Transaction)
		}
		lots, err := e.l.Lots(ctx, u.ID)
		if err != nil || len(lots) != 1 || lots[0].Original != 100 || lots[0].Remaining != 100 ||
			lots[0].Priority != 1 || !lots[0].ExpiresAt.Equal(expires) {
			t.Fatalf("lots %+v %v", lots, err)
		}
		e.check()

		before := e.snapshot()
		for _, c := range []struct {
			name string
			req  ledger.GrantRequest
			code apperr.Code
		}{
			{"zero", ledger.GrantRequest{UserID: u.ID, Amount: 0, IdempotencyKey: "x1"}, apperr.InvalidArgument},
			{"negative", ledger.GrantRequest{UserID: u.ID, Amount: -5, IdempotencyKey: "x2"}, apperr.InvalidArgument},
			{"too large", ledger.GrantRequest{UserID: u.ID, Amount: ledger.MaxAmount + 1, IdempotencyKey: "x3"}, apperr.InvalidArgument},
			{"past expiry", ledger.GrantRequest{UserID: u.ID, Amount: 5, ExpiresAt: &e.clock.now, IdempotencyKey: "x4"}, apperr.InvalidArgument},
			{"unknown user", ledger.GrantRequest{UserID: "usr_01jd6m3v9q8x0n2k4t7w5y1zbc", Amount: 5, IdempotencyKey: "x5"}, apperr.NotFound},
			{"empty key", ledger.GrantRequest{UserID: u.ID, Amount: 5}, apperr.InvalidArgument},
			{"long key", ledger.GrantRequest{UserID: u.ID, Amount: 5, IdempotencyKey: strings.Repeat("k", 256)}, apperr.InvalidArgument},
			{"unprintable key", ledger.GrantRequest{UserID: u.ID, Amount: 5, IdempotencyKey: "a\nb"}, apperr.InvalidArgument},
			{"long reason", ledger.GrantRequest{UserID: u.ID, Amount: 5, Reason: strings.Repeat("r", 1001), IdempotencyKey: "x6"}, apperr.InvalidArgument},
			{"balance overflow", ledger.GrantRequest{UserID: u.ID, Amount: ledger.MaxAmount, IdempotencyKey: "x7"}, apperr.InvalidArgument},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := e.l.Grant(ctx, admin, c.req)
				e.t = t
				e.refused(err, c.code, before)
			})
		}
		e.t = t
		e.check()
	})
}

func TestSpendDrawsLotsInOrder(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		grant := func(amount int64, priority int, expiresIn time.Duration) string {
			req := ledger.GrantRequest{UserID: u.ID, Amount: amount, Priority: priority, IdempotencyKey: e.key()}
			if expiresIn > 0 {
				at := e.clock.Now().Add(expiresIn)
				req.ExpiresAt = &at
			}
			res, err := e.l.Grant(ctx, admin, req)
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Second)
			return *res.Transaction.Edges.Postings[0].LotID
		}
		noExpiryOld := grant(10, 0, 0)
		expiresLate := grant(10, 0, 72*time.Hour)
		expiresSoon := grant(10, 0, 24*time.Hour)
		lowPriority := grant(10, 5, time.Hour)
		first := grant(10, -1, 0)

		res, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 35, IdempotencyKey: "s1", Metadata: map[string]string{"job": "42"}})
		if err != nil {
			t.Fatal(err)
		}
		drawn := map[string]int64{}
		for _, p := range res.Transaction.Edges.Postings {
			if p.UserID != nil && p.LotID != nil {
				drawn[*p.LotID] = -p.Amount
			}
		}
		want := map[string]int64{first: 10, expiresSoon: 10, expiresLate: 10, noExpiryOld: 5}
		for lot, amount := range want {
			if drawn[lot] != amount {
				t.Errorf("lot %s: drew %d, want %d (drawn %v)", lot, drawn[lot], amount, drawn)
			}
		}
		if drawn[lowPriority] != 0 || res.Balance != 15 || res.Transaction.Metadata["job"] != "42" {
			t.Fatalf("drawn %v, balance %d", drawn, res.Balance)
		}
		e.check()
	})
}

func TestSpendRefusals(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 50)
		spend := func(amount int64, key string) error {
			_, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: amount, IdempotencyKey: key})
			return err
		}
		before := e.snapshot()
		e.refused(spend(51, "s1"), apperr.InsufficientCredits, before)
		e.refused(spend(0, "s2"), apperr.InvalidArgument, before)
		e.refused(spend(-1, "s3"), apperr.InvalidArgument, before)
		e.refused(spend(ledger.MaxAmount+1, "s4"), apperr.InvalidArgument, before)

		// A refused request does not use up its key.
		if err := spend(50, "s1"); err != nil {
			t.Fatalf("spending everything with the key of a refused request: %v", err)
		}
		if b := e.balance(u.ID); b.Balance != 0 || b.Available != 0 {
			t.Fatalf("balance %+v", b)
		}
		e.check()

		e.grant(u.ID, 10)
		if err := db.Ent.User.UpdateOneID(u.ID).SetStatus("FROZEN").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		before = e.snapshot()
		e.refused(spend(1, "s5"), apperr.AccountFrozen, before)
		e.check()
	})
}

func TestIdempotency(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		req := ledger.SpendRequest{UserID: u.ID, Amount: 30, Reason: "job", IdempotencyKey: "job-1"}
		first, err := e.l.Spend(ctx, service, req)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Minute)
		again, err := e.l.Spend(ctx, service, req)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Replayed || again.Transaction.ID != first.Transaction.ID || again.Balance != 70 ||
			len(again.Transaction.Edges.Postings) != len(first.Transaction.Edges.Postings) {
			t.Fatalf("replay %+v, first %+v", again, first)
		}
		if b := e.balance(u.ID); b.Balance != 70 {
			t.Fatalf("balance after a replay: %d", b.Balance)
		}

		before := e.snapshot()
		other := req
		other.Amount = 31
		_, err = e.l.Spend(ctx, service, other)
		e.refused(err, apperr.IdempotencyKeyReused, before)
		_, err = e.l.Grant(ctx, service, ledger.GrantRequest{UserID: u.ID, Amount: 30, IdempotencyKey: "job-1"})
		e.refused(err, apperr.IdempotencyKeyReused, before)

		// Keys are scoped to the caller: another caller's key of the same
		// name is a different request.
		res, err := e.l.Spend(ctx, ledger.Actor{Kind: ledger.ActorUser, ID: u.ID}, req)
		if err != nil || res.Replayed || res.Balance != 40 {
			t.Fatalf("same key, other caller: %+v %v", res, err)
		}
		e.check()
	})
}

func TestRevoke(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		a := *e.grant(u.ID, 30).Transaction.Edges.Postings[0].LotID
		e.clock.Advance(time.Second)
		b := *e.grant(u.ID, 20).Transaction.Edges.Postings[0].LotID

		res, err := e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: u.ID, Amount: 15, LotIDs: []string{b}, IdempotencyKey: "r1"})
		if err != nil || res.Amount != 15 || res.Balance != 35 {
			t.Fatalf("revoke from a chosen lot: %+v %v", res, err)
		}
		// Up to the amount: only what is there is taken, never a debt.
		res, err = e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: u.ID, Amount: 1000, IdempotencyKey: "r2"})
		if err != nil || res.Amount != 35 || res.Balance != 0 {
			t.Fatalf("revoke everything: %+v %v", res, err)
		}
		e.check()
		other := e.user("bob")
		before := e.snapshot()
		_, err = e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: u.ID, Amount: 5, IdempotencyKey: "r3"})
		e.refused(err, apperr.InsufficientCredits, before)
		_, err = e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: u.ID, Amount: 5, LotIDs: []string{"lot_01jd6m3v9q8x0n2k4t7w5y1zbc"}, IdempotencyKey: "r4"})
		e.refused(err, apperr.NotFound, before)
		_, err = e.l.Revoke(ctx, admin, ledger.RevokeRequest{UserID: other.ID, Amount: 5, LotIDs: []string{a}, IdempotencyKey: "r5"})
		e.refused(err, apperr.NotFound, before)
		e.check()
	})
}

func TestClawbackAndDebt(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		p := e.purchase(u.ID, 100)
		e.grant(u.ID, 20) // promotional credits, spent after the purchase
		if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 90, IdempotencyKey: "s1"}); err != nil {
			t.Fatal(err)
		}
		e.check()
		// 90 spent: the purchase lot has 10 left (it is older), the grant 20.

		// A partial refund of 40 credits: 10 from the purchase lot, 20 from
		// other unspent credits, 10 become a debt.
		res, err := e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: p.ID, Amount: 40, IdempotencyKey: "refund-1"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Balance != -10 || res.Transaction.Kind != credittransaction.KindRefundClawback {
			t.Fatalf("after clawback: %+v", res)
		}
		e.check()
		before := e.snapshot()
		_, err = e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 1, IdempotencyKey: "s2"})
		e.refused(err, apperr.InsufficientCredits, before)

		// Partial clawbacks add up to at most the credits bought.
		if _, err := e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: p.ID, Amount: 60, IdempotencyKey: "refund-2"}); err != nil {
			t.Fatal(err)
		}
		before = e.snapshot()
		_, err = e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: p.ID, Amount: 1, IdempotencyKey: "refund-3"})
		e.refused(err, apperr.InvalidArgument, before)
		if b := e.balance(u.ID); b.Balance != -70 {
			t.Fatalf("balance after refunding everything: %d, want -70", b.Balance)
		}

		// New credits repay the debt first; only the rest is spendable.
		g := e.grant(u.ID, 100)
		if g.Balance != 30 {
			t.Fatalf("balance after a grant of 100 on a debt of 70: %d", g.Balance)
		}
		lots, _ := e.l.Lots(ctx, u.ID)
		if len(lots) != 1 || lots[0].Remaining != 30 {
			t.Fatalf("lots after repaying the debt: %+v", lots)
		}
		if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 30, IdempotencyKey: "s3"}); err != nil {
			t.Fatal(err)
		}
		e.check()

		before = e.snapshot()
		_, err = e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: "pay_01jd6m3v9q8x0n2k4t7w5y1zbc", Amount: 1, IdempotencyKey: "refund-4"})
		e.refused(err, apperr.NotFound, before)
	})
}

func TestDisputeHoldReleaseAndLoss(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		p := e.purchase(u.ID, 100)
		if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 30, IdempotencyKey: "s1"}); err != nil {
			t.Fatal(err)
		}
		hold, err := e.l.HoldPayment(ctx, stripe, ledger.PaymentRequest{PaymentID: p.ID, IdempotencyKey: "dispute-1-open"})
		if err != nil || hold.Amount != 70 || hold.Balance != 0 {
			t.Fatalf("hold: %+v %v", hold, err)
		}
		if b := e.balance(u.ID); b.Held != 70 || b.Available != 0 {
			t.Fatalf("balance during the dispute: %+v", b)
		}
		e.check()
		rel, err := e.l.ReleasePayment(ctx, stripe, ledger.PaymentRequest{PaymentID: p.ID, IdempotencyKey: "dispute-1-won"})
		if err != nil || rel.Amount != 70 || rel.Balance != 70 {
			t.Fatalf("release: %+v %v", rel, err)
		}
		e.check()

		// A second dispute, lost: the held credits and the spent ones are
		// clawed back; what was spent becomes a debt.
		if _, err := e.l.HoldPayment(ctx, stripe, ledger.PaymentRequest{PaymentID: p.ID, IdempotencyKey: "dispute-2-open"}); err != nil {
			t.Fatal(err)
		}
		lost, err := e.l.Clawback(ctx, stripe, ledger.ClawbackRequest{PaymentID: p.ID, Amount: 100, Dispute: true, IdempotencyKey: "dispute-2-lost"})
		if err != nil || lost.Balance != -30 || lost.Transaction.Kind != credittransaction.KindDisputeClawback {
			t.Fatalf("lost dispute: %+v %v", lost, err)
		}
		if b := e.balance(u.ID); b.Held != 0 || b.Balance != -30 {
			t.Fatalf("balance after the lost dispute: %+v", b)
		}
		e.check()
	})
}

func TestExpireLots(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		at := e.clock.Now().Add(time.Hour)
		if _, err := e.l.Grant(ctx, admin, ledger.GrantRequest{UserID: u.ID, Amount: 40, ExpiresAt: &at, IdempotencyKey: "g1"}); err != nil {
			t.Fatal(err)
		}
		e.grant(u.ID, 10)
		if _, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 15, IdempotencyKey: "s1"}); err != nil {
			t.Fatal(err)
		}
		if n, err := e.l.ExpireLots(ctx); err != nil || n != 0 {
			t.Fatalf("expired %d lots before their time (%v)", n, err)
		}
		e.clock.Advance(time.Hour)
		// Past its expiry the lot is not spendable, even before the sweep.
		before := e.snapshot()
		_, err := e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 11, IdempotencyKey: "s2"})
		e.refused(err, apperr.InsufficientCredits, before)
		if b := e.balance(u.ID); b.Balance != 35 || b.Available != 10 {
			t.Fatalf("balance with an expired, unswept lot: %+v", b)
		}
		if n, err := e.l.ExpireLots(ctx); err != nil || n != 1 {
			t.Fatalf("expired %d lots (%v), want 1", n, err)
		}
		if b := e.balance(u.ID); b.Balance != 10 {
			t.Fatalf("balance after expiry: %d", b.Balance)
		}
		if n, err := e.l.ExpireLots(ctx); err != nil || n != 0 {
			t.Fatalf("a second sweep expired %d lots (%v)", n, err)
		}
		e.check()
	})
}

func TestReservations(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 100)
		reserve := func(amount int64, ttl time.Duration, key string) (*ledger.Result, error) {
			return e.l.Reserve(ctx, service, ledger.ReserveRequest{UserID: u.ID, Amount: amount, TTLSeconds: seconds(ttl), IdempotencyKey: key})
		}
		r1, err := reserve(60, time.Hour, "r1")
		if err != nil || r1.Balance != 100 || r1.Reservation.Amount != 60 {
			t.Fatalf("reserve: %+v %v", r1, err)
		}
		if b := e.balance(u.ID); b.Balance != 100 || b.Reserved != 60 || b.Available != 40 {
			t.Fatalf("balance with a reservation: %+v", b)
		}
		before := e.snapshot()
		_, err = e.l.Spend(ctx, service, ledger.SpendRequest{UserID: u.ID, Amount: 41, IdempotencyKey: "s1"})
		e.refused(err, apperr.InsufficientCredits, before)
		_, err = reserve(41, time.Hour, "r2")
		e.refused(err, apperr.InsufficientCredits, before)
		_, err = reserve(10, 25*time.Hour, "r3")
		e.refused(err, apperr.InvalidArgument, before)
		_, err = e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r1.Reservation.ID, Amount: new(int64(61)), IdempotencyKey: "c0"})
		e.refused(err, apperr.InvalidArgument, before)
		bob := e.user("bob")
		before = e.snapshot()
		_, err = e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: bob.ID, ReservationID: r1.Reservation.ID, IdempotencyKey: "c1"})
		e.refused(err, apperr.NotFound, before)

		// Capture part: 45 spent, the other 15 available again.
		c, err := e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r1.Reservation.ID, Amount: new(int64(45)), IdempotencyKey: "c2"})
		if err != nil || c.Balance != 55 || c.Reservation.Status != "CAPTURED" || c.Reservation.CapturedAmount != 45 {
			t.Fatalf("capture: %+v %v", c, err)
		}
		if b := e.balance(u.ID); b.Reserved != 0 || b.Available != 55 {
			t.Fatalf("balance after capture: %+v", b)
		}
		before = e.snapshot()
		_, err = e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r1.Reservation.ID, IdempotencyKey: "c3"})
		e.refused(err, apperr.Conflict, before)
		e.check()

		// Release gives everything back.
		r4, err := reserve(50, time.Hour, "r4")
		if err != nil {
			t.Fatal(err)
		}
		rel, err := e.l.ReleaseReservation(ctx, service, ledger.ReleaseRequest{UserID: u.ID, ReservationID: r4.Reservation.ID, IdempotencyKey: "rel1"})
		if err != nil || rel.Reservation.Status != "RELEASED" || rel.Balance != 55 {
			t.Fatalf("release: %+v %v", rel, err)
		}

		// An expired reservation returns its credits by itself.
		r5, err := reserve(55, time.Minute, "r5")
		if err != nil {
			t.Fatal(err)
		}
		if b := e.balance(u.ID); b.Available != 0 {
			t.Fatalf("available with everything reserved: %d", b.Available)
		}
		e.clock.Advance(time.Minute)
		if b := e.balance(u.ID); b.Available != 55 || b.Reserved != 0 {
			t.Fatalf("available after the reservation expired: %+v", b)
		}
		before = e.snapshot()
		_, err = e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r5.Reservation.ID, IdempotencyKey: "c4"})
		e.refused(err, apperr.Conflict, before)
		if n, err := e.l.ExpireReservations(ctx); err != nil || n != 1 {
			t.Fatalf("expired %d reservations (%v), want 1", n, err)
		}
		open, _ := e.l.OpenReservations(ctx, u.ID)
		if len(open) != 0 {
			t.Fatalf("open reservations after the sweep: %d", len(open))
		}

		// A frozen user cannot capture.
		r6, err := reserve(10, time.Hour, "r6")
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Ent.User.UpdateOneID(u.ID).SetStatus("FROZEN").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		before = e.snapshot()
		_, err = e.l.Capture(ctx, service, ledger.CaptureRequest{UserID: u.ID, ReservationID: r6.Reservation.ID, IdempotencyKey: "c5"})
		e.refused(err, apperr.AccountFrozen, before)
		e.check()
	})
}

func TestTransactionsPagination(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		for range 25 {
			e.grant(u.ID, 1)
		}
		seen := map[string]bool{}
		var sizes []int
		var last string
		page := ledger.Page{First: 10}
		for {
			p, err := e.l.Transactions(ctx, u.ID, page)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(p.Transactions))
			for _, txn := range p.Transactions {
				if seen[txn.ID] {
					t.Fatalf("transaction %s on two pages", txn.ID)
				}
				seen[txn.ID] = true
				if last != "" && txn.ID > last {
					t.Fatalf("not newest first: %s after %s", txn.ID, last)
				}
				last = txn.ID
				if len(txn.Edges.Postings) != 2 {
					t.Fatalf("postings not loaded: %d", len(txn.Edges.Postings))
				}
			}
			if !p.HasNext {
				break
			}
			page.After = p.EndCursor
		}
		if len(seen) != 25 || len(sizes) != 3 || sizes[2] != 5 {
			t.Fatalf("pages %v, %d transactions", sizes, len(seen))
		}
		for _, bad := range []ledger.Page{{First: 0}, {First: 101}, {First: 10, After: "nonsense"}} {
			if _, err := e.l.Transactions(ctx, u.ID, bad); apperr.CodeOf(err) != apperr.InvalidArgument {
				t.Errorf("page %+v: %v", bad, err)
			}
		}
	})
}

// TestCheckFindsCorruption proves the invariant check can fail: it must
// notice a balance edited behind the ledger's back.
func TestCheckFindsCorruption(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		u := e.user("alice")
		e.grant(u.ID, 10)
		e.check()
		if _, err := db.SQL.ExecContext(ctx, `UPDATE users SET credits_balance = 11, transaction_count = 2 WHERE id = $1`, u.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := db.SQL.ExecContext(ctx, `UPDATE credit_lots SET remaining = 9`); err != nil {
			t.Fatal(err)
		}
		r, err := e.l.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		for _, p := range r.Problems {
			found[p.Invariant] = true
		}
		for _, want := range []string{"balance_mismatch", "lot_remaining_mismatch", "lots_and_balance_disagree", "transaction_count_mismatch"} {
			if !found[want] {
				t.Errorf("the check missed %s: %+v", want, r.Problems)
			}
		}
		if r.Users != 1 || r.Transactions != 1 || r.Postings != 2 || r.Lots != 1 {
			t.Errorf("counts %+v", r)
		}
	})
}
