package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestSimulatePurchase runs `tally serve` and `tally simulate` as a
// developer would, with the server's address only in TALLY_ADDR, and checks
// the credits arrive and leave, and that an event the server refuses is a
// failure.
func TestSimulatePurchase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"TALLY_ADDR=" + addr}
	srv := tally(t, dir, env, "serve")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	base := "http://" + addr
	waitReady(t, base)

	resp, err := http.Post(base+"/graphql", "application/json", strings.NewReader(`{"query":"{ creditPackages { id credits priceAmount } }"}`))
	if err != nil {
		t.Fatal(err)
	}
	var packs struct {
		Data struct {
			CreditPackages []struct {
				ID          string `json:"id"`
				Credits     int64  `json:"credits"`
				PriceAmount int64  `json:"priceAmount"`
			} `json:"creditPackages"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&packs)
	resp.Body.Close()
	if len(packs.Data.CreditPackages) == 0 {
		t.Fatal("no demo packs")
	}
	pack := packs.Data.CreditPackages[0]

	// simulate prints the payment's id first, so that scripts can take it.
	out, stderr, code := run(t, dir, env, "simulate", "purchase", "--user", "alice", "--package", pack.ID)
	if code != 0 || !strings.HasSuffix(out, " outcome applied (webhook answered 200)\n") {
		t.Fatalf("simulate purchase: exit %d\n%s%s", code, out, stderr)
	}
	pay := strings.Fields(out)[0]
	token, stderr, code := run(t, dir, nil, "token", "--sub", "alice")
	if code != 0 {
		t.Fatalf("token: %s", stderr)
	}
	balance := func() int64 {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/graphql", bytes.NewReader([]byte(`{"query":"{ viewer { creditsBalance } }"}`)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var viewer struct {
			Data struct {
				Viewer struct {
					CreditsBalance int64 `json:"creditsBalance"`
				} `json:"viewer"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&viewer)
		return viewer.Data.Viewer.CreditsBalance
	}
	if got := balance(); got != pack.Credits {
		t.Fatalf("balance %d after buying %d credits", got, pack.Credits)
	}

	// A refund beyond the payment cannot come from Stripe: refused,
	// reported as a failure with the server's reason, and nothing moves.
	over := fmt.Sprint(pack.PriceAmount + 1)
	out, stderr, code = run(t, dir, env, "simulate", "refund", "--payment", pay, "--amount", over)
	if code != 1 || !strings.Contains(out, "outcome failed") || !strings.Contains(stderr, "exceeds the payment's amount") {
		t.Fatalf("over-refund: exit %d\n%s%s", code, out, stderr)
	}
	if got := balance(); got != pack.Credits {
		t.Fatalf("balance %d after a refused refund, want %d", got, pack.Credits)
	}

	// The README's commands, verbatim but for the ids.
	steps := [][]string{
		{"simulate", "refund", "--payment", pay, "--amount", fmt.Sprint(pack.PriceAmount / 2)},
		{"simulate", "dispute", "--payment", pay},
		{"simulate", "dispute", "--payment", pay, "--outcome", "lost"},
	}
	for _, args := range steps {
		if out, stderr, code := run(t, dir, env, args...); code != 0 || !strings.Contains(out, pay+" outcome applied") {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	// Half refunded, the rest lost to the dispute: every credit is gone.
	if got := balance(); got != 0 {
		t.Fatalf("balance %d after a half refund and a lost dispute, want 0", got)
	}
	// The same refund again is ignored (already applied): not a success.
	out, stderr, code = run(t, dir, env, steps[0]...)
	if code != 1 || !strings.Contains(out, "outcome ignored") {
		t.Fatalf("repeated refund: exit %d\n%s%s", code, out, stderr)
	}

	// --server wins over TALLY_ADDR.
	out, stderr, code = run(t, dir, []string{"TALLY_ADDR=127.0.0.1:1"}, "simulate", "dispute", "--payment", pay, "--outcome", "won", "--server", addr)
	if code == 0 || !strings.Contains(out, pay+" outcome") {
		t.Fatalf("--server: exit %d\n%s%s", code, out, stderr)
	}
}

func TestSimulateCommandLineMistakes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"no package", nil, []string{"purchase", "--user", "alice"}, 2, "--package"},
		{"long user", nil, []string{"purchase", "--user", strings.Repeat("u", 256), "--package", "pkg_x"}, 2, "--user is longer than 255 bytes"},
		{"no payment", nil, []string{"refund"}, 2, "--payment is required"},
		{"long payment id", nil, []string{"refund", "--payment", "pay_" + strings.Repeat("x", 100)}, 2, "--payment"},
		{"payment id with a control character", nil, []string{"dispute", "--payment", "pay_\x01"}, 2, "is not a payment id"},
		{"zero amount", nil, []string{"refund", "--payment", "pay_x", "--amount", "0"}, 2, "--amount must be at least 1"},
		{"negative amount", nil, []string{"refund", "--payment", "pay_x", "--amount", "-5"}, 2, "--amount must be at least 1"},
		{"amount beyond int64", nil, []string{"refund", "--payment", "pay_x", "--amount", "9223372036854775808"}, 2, "--amount"},
		{"unknown outcome", nil, []string{"dispute", "--payment", "pay_x", "--outcome", "draw"}, 2, "--outcome is won or lost"},
		{"card without a user", nil, []string{"card"}, 2, "--user is required"},
		{"card for a long user", nil, []string{"card", "--user", strings.Repeat("u", 256)}, 2, "--user is longer than 255 bytes"},
		{"recharge without a user", nil, []string{"recharge", "--outcome", "declined"}, 2, "--user is required"},
		{"unknown recharge outcome", nil, []string{"recharge", "--user", "alice", "--outcome", "maybe"}, 2, "--outcome is succeeded, declined or authentication_required"},
		{"empty recharge outcome", nil, []string{"recharge", "--user", "alice", "--outcome="}, 2, "--outcome is succeeded"},
		{"card in production", []string{"TALLY_ENV=production", "TALLY_JWT_SECRET=kR7vQ2xN9pLm4tWz8cYb3sHf6jDg1aEu5oVi0qTn"}, []string{"card", "--user", "alice"}, 1, "development"},
		{"card on a database never migrated", nil, []string{"card", "--user", "alice"}, 1, "is not migrated: start tally serve once"},
		{"server not a URL", nil, []string{"refund", "--payment", "pay_x", "--server", "ftp://x"}, 2, "--server"},
		{"server with a path", nil, []string{"refund", "--payment", "pay_x", "--server", "http://h:1/api"}, 2, "--server"},
		{"no port to reach", []string{"TALLY_ADDR=127.0.0.1:0"}, []string{"refund", "--payment", "pay_x"}, 1, "TALLY_ADDR"},
		{"bad TALLY_ADDR", []string{"TALLY_ADDR=nope"}, []string{"refund", "--payment", "pay_x"}, 1, "TALLY_ADDR"},
		{"database never migrated", nil, []string{"refund", "--payment", "pay_nope", "--server", "127.0.0.1:1"}, 1, "is not migrated: start tally serve once"},
		{"production", []string{"TALLY_ENV=production", "TALLY_JWT_SECRET=kR7vQ2xN9pLm4tWz8cYb3sHf6jDg1aEu5oVi0qTn"}, []string{"refund", "--payment", "pay_x", "--server", "127.0.0.1:1"}, 1, "development"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := run(t, t.TempDir(), c.env, append([]string{"simulate"}, c.args...)...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != c.code || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "tally: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr:\n%s\nwant one line mentioning %q", code, c.code, stdout, stderr, c.want)
			}
		})
	}
}

