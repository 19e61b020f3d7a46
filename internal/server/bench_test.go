package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-billing/tally/ent"
	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/ledger"
	"github.com/tally-billing/tally/internal/payments"
	"github.com/tally-billing/tally/internal/server"
	"github.com/tally-billing/tally/internal/testdb"
	"github.com/tally-billing/tally/webhook"
)

// benchServer is a server on a fresh database of the kind, over HTTP.
func benchServer(b *testing.B, kind testdb.Kind) (*database.DB, *server.Server, *httptest.Server) {
	b.Helper()
	db := testdb.New(b, kind)
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"TALLY_JWT_SECRET": testSecret, "DATABASE_URL": db.URL, "TALLY_RATE_LIMIT": "0"}[k]
	})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, db, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(func() { ts.Close(); srv.Close() })
	return db, srv, ts
}

// benchPost posts a GraphQL body with a bearer token and returns the
// response body, or an error for a transport failure or a status not 200.
func benchPost(client *http.Client, url, tok string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(http.MethodPost, url+"/graphql", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return out, err
}

// benchSameQuery posts one read from 16 goroutines per CPU until the
// benchmark ends; each answer must contain want.
func benchSameQuery(b *testing.B, url, tok, body, want string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if out, err := benchPost(client, url, tok, []byte(body)); err != nil || !bytes.Contains(out, []byte(want)) {
				b.Errorf("%s: %v %s", body, err, out)
				return
			}
		}
	})
}

// BenchmarkSpendOverHTTP: spendCredits through the whole server (HTTP, JWT,
// GraphQL, ledger) against the same spends made by calling the ledger in
// process, in the same run, on one hot account and spread over 1,000. The
// difference is what being an HTTP API costs; profile it with
//
//	go test -run '^$' -bench SpendOverHTTP -cpuprofile cpu.out ./internal/server
func BenchmarkSpendOverHTTP(b *testing.B) {
	for _, kind := range testdb.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			db, srv, ts := benchServer(b, kind)

			const accounts = 1000
			ids := make([]string, accounts)
			admin := ledger.Actor{Kind: ledger.ActorAdmin, ID: "bench"}
			for i := range ids {
				u, err := db.Ent.User.Create().SetExternalID(fmt.Sprint("bench-", i)).Save(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = u.ID
				if _, err := srv.Ledger().Grant(context.Background(), admin, ledger.GrantRequest{
					UserID: u.ID, Amount: 1 << 40, IdempotencyKey: fmt.Sprint("seed-", i),
				}); err != nil {
					b.Fatal(err)
				}
			}
			tok, err := auth.Mint([]byte(testSecret), auth.MintClaims{Subject: "backend", Role: auth.RoleService}, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			var seq atomic.Int64
			for _, spread := range []int{1, accounts} {
				b.Run(fmt.Sprintf("accounts=%d/http", spread), func(b *testing.B) {
					b.SetParallelism(16)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							n := seq.Add(1)
							body, _ := json.Marshal(map[string]any{
								"query": `mutation($input: SpendCreditsInput!) { spendCredits(input: $input) { replayed transaction { id } } }`,
								"variables": map[string]any{"input": map[string]any{
									"externalUserId": fmt.Sprint("bench-", n%int64(spread)), "amount": 1, "idempotencyKey": fmt.Sprint("h-", n),
								}},
							})
							if out, err := benchPost(client, ts.URL, tok, body); err != nil || bytes.Contains(out, []byte(`"errors"`)) {
								b.Errorf("spend: %v %s", err, out)
								return
							}
						}
					})
				})
				b.Run(fmt.Sprintf("accounts=%d/ledger-in-process", spread), func(b *testing.B) {
					actor := ledger.Actor{Kind: ledger.ActorService, ID: "backend"}
					b.SetParallelism(16)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							n := seq.Add(1)
							if _, err := srv.Ledger().Spend(context.Background(), actor, ledger.SpendRequest{
								UserID: ids[n%int64(spread)], Amount: 1, IdempotencyKey: fmt.Sprint("l-", n),
							}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
			if rep, err := srv.Ledger().Check(context.Background()); err != nil || !rep.OK() {
				b.Fatalf("invariants after the benchmark: %v %+v", err, rep)
			}
		})
	}
}

