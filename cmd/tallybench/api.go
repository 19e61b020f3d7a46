package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// gqlClient posts GraphQL operations (and Stripe webhooks) to one Tally
// server over HTTP.
type gqlClient struct {
	http      *http.Client
	url       string
	hookURL   string
	healthURL string
}

func newGQLClient(baseURL string, maxConns int) *gqlClient {
	// Keep one idle connection per client: with the default of 2, most
	// clients would open a new TCP connection per request and the run would
	// measure connection setup rather than Tally.
	tr := &http.Transport{
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &gqlClient{
		http:      &http.Client{Transport: tr},
		url:       baseURL + "/graphql",
		hookURL:   baseURL + "/api/webhooks/stripe",
		healthURL: baseURL + "/healthz",
	}
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

// send makes the request and returns the body of a 200 answer; any other
// status is an error that quotes the body.
func (c *gqlClient) send(req *http.Request) ([]byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, raw)
	}
	return raw, nil
}

// post sends one operation and decodes its data into out (when not nil).
func (c *gqlClient) post(ctx context.Context, token string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	raw, err := c.send(req)
	if err != nil {
		return err
	}
	var r gqlResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("decoding %.200s: %w", raw, err)
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("GraphQL error %v: %s", r.Errors[0].Extensions["code"], r.Errors[0].Message)
	}
	if out != nil {
		return json.Unmarshal(r.Data, out)
	}
	return nil
}

// spendQuery asks for little beyond the mutation itself, so that W1 and W2
// measure the spend rather than the serialization of a large payload.
const spendQuery = `mutation Spend($input: SpendCreditsInput!) { spendCredits(input: $input) { replayed transaction { id } } }`

// apiSpendOp is W1's and W2's operation: a service spends 1 credit from
// the account pick chooses, with a key never used before.
func apiSpendOp(c *gqlClient, serviceToken string, set *accountSet, pick func() int, client int) op {
	prefix := fmt.Sprintf("%s-%d-%d-", set.name, runSeq.Add(1), client)
	var seq int
	return func(ctx context.Context) error {
		seq++
		i := pick()
		key := prefix + strconv.Itoa(seq)
		body, err := json.Marshal(map[string]any{
			"query": spendQuery,
			"variables": map[string]any{"input": map[string]any{
				"externalUserId": set.external[i],
				"amount":         1,
				"idempotencyKey": key,
			}},
		})
		if err != nil {
			return err
		}
		var out struct {
			SpendCredits struct {
				Replayed bool `json:"replayed"`
			} `json:"spendCredits"`
		}
		if err := c.post(ctx, serviceToken, body, &out); err != nil {
			return err
		}
		if out.SpendCredits.Replayed {
			// Every key is new: a replay would mean a key collision in the
			// harness, and the success would not be a new transaction.
			return fmt.Errorf("spend with a fresh key %s was replayed", key)
		}
		set.spent[i].Add(1)
		return nil
	}
}

// balanceBody is W3's balance request; it never changes, so it is built once.
var balanceBody = []byte(`{"query":"{ viewer { creditsBalance } }"}`)

// apiBalanceOp is W3's balance read: a user reads their own balance.
func apiBalanceOp(c *gqlClient, userToken string, want int64) op {
	return func(ctx context.Context) error {
		var out struct {
			Viewer *struct {
				CreditsBalance int64 `json:"creditsBalance"`
			} `json:"viewer"`
		}
		if err := c.post(ctx, userToken, balanceBody, &out); err != nil {
			return err
		}
		if out.Viewer == nil || out.Viewer.CreditsBalance != want {
			return fmt.Errorf("viewer balance %+v, want %d", out.Viewer, want)
		}
		return nil
	}
}

// apiHealthOp is H0, the HTTP floor: the same server's liveness probe,
// which touches no token, no GraphQL and no database. Nothing answered over
// HTTP on this machine can be faster, so it bounds what W3 can reach.
func apiHealthOp(c *gqlClient) op {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.healthURL, nil)
		if err != nil {
			return err
		}
		raw, err := c.send(req)
		if err != nil {
			return fmt.Errorf("healthz: %w", err)
		}
		if !bytes.Contains(raw, []byte(`"ok"`)) {
			return fmt.Errorf("healthz answered %.200s", raw)
		}
		return nil
	}
}

// pageQuery is W3's history read: one page of the viewer's transactions.
const pageQuery = `query Page($first: Int!, $after: Cursor) { viewer { transactions(first: $first, after: $after) { edges { node { id amount kind createdAt } } pageInfo { endCursor hasNextPage } } } }`

// apiPage is one page of history as the API returns it.
type apiPage struct {
	ids       []string
	endCursor string
	hasNext   bool
}

func (c *gqlClient) page(ctx context.Context, token string, first int, after string) (apiPage, error) {
	vars := map[string]any{"first": first}
	if after != "" {
		vars["after"] = after
	}
	body, err := json.Marshal(map[string]any{"query": pageQuery, "variables": vars})
	if err != nil {
		return apiPage{}, err
	}
	var out struct {
		Viewer *struct {
			Transactions struct {
				Edges []struct {
					Node struct {
						ID string `json:"id"`
					} `json:"node"`
				} `json:"edges"`
				PageInfo struct {
					EndCursor   *string `json:"endCursor"`
					HasNextPage bool    `json:"hasNextPage"`
				} `json:"pageInfo"`
			} `json:"transactions"`
		} `json:"viewer"`
	}
	if err := c.post(ctx, token, body, &out); err != nil {
		return apiPage{}, err
	}
	if out.Viewer == nil {
		return apiPage{}, fmt.Errorf("no viewer in the page answer")
	}
	var p apiPage
	for _, e := range out.Viewer.Transactions.Edges {
		p.ids = append(p.ids, e.Node.ID)
	}
	if ec := out.Viewer.Transactions.PageInfo.EndCursor; ec != nil {
		p.endCursor = *ec
	}
	p.hasNext = out.Viewer.Transactions.PageInfo.HasNextPage
	return p, nil
}

// apiPageOp is W3's history operation at one depth: a page of historyPage
// rows after the cursor, which must start with the expected transaction.
func apiPageOp(c *gqlClient, token string, d depthCursor) op {
	return func(ctx context.Context) error {
		p, err := c.page(ctx, token, historyPage, d.apiCursor)
		if err != nil {
			return err
		}
		if len(p.ids) != historyPage || p.ids[0] != d.firstID || !p.hasNext {
			return fmt.Errorf("page at depth %d: %d rows from %v (next %v), want %d from %s",
				d.depth, len(p.ids), first(p.ids), p.hasNext, historyPage, d.firstID)
		}
		return nil
	}
}

func first(ids []string) string {
	if len(ids) == 0 {
		return "nothing"
	}
	return ids[0]
}

// webhookAnswer is the webhook's JSON answer to a delivery it accepted.
type webhookAnswer struct {
	Received bool   `json:"received"`
	Outcome  string `json:"outcome"`
}

// postWebhook delivers one signed event and returns the outcome Tally
// reports ("applied", "duplicate", ...).
func (c *gqlClient) postWebhook(ctx context.Context, payload []byte, signature string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.hookURL, bytes.NewReader(payload))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", signature)
	raw, err := c.send(req)
	if err != nil {
		return "", fmt.Errorf("webhook: %w", err)
	}
	var a webhookAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", fmt.Errorf("decoding webhook answer %.200s: %w", raw, err)
	}
	return a.Outcome, nil
}
