package payments_test

import (
	"reflect"
	"sync"
	"testing"

	"github.com/tally-billing/tally/ent/processedevent"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/testdb"
)

// setupSession is a completed card setup session of Tally's, as Stripe
// sends it.
func setupSession(sessionID, customer, userID, setupIntent string) map[string]any {
	return map[string]any{
		"id": sessionID, "object": "checkout.session", "mode": "setup", "status": "complete",
		"payment_status": "no_payment_required", "customer": customer, "setup_intent": setupIntent,
		"metadata": map[string]string{"user_id": userID, "purpose": "card_setup"},
	}
}

func (f *purchaseEnv) deliver(id, typ string, obj map[string]any) (string, error) {
	ev, raw := event(id, typ, obj)
	return f.svc.HandleEvent(f.ctx, ev, raw)
}

// TestCardSetupCompletedSavesTheCard: the completion of a setup session
// of the user's customer is recorded with the job that saves its card, in
// one transaction, once per event however many deliveries race; the job
// reads the SetupIntent with its card and saves it.
func TestCardSetupCompletedSavesTheCard(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		res := f.setup(u.ID, setupReq("card"))
		cus := f.customerOf(u.ID)

		sess := setupSession(res.SessionID, cus, u.ID, "seti_1")
		if out, err := f.deliver("evt_setup", "checkout.session.completed", sess); err != nil || out != payments.OutcomeApplied {
			t.Fatalf("setup completed: %q %v", out, err)
		}
		if out, err := f.deliver("evt_setup", "checkout.session.completed", sess); err != nil || out != payments.OutcomeDuplicate {
			t.Fatalf("redelivery: %q %v", out, err)
		}
		want := []payments.SaveCardArgs{{UserID: u.ID, SetupIntentID: "seti_1"}}
		if jobs := f.queuedCards(); !reflect.DeepEqual(jobs, want) {
			t.Fatalf("jobs %+v, want %+v", jobs, want)
		}
		rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID("evt_setup")).OnlyX(f.ctx)
		if rec.Outcome != processedevent.OutcomeApplied || rec.PaymentID != nil {
			t.Fatalf("record %+v: want applied, of no payment", rec)
		}
		if n := db.Ent.Payment.Query().CountX(f.ctx); n != 0 {
			t.Fatalf("a card setup wrote %d payments", n)
		}

		// Concurrent deliveries of another event: one is applied.
		again := setupSession(res.SessionID, cus, u.ID, "seti_2")
		const n = 8
		outcomes := make(chan string, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				out, err := f.deliver("evt_setup_2", "checkout.session.completed", again)
				if err != nil {
					t.Errorf("concurrent delivery: %v", err)
				}
				outcomes <- out
			})
		}
		wg.Wait()
		close(outcomes)
		if got := tally(outcomes); got[payments.OutcomeApplied] != 1 || got[payments.OutcomeDuplicate] != n-1 {
			t.Fatalf("outcomes %v: want one applied, the rest duplicates", got)
		}
		want = append(want, payments.SaveCardArgs{UserID: u.ID, SetupIntentID: "seti_2"})
		if jobs := f.queuedCards(); !reflect.DeepEqual(jobs, want) {
			t.Fatalf("jobs %+v, want %+v", jobs, want)
		}

		f.answerGet("/v1/setup_intents/seti_1", intentObject("setup_intent", "seti_1", "succeeded", cus, u.ID))
		if err := payments.WorkSaveCard(f.ctx, f.svc, want[0]); err != nil {
			t.Fatal(err)
		}
		f.wantCard(u.ID)
	})
}

// TestCardSetupEventsThatSaveNothing: a setup-mode session event that is
// not the completion of one of Tally's sessions for the user's own
// customer is recorded (failed or ignored, with the reason) and queues
// nothing.
func TestCardSetupEventsThatSaveNothing(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		f := newCardEnv(t, db)
		u := f.user("alice")
		res := f.setup(u.ID, setupReq("card"))
		cus := f.customerOf(u.ID)
		bob := f.user("bob") // no Stripe customer
		mallory := f.user("mallory")
		f.setup(mallory.ID, setupReq("card"))

		with := func(change func(map[string]any)) map[string]any {
			s := setupSession(res.SessionID, cus, u.ID, "seti_1")
			change(s)
			return s
		}
		cases := []struct {
			name, typ string
			obj       map[string]any
			livemode  bool
			want      string
		}{
			{"another user's customer", "checkout.session.completed",
				with(func(s map[string]any) { s["customer"] = f.customerOf(mallory.ID) }), false, payments.OutcomeFailed},
			{"an unknown customer", "checkout.session.completed",
				with(func(s map[string]any) { s["customer"] = "cus_unknown" }), false, payments.OutcomeFailed},
			{"a user without a customer", "checkout.session.completed",
				with(func(s map[string]any) { s["metadata"] = map[string]string{"user_id": bob.ID, "purpose": "card_setup"} }), false, payments.OutcomeFailed},
			{"an unknown user", "checkout.session.completed",
				with(func(s map[string]any) {
					s["metadata"] = map[string]string{"user_id": "usr_nobody", "purpose": "card_setup"}
				}), false, payments.OutcomeFailed},
			{"no user", "checkout.session.completed",
				with(func(s map[string]any) { s["metadata"] = map[string]string{"purpose": "card_setup"} }), false, payments.OutcomeFailed},
			{"no setup intent", "checkout.session.completed",
				with(func(s map[string]any) { delete(s, "setup_intent") }), false, payments.OutcomeFailed},
			{"no customer", "checkout.session.completed",
				with(func(s map[string]any) { delete(s, "customer") }), false, payments.OutcomeFailed},
			{"not Tally's session", "checkout.session.completed",
				with(func(s map[string]any) { s["metadata"] = map[string]string{"user_id": u.ID} }), false, payments.OutcomeIgnored},
			{"expired", "checkout.session.expired", with(func(map[string]any) {}), false, payments.OutcomeIgnored},
			{"the other mode", "checkout.session.completed", with(func(map[string]any) {}), true, payments.OutcomeFailed},
		}
		for i, c := range cases {
			id := "evt_nothing_" + string(rune('a'+i))
			ev, raw := event(id, c.typ, c.obj)
			ev.Livemode = c.livemode
			out, err := f.svc.HandleEvent(f.ctx, ev, raw)
			if err != nil || out != c.want {
				t.Errorf("%s: %q %v, want %s", c.name, out, err, c.want)
				continue
			}
			if rec := db.Ent.ProcessedEvent.Query().Where(processedevent.StripeEventID(id)).OnlyX(f.ctx); rec.Error == "" {
				t.Errorf("%s: recorded without a reason", c.name)
			}
		}
		if jobs := f.queuedCards(); len(jobs) != 0 {
			t.Fatalf("refused events queued %+v", jobs)
		}
		if n := db.Ent.AutoRecharge.Query().CountX(f.ctx); n != 0 {
			t.Fatalf("refused events saved %d cards", n)
		}

		// A process that queues no jobs says so rather than claim the card.
		offline := payments.New(db, ledger.New(db), payments.Config{})
		ev, raw := event("evt_no_jobs", "checkout.session.completed", setupSession(res.SessionID, cus, u.ID, "seti_1"))
		if out, err := offline.HandleEvent(f.ctx, ev, raw); err != nil || out != payments.OutcomeFailed {
			t.Fatalf("without a job queue: %q %v", out, err)
		}
	})
}
