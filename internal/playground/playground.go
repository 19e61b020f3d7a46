// Package playground serves GraphiQL at / with everything it needs embedded
// in the binary (no CDN: it works offline and behind a firewall), opening
// with tabs of Tally's main operations, and in development a button that
// fetches an admin token.
package playground

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// DevTokenPath is the development token endpoint.
const DevTokenPath = "/playground/dev-token"

// contentSecurityPolicy lets the page load only what this server serves:
// no inline script (the page's script is a file of its own), no other
// origin. data: is allowed only for fonts and images, which GraphiQL's CSS
// carries inline.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// DevToken mints a token for the development token button: the token, and
// the subject, role and expiry it carries.
type DevToken func() (token, subject, role string, expires time.Time, err error)

// Options configure the playground.
type Options struct {
	// Endpoint is the GraphQL endpoint's path.
	Endpoint string
	// DevToken, when set, offers the development token button and serves
	// DevTokenPath. Leave it nil outside development.
	DevToken DevToken
}

// pageConfig is what the page's script reads from the page.
type pageConfig struct {
	Endpoint    string `json:"endpoint"`
	DevTokenURL string `json:"devTokenURL,omitempty"`
	Tabs        []Tab  `json:"tabs"`
}

// Register adds the playground's routes to r: GET /, its assets and, with
// Options.DevToken, POST DevTokenPath.
func Register(r chi.Router, o Options) error {
	page, a, err := render(o)
	if err != nil {
		return err
	}
	r.Get("/", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		_, _ = w.Write(page)
	})
	r.Get(assetPrefix+"{hash}/*", a.serve)
	if o.DevToken != nil {
		r.Post(DevTokenPath, devTokenHandler(o.DevToken))
	}
	return nil
}

// render builds the page once: it is the same for every request.
func render(o Options) ([]byte, assets, error) {
	a, err := loadAssets()
	if err != nil {
		return nil, nil, err
	}
	tabs, err := Tabs()
	if err != nil {
		return nil, nil, err
	}
	cfg := pageConfig{Endpoint: o.Endpoint, Tabs: tabs}
	if o.DevToken != nil {
		cfg.DevTokenURL = DevTokenPath
	}
	var assetErr error
	tmpl, err := template.New("index.html").Funcs(template.FuncMap{
		"asset": func(name string) string {
			u, err := a.url(name)
			if err != nil {
				assetErr = err
			}
			return u
		},
	}).ParseFS(files, "assets/index.html")
	if err != nil {
		return nil, nil, fmt.Errorf("playground: parsing the page: %w", err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, struct {
		Config   pageConfig
		DevToken bool
	}{cfg, o.DevToken != nil}); err != nil {
		return nil, nil, fmt.Errorf("playground: rendering the page: %w", err)
	}
	if assetErr != nil {
		return nil, nil, assetErr
	}
	return buf.Bytes(), a, nil
}
