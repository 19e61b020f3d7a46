package playground_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/tally-billing/tally/internal/playground"
)

func serve(t *testing.T, o playground.Options) *httptest.Server {
	t.Helper()
	r := chi.NewRouter()
	if err := playground.Register(r, o); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(r)
	t.Cleanup(ts.Close)
	return ts
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

var assetRef = regexp.MustCompile(`(?:src|href)="(/playground/assets/[^"]+)"`)

// TestPageAndAssets loads the page and every asset it names, as a browser
// would, and checks what tells a browser how to treat them.
func TestPageAndAssets(t *testing.T) {
	ts := serve(t, playground.Options{Endpoint: "/graphql"})
	resp, page := get(t, ts.URL+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("the page answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self';", "connect-src 'self';", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("the policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
		t.Errorf("the policy allows more than this server: %q", csp)
	}
	if resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("the page is cached: %q", resp.Header.Get("Cache-Control"))
	}
	// No script runs from the page itself: every <script> loads a file,
	// but for the configuration, which is data.
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, "src=") && !strings.Contains(tag, `type="application/json"`) {
			t.Errorf("inline script: %s", tag)
		}
	}
	if strings.Contains(page, "//") && regexp.MustCompile(`(?:src|href)="(?:https?:)?//`).MatchString(page) {
		t.Error("the page loads something from another origin")
	}
	if strings.Contains(page, "tally-dev-token") || strings.Contains(page, "devTokenURL") {
		t.Error("the page offers a development token without Options.DevToken")
	}
	want := map[string]string{
		"graphiql.min.js": "text/javascript; charset=utf-8", "react.production.min.js": "text/javascript; charset=utf-8",
		"react-dom.production.min.js": "text/javascript; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
		"graphiql.min.css": "text/css; charset=utf-8", "app.css": "text/css; charset=utf-8",
	}
	refs := assetRef.FindAllStringSubmatch(page, -1)
	if len(refs) != len(want) {
		t.Fatalf("the page names %d assets, want %d: %v", len(refs), len(want), refs)
	}
	for _, ref := range refs {
		url := ref[1]
		resp, body := get(t, ts.URL+url)
		name := url[strings.LastIndex(url, "/")+1:]
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Errorf("%s answered %d with %d bytes", url, resp.StatusCode, len(body))
		}
		if ct := resp.Header.Get("Content-Type"); ct != want[name] {
			t.Errorf("%s is served as %q, want %q", url, ct, want[name])
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q", url, cc)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s may be sniffed", url)
		}
		// A browser that has it asks again only with its ETag.
		req, _ := http.NewRequest(http.MethodGet, ts.URL+url, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		again, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		again.Body.Close()
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("%s with its ETag answered %d, want 304", url, again.StatusCode)
		}
	}
}

// TestAssetRefusals: only the embedded files, under their current hash.
func TestAssetRefusals(t *testing.T) {
	ts := serve(t, playground.Options{Endpoint: "/graphql"})
	_, page := get(t, ts.URL+"/")
	js := assetRef.FindStringSubmatch(page)[1] // e.g. /playground/assets/<hash>/vendor/graphiql.min.css
	hash := strings.Split(strings.TrimPrefix(js, "/playground/assets/"), "/")[0]
	for _, path := range []string{
		strings.Replace(js, hash, "0000000000000000", 1), // an old build
		"/playground/assets/" + hash + "/index.html",     // the template is not an asset
		"/playground/assets/" + hash + "/vendor/LICENSE.react",
		"/playground/assets/" + hash + "/../../../go.mod",
		"/playground/assets/" + hash + "/%2e%2e/%2e%2e/playground.go",
		"/playground/assets/" + hash + "/" + strings.Repeat("a/", 4000) + "app.js",
		"/playground/assets/",
		"/playground/dev-token", // no DevToken: no endpoint
	} {
		resp, _ := get(t, ts.URL+path)
		if resp.StatusCode != 404 {
			t.Errorf("%.80s answered %d, want 404", path, resp.StatusCode)
		}
	}
	resp, err := http.Post(ts.URL+playground.DevTokenPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Errorf("POST %s without DevToken answered %d", playground.DevTokenPath, resp.StatusCode)
	}
}

// TestDevTokenOffered: with Options.DevToken the page offers the button.
func TestDevTokenOffered(t *testing.T) {
	ts := serve(t, playground.Options{Endpoint: "/graphql", DevToken: func() (string, string, string, time.Time, error) {
		return "t", "root", "admin", time.Now().Add(time.Hour), nil
	}})
	_, page := get(t, ts.URL+"/")
	if !strings.Contains(page, `id="tally-dev-token"`) || !strings.Contains(page, `"devTokenURL":"/playground/dev-token"`) {
		t.Error("the page does not offer the development token")
	}
}

// TestAssetsGzip: an asset comes gzipped to a client that accepts it, and
// is the same file once decompressed; other clients get it as is.
func TestAssetsGzip(t *testing.T) {
	ts := serve(t, playground.Options{Endpoint: "/graphql"})
	_, page := get(t, ts.URL+"/")
	var url string
	for _, ref := range assetRef.FindAllStringSubmatch(page, -1) {
		if strings.HasSuffix(ref[1], "/graphiql.min.js") {
			url = ts.URL + ref[1]
		}
	}
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	fetch := func(acceptEncoding string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if acceptEncoding != "" {
			req.Header.Set("Accept-Encoding", acceptEncoding)
		}
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	plainResp, plain := fetch("")
	if plainResp.Header.Get("Content-Encoding") != "" || len(plain) < 1<<20 {
		t.Fatalf("without Accept-Encoding: %q, %d bytes", plainResp.Header.Get("Content-Encoding"), len(plain))
	}
	for _, ae := range []string{"gzip", "gzip, deflate, br, zstd", "br;q=1.0, GZIP;q=0.5"} {
		resp, body := fetch(ae)
		if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Fatalf("%q: Content-Encoding %q, Vary %q", ae, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		unzipped, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(unzipped, plain) {
			t.Fatalf("%q: the gzipped asset (%d bytes) is not the file: %v", ae, len(body), err)
		}
		if resp.Header.Get("ETag") == plainResp.Header.Get("ETag") {
			t.Error("both encodings share an ETag")
		}
		t.Logf("graphiql.min.js: %d bytes, %d gzipped", len(plain), len(body))
	}
	for _, ae := range []string{"gzip;q=0", "br", "identity", strings.Repeat("x,", 10000)} {
		if resp, _ := fetch(ae); resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%.40q: answered %q", ae, resp.Header.Get("Content-Encoding"))
		}
	}
}