// TestSimulateRefusalsOnAMigratedDatabase checks the refusals that need the
// database, before anything is posted.
func TestSimulateRefusalsOnAMigratedDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, stderr, code := run(t, dir, nil, "migrate", "up"); code != 0 {
		t.Fatalf("migrate up: %s", stderr)
	}
	// A user without a recharge in flight: a card and nothing else.
	if out, stderr, code := run(t, dir, nil, "simulate", "card", "--user", "carol"); code != 0 || !strings.Contains(out, "card saved") {
		t.Fatalf("simulate card: exit %d\n%s%s", code, out, stderr)
	}
	for args, want := range map[string]string{
		"recharge --user nobody":                   `--user: no user "nobody" in this database`,
		"recharge --user carol":                    "no recharge in flight: turn auto-recharge on (setAutoRecharge) and spend below the threshold",
		"refund --payment pay_nope":                `--payment: no payment "pay_nope"`,
		"dispute --payment pay_nope --outcome won": `--payment: no payment "pay_nope"`,
		"purchase --user alice --package pkg_nope": `no credit pack with id "pkg_nope"`,
	} {
		args := append(strings.Fields("simulate --server 127.0.0.1:1"), strings.Fields(args)...)
		stdout, stderr, code := run(t, dir, nil, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 1 || stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], want) {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s\nwant one line mentioning %q", args[:4], code, stdout, stderr, want)
		}
	}
}

func TestSimulateServerAddress(t *testing.T) {
	t.Parallel()
	cases := []struct{ flag, addr, want string }{
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"", ":9090", "http://127.0.0.1:9090"},
		{"", "0.0.0.0:9090", "http://127.0.0.1:9090"},
		{"", "[::]:9090", "http://[::1]:9090"},
		{"", "tally.internal:80", "http://tally.internal:80"},
		{"127.0.0.1:7000", "127.0.0.1:8080", "http://127.0.0.1:7000"},
		{"https://tally.example.com/", "127.0.0.1:8080", "https://tally.example.com"},
	}
	for _, c := range cases {
		got, err := serverBase(c.flag, c.addr)
		if err != nil || got != c.want {
			t.Errorf("serverBase(%q, %q) = %q, %v; want %q", c.flag, c.addr, got, err, c.want)
		}
	}
}
