package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/config"
)

const (
	// listenSubject names the listener's admin token in the server's audit.
	listenSubject = "tally-events-listen"
	// maxListenBody bounds what the listener reads of a delivery; Tally's
	// events are a few hundred bytes.
	maxListenBody = 1 << 20
	// maxForwardAnswer is what Tally reads of an answer, so no more is passed back.
	maxForwardAnswer = 64 << 10
	forwardTimeout   = 10 * time.Second
	// unregisterTimeout bounds the endpoint's deletion at the end: the
	// developer pressed Ctrl-C and waits.
	unregisterTimeout = 5 * time.Second
)

// forwardedHeaders are what a receiver needs to verify a delivery.
var forwardedHeaders = []string{"Content-Type", "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}

func newEventsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Work with Tally's outbound events (development)",
	}
	cmd.AddCommand(newEventsListenCommand())
	return cmd
}

func newEventsListenCommand() *cobra.Command {
	var server, forwardTo string
	var types []string
	cmd := &cobra.Command{
		Use:   "listen --forward-to URL [--events TYPE,...] [--server ADDR]",
		Short: "Receive a running Tally's outbound events and forward them to a local app",
		Long: `Registers a temporary webhook endpoint on a running tally serve (development:
plain http on the loopback), forwards every delivery to --forward-to with its
body and signature headers unchanged, prints one line per delivery and answers
Tally with the app's status (502 when the app could not be reached, so Tally
retries). Ctrl-C deletes the endpoint. The admin token is minted as tally token
does, so run it with the server's DATABASE_URL.`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&forwardTo, "forward-to", "", "the app's webhook URL, http(s)://HOST[:PORT]/PATH (required)")
	fs.StringVar(&server, "server", "", "the running server, http://HOST:PORT or HOST:PORT (default: $TALLY_ADDR, else 127.0.0.1:8080)")
	fs.StringSliceVar(&types, "events", nil, "comma-separated event types to receive (default: all)")
	addSettingFlags(fs, "database-url")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		target, err := checkForwardTo(forwardTo)
		if err != nil {
			return err
		}
		for _, typ := range types {
			if strings.TrimSpace(typ) == "" {
				return usageError{errors.New("--events has an empty type; list types such as balance.low,balance.depleted")}
			}
		}
		cfg, err := loadConfig(cmd.Flags())
		if err != nil {
			return err
		}
		base, err := serverBase(server, cfg.Addr)
		if err != nil {
			return err
		}
		if cfg.Env != config.Development {
			return errors.New("events listen is for development; it refuses TALLY_ENV=production")
		}
		// The token outlives any session, so the endpoint can still be
		// deleted at the end however long the listener ran; it never
		// leaves this process.
		token, err := mintToken(cmd.Context(), cfg, auth.MintClaims{Subject: listenSubject, Role: auth.RoleAdmin}, maxTokenTTL)
		if err != nil {
			return err
		}
		l := &listener{
			api:     &graphqlClient{url: base + "/graphql", token: token, http: &http.Client{Timeout: 30 * time.Second}},
			target:  target,
			out:     cmd.OutOrStdout(),
			errOut:  cmd.ErrOrStderr(),
			forward: &http.Client{Timeout: forwardTimeout, CheckRedirect: noRedirects},
		}
		return l.run(cmd.Context(), types)
	}
	return cmd
}

func checkForwardTo(raw string) (string, error) {
	if raw == "" {
		return "", usageError{errors.New("--forward-to is required (your app's webhook URL, such as http://127.0.0.1:3000/webhooks/tally)")}
	}
	u, err := neturl.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usageError{fmt.Errorf("--forward-to %.100q is not an http(s) URL such as http://127.0.0.1:3000/webhooks/tally", raw)}
	}
	return u.String(), nil
}

// noRedirects passes a redirect back to Tally as the app's answer, as
// Tally itself would treat it.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

type listener struct {
	api     *graphqlClient
	target  string
	out     io.Writer
	errOut  io.Writer
	forward *http.Client
	mu      sync.Mutex // one delivery's line at a time
}

