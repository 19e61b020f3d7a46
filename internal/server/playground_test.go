package server_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/playground"
	"github.com/tally-billing/tally/internal/testdb"
)

// devTokenRequest posts to the development token endpoint; edit changes
// the request before it is sent.
func (a *api) devTokenRequest(edit func(*http.Request)) (int, http.Header, map[string]string) {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.ts.URL+playground.DevTokenPath, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("X-Tally-Playground", "dev-token")
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]string
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, resp.Header, body
}

func TestPlaygroundDevToken(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		status, header, body := a.devTokenRequest(nil)
		if status != 200 || body["token"] == "" || body["subject"] != "root" || body["role"] != "admin" || body["expiresAt"] == "" {
			t.Fatalf("the development token answered %d %v", status, body)
		}
		if header.Get("Cache-Control") != "no-store" {
			t.Errorf("the token may be cached: %q", header.Get("Cache-Control"))
		}
		r := a.ok(body["token"], `{ viewer { externalId } }`, nil)
		if !strings.Contains(string(r.Data), `"externalId":"root"`) {
			t.Fatalf("the token is not root's: %s", r.Data)
		}
		a.ok(body["token"], `{ ledgerReport { ok } }`, nil) // an admin field
	})
}

// TestPlaygroundDevTokenRefusesOtherSites: every way another site could
// ask is refused, with a readable error and no token.
func TestPlaygroundDevTokenRefusesOtherSites(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_CORS_ORIGINS": "https://evil.example"})
		for name, edit := range map[string]func(*http.Request){
			"no header (a form post)": func(r *http.Request) { r.Header.Del("X-Tally-Playground") },
			"another header value":    func(r *http.Request) { r.Header.Set("X-Tally-Playground", "1") },
			"a cross-site fetch":      func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") },
			"a same-site fetch":       func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "same-site") },
			"another origin":          func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
			"an unparsable origin":    func(r *http.Request) { r.Header.Set("Origin", "http://[::1") },
			"DNS rebinding":           func(r *http.Request) { r.Host = "evil.example" },
			"a long host":             func(r *http.Request) { r.Host = strings.Repeat("a", 4000) + ".example" },
		} {
			status, _, body := a.devTokenRequest(edit)
			if status != http.StatusForbidden || body["token"] != "" || body["error"] == "" {
				t.Errorf("%s: answered %d %v, want 403 with an error", name, status, body)
			}
		}
		// The same request from localhost, by name, is the playground's.
		if status, _, _ := a.devTokenRequest(func(r *http.Request) { r.Host = "localhost" }); status != 200 {
			t.Errorf("localhost answered %d", status)
		}
		// A cross-site fetch with the header needs a preflight, which is never
		// granted, even to an origin allowed to call /graphql.
		req, _ := http.NewRequest(http.MethodOptions, a.ts.URL+playground.DevTokenPath, nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "x-tally-playground")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.StatusCode < 400 {
			t.Errorf("the preflight answered %d with Access-Control-Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		resp, err = http.Get(a.ts.URL + playground.DevTokenPath)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET answered %d, want 405", resp.StatusCode)
		}
	})
}

// TestPlaygroundInProduction: off unless TALLY_PLAYGROUND=true, and then
// without the development token.
func TestPlaygroundInProduction(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		prod := map[string]string{"TALLY_ENV": "production", "TALLY_SEED_DEMO_DATA": "false"}
		off := newAPI(t, db, prod)
		for _, path := range []string{"/", "/playground/assets/", playground.DevTokenPath} {
			resp, err := http.Get(off.ts.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("production without the playground: %s answered %d", path, resp.StatusCode)
			}
		}
		prod["TALLY_PLAYGROUND"] = "true"
		on := newAPI(t, db, prod)
		resp, err := http.Get(on.ts.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(page), "GrantCredits") {
			t.Fatalf("TALLY_PLAYGROUND=true in production answered %d", resp.StatusCode)
		}
		if strings.Contains(string(page), "dev-token") || strings.Contains(string(page), "development admin token") {
			t.Error("the production playground offers a development token")
		}
		if status, _, body := on.devTokenRequest(nil); status != 404 || body["token"] != "" {
			t.Errorf("the development token endpoint answered %d in production", status)
		}
	})
}

// TestPlaygroundNoDevTokenWithoutSecret: in development with RS256 tokens
// (TALLY_JWT_PUBLIC_KEY) Tally cannot sign, so neither the button nor the
// endpoint is there.
func TestPlaygroundNoDevTokenWithoutSecret(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, map[string]string{"TALLY_JWT_SECRET": "", "TALLY_JWT_PUBLIC_KEY": pub})
		resp, err := http.Get(a.ts.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.Contains(string(page), "dev-token") {
			t.Errorf("the page answered %d, offering a development token: %v", resp.StatusCode, strings.Contains(string(page), "dev-token"))
		}
		if status, _, _ := a.devTokenRequest(nil); status != 404 {
			t.Errorf("the development token endpoint answered %d, want 404", status)
		}
	})
}
