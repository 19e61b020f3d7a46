package playground

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// devTokenHeader must be on every development token request. A cross-site
// page can send it only after a CORS preflight, which this endpoint never
// answers, so only the playground's own script gets a token.
const (
	devTokenHeader = "X-Tally-Playground"
	devTokenValue  = "dev-token"
)

// devTokenHandler answers POST DevTokenPath with a fresh token. Besides the
// header, it refuses a request a browser marks as coming from another site,
// and one addressed to a host name other than localhost: a page of another
// site whose name was made to resolve to 127.0.0.1 (DNS rebinding) is
// same-origin to the browser, but its requests carry its own name.
func devTokenHandler(mint DevToken) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if why := crossSite(r); why != "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": why})
			return
		}
		token, sub, role, exp, err := mint()
		if err != nil {
			// The reason (a missing or unreadable secret) is the developer's
			// own configuration; this endpoint exists only in development.
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "cannot mint a development token: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{
			"token": token, "subject": sub, "role": role, "expiresAt": exp.UTC().Format(time.RFC3339),
		})
	}
}

// crossSite says why r may come from another site, or "" when it is the
// playground's own request.
func crossSite(r *http.Request) string {
	if r.Header.Get(devTokenHeader) != devTokenValue {
		return "the development token is given only to the playground's page (header " + devTokenHeader + ": " + devTokenValue + ")"
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return "the development token is not given to other sites"
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || u.Host != r.Host {
			return "the development token is not given to other sites"
		}
	}
	if !localHost(r.Host) {
		return "the development token is given only on localhost or an IP address"
	}
	return ""
}

func localHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	return net.ParseIP(strings.Trim(host, "[]")) != nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