// run serves until ctx ends, with the endpoint registered meanwhile.
func (l *listener) run(ctx context.Context, types []string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening on the loopback: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(l.serveDelivery), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	// Serving before registering: Tally may deliver at once.
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close()

	var created struct {
		CreateWebhookEndpoint struct {
			Secret   string `json:"secret"`
			Endpoint struct {
				ID string `json:"id"`
			} `json:"endpoint"`
		} `json:"createWebhookEndpoint"`
	}
	input := map[string]any{
		"url":         "http://" + ln.Addr().String() + "/",
		"description": "tally events listen, forwarding to " + l.target,
	}
	if len(types) > 0 {
		input["eventTypes"] = types
	}
	err = l.api.do(ctx, "createWebhookEndpoint", `mutation($input: CreateWebhookEndpointInput!) {
		createWebhookEndpoint(input: $input) { secret endpoint { id } } }`, map[string]any{"input": input}, &created)
	if err != nil {
		return err
	}
	id := created.CreateWebhookEndpoint.Endpoint.ID
	l.printf("Ready. Forwarding events to %s (secret %s, endpoint %s)\n", l.target, created.CreateWebhookEndpoint.Secret, id)

	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("serving deliveries: %w", err)
	}
	l.unregister(id)
	return err
}

// unregister deletes the endpoint, so that Tally does not retry deliveries
// to a port nobody listens on; a failure is reported, not fatal.
func (l *listener) unregister(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), unregisterTimeout)
	defer cancel()
	err := l.api.do(ctx, "deleteWebhookEndpoint", `mutation($id: ID!) { deleteWebhookEndpoint(input: {id: $id}) { deletedId } }`,
		map[string]any{"id": id}, nil)
	if err != nil {
		fmt.Fprintf(l.errOut, "tally: could not delete endpoint %s (delete it with deleteWebhookEndpoint): %v\n", id, err)
	}
}

func (l *listener) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.out, format, args...)
}

// serveDelivery forwards one delivery and answers Tally what the app did.
func (l *listener) serveDelivery(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Webhook-Id")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "deliveries are POSTed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxListenBody))
	if err != nil {
		l.report("?", id, "error: reading the delivery: "+err.Error())
		http.Error(w, "reading the delivery failed", http.StatusRequestEntityTooLarge)
		return
	}
	var event struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &event) != nil || event.Type == "" {
		event.Type = "?"
	}
	status, answer, err := l.forwardDelivery(r, body)
	if err != nil {
		l.report(event.Type, id, "error: "+err.Error())
		http.Error(w, "forwarding failed", http.StatusBadGateway)
		return
	}
	l.report(event.Type, id, fmt.Sprint(status))
	w.WriteHeader(status)
	w.Write(answer)
}

func (l *listener) forwardDelivery(r *http.Request, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, l.target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for _, h := range forwardedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	resp, err := l.forward.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer (status %d): %w", resp.StatusCode, err)
	}
	return resp.StatusCode, answer, nil
}

func (l *listener) report(typ, id, outcome string) {
	if id == "" {
		id = "-"
	}
	l.printf("%s %s %s -> %s\n", time.Now().Format(time.RFC3339), oneLine([]byte(typ)), oneLine([]byte(id)), outcome)
}

// graphqlClient posts operations to a server's GraphQL API as one caller.
type graphqlClient struct {
	url, token string
	http       *http.Client
}

// do runs query and decodes its data into out (when not nil); an answer
// with errors is an error naming the operation.
func (c *graphqlClient) do(ctx context.Context, op, query string, vars map[string]any, out any) error {
	payload, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("posting to %s (is tally serve running there? set --server or TALLY_ADDR): %w", c.url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: reading the answer of %s: %w", op, c.url, err)
	}
	var answer struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message    string `json:"message"`
			Extensions struct {
				Code string `json:"code"`
			} `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("%s: %s answered %d, not GraphQL: %.200s", op, c.url, resp.StatusCode, oneLine(raw))
	}
	if len(answer.Errors) > 0 {
		e := answer.Errors[0]
		if e.Extensions.Code != "" {
			return fmt.Errorf("%s: %s (%s)", op, oneLine([]byte(e.Message)), e.Extensions.Code)
		}
		return fmt.Errorf("%s: %s", op, oneLine([]byte(e.Message)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer.Data, out); err != nil {
		return fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	return nil
}