// BenchmarkViewerBalanceOverHTTP: `{ viewer { creditsBalance } }` through
// the whole server against the raw SELECT it comes down to, in the same run.
func BenchmarkViewerBalanceOverHTTP(b *testing.B) {
	for _, kind := range testdb.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			db, _, ts := benchServer(b, kind)
			u, err := db.Ent.User.Create().SetExternalID("reader").Save(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			tok, err := auth.Mint([]byte(testSecret), auth.MintClaims{Subject: "reader", Role: auth.RoleUser}, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("http", func(b *testing.B) {
				benchSameQuery(b, ts.URL, tok, `{"query":"{ viewer { creditsBalance } }"}`, `"creditsBalance":0`)
			})
			b.Run("raw-select", func(b *testing.B) {
				stmt, err := db.SQL.Prepare(db.Rebind(`SELECT credits_balance FROM users WHERE id = ?`))
				if err != nil {
					b.Fatal(err)
				}
				defer stmt.Close()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					var balance int64
					for pb.Next() {
						if err := stmt.QueryRow(u.ID).Scan(&balance); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkHistoryPageOverHTTP: a 50-row page of the viewer's history
// through the whole server against the keyset SELECT it comes down to, in the
// same run.
func BenchmarkHistoryPageOverHTTP(b *testing.B) {
	for _, kind := range testdb.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			db, srv, ts := benchServer(b, kind)
			ctx := context.Background()
			u, err := db.Ent.User.Create().SetExternalID("reader").Save(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := srv.Ledger().Grant(ctx, ledger.Actor{Kind: ledger.ActorAdmin, ID: "bench"}, ledger.GrantRequest{
				UserID: u.ID, Amount: 1 << 40, IdempotencyKey: "seed",
			}); err != nil {
				b.Fatal(err)
			}
			for i := range 500 {
				if _, err := srv.Ledger().Spend(ctx, ledger.Actor{Kind: ledger.ActorService, ID: "bench"}, ledger.SpendRequest{
					UserID: u.ID, Amount: 1, IdempotencyKey: fmt.Sprint("s-", i),
				}); err != nil {
					b.Fatal(err)
				}
			}
			tok, err := auth.Mint([]byte(testSecret), auth.MintClaims{Subject: "reader", Role: auth.RoleUser}, time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("http", func(b *testing.B) {
				benchSameQuery(b, ts.URL, tok,
					fmt.Sprintf(`{"query":%q}`, historyPage),
					`"hasNextPage":true`)
			})
			b.Run("raw-select", func(b *testing.B) {
				stmt, err := db.SQL.Prepare(db.Rebind(`SELECT id, amount, kind, created_at FROM credit_transactions WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT 51`))
				if err != nil {
					b.Fatal(err)
				}
				defer stmt.Close()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					var (
						id, kind string
						amount   int64
						at       time.Time
					)
					for pb.Next() {
						rows, err := stmt.Query(u.ID)
						if err != nil {
							b.Error(err)
							return
						}
						n := 0
						for rows.Next() {
							if err := rows.Scan(&id, &amount, &kind, &at); err != nil {
								b.Error(err)
							}
							n++
						}
						if err := rows.Close(); err != nil || n != 51 {
							b.Errorf("page: %d rows, %v", n, err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkPurchaseWebhookOverHTTP: signed checkout.session.completed
// deliveries, each for its own pending payment (of 100 buyers), through the
// whole server. The raw baseline is tallybench's B4; this one is for
// profiling the server's side:
//
//	go test -run '^$' -bench PurchaseWebhookOverHTTP -cpuprofile cpu.out ./internal/server
func BenchmarkPurchaseWebhookOverHTTP(b *testing.B) {
	for _, kind := range testdb.Kinds() {
		b.Run(string(kind), func(b *testing.B) {
			db, _, ts := benchServer(b, kind)
			ctx := context.Background()
			pkg := db.Ent.CreditPackage.Create().SetName("Pack").SetCredits(250).SetPriceAmount(900).SetCurrency("usd").SaveX(ctx)
			buyers := make([]string, 100)
			for i := range buyers {
				buyers[i] = db.Ent.User.Create().SetExternalID(fmt.Sprint("buyer-", i)).SaveX(ctx).ID
			}
			var made atomic.Int64
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			b.Run("http", func(b *testing.B) {
				// Each delivery needs a payment of its own, made before the
				// clock starts.
				events := make([][]byte, b.N)
				for lo := 0; lo < b.N; lo += 500 {
					hi := min(lo+500, b.N)
					creates := make([]*ent.PaymentCreate, 0, hi-lo)
					for i := lo; i < hi; i++ {
						n := made.Add(1)
						creates = append(creates, db.Ent.Payment.Create().SetUserID(buyers[n%int64(len(buyers))]).SetPackageID(pkg.ID).
							SetAmount(900).SetCurrency("usd").SetCredits(250).SetStripeCheckoutSessionID(fmt.Sprint("cs_bench_", n)))
					}
					ps, err := db.Ent.Payment.CreateBulk(creates...).Save(ctx)
					if err != nil {
						b.Fatal(err)
					}
					for i, p := range ps {
						if events[lo+i], err = payments.SimulatedCheckoutCompleted(p); err != nil {
							b.Fatal(err)
						}
					}
				}
				var next atomic.Int64
				b.ResetTimer()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						body := events[next.Add(1)-1]
						req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/webhooks/stripe", bytes.NewReader(body))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("Stripe-Signature", webhook.Sign(body, config.DevWebhookSecret, time.Now()))
						resp, err := client.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						out, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || !bytes.Contains(out, []byte(`"applied"`)) {
							b.Errorf("delivery: %d %s", resp.StatusCode, out)
							return
						}
					}
				})
			})
		})
	}
}
