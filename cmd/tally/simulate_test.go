package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestSimulatePurchase runs `tally serve` and `tally simulate purchase` as a
// developer would, and checks the credits arrive.
func TestSimulatePurchase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := tally(t, dir, nil, "serve", "--addr", addr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	base := "http://" + addr
	waitReady(t, base)

	resp, err := http.Post(base+"/graphql", "application/json", strings.NewReader(`{"query":"{ creditPackages { id credits } }"}`))
	if err != nil {
		t.Fatal(err)
	}
	var packs struct {
		Data struct {
			CreditPackages []struct {
				ID      string `json:"id"`
				Credits int64  `json:"credits"`
			} `json:"creditPackages"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&packs)
	resp.Body.Close()
	if len(packs.Data.CreditPackages) == 0 {
		t.Fatal("no demo packs")
	}
	pack := packs.Data.CreditPackages[0]

	out, stderr, code := run(t, dir, nil, "simulate", "purchase", "--server", base, "--user", "alice", "--package", pack.ID)
	if code != 0 || !strings.Contains(out, "answered 200") || !strings.Contains(out, `"applied"`) {
		t.Fatalf("simulate purchase: exit %d\n%s%s", code, out, stderr)
	}
	token, stderr, code := run(t, dir, nil, "token", "--sub", "alice")
	if code != 0 {
		t.Fatalf("token: %s", stderr)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/graphql", bytes.NewReader([]byte(`{"query":"{ viewer { creditsBalance } }"}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var viewer struct {
		Data struct {
			Viewer struct {
				CreditsBalance int64 `json:"creditsBalance"`
			} `json:"viewer"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&viewer)
	resp.Body.Close()
	if viewer.Data.Viewer.CreditsBalance != pack.Credits {
		t.Fatalf("balance %d after buying %d credits", viewer.Data.Viewer.CreditsBalance, pack.Credits)
	}

	if _, stderr, code := run(t, dir, nil, "simulate", "purchase", "--server", base, "--user", "alice"); code != 2 || !strings.Contains(stderr, "--package") {
		t.Fatalf("missing --package: exit %d %s", code, stderr)
	}
}
