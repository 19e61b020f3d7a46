package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// op is one operation of a workload, done by one client. It returns an
// error when the operation failed (transport, HTTP status, or a GraphQL
// error); the runner counts it and carries on.
type op func(ctx context.Context) error

// run drives a closed loop: each of clients goroutines does one operation
// after another until duration has passed. An operation that has started
// is always finished (under its own timeout, not the run's deadline), so
// that no request is cut off half way: a cancelled spend may or may not
// have committed, which would make "one transaction per success"
// uncheckable.
func run(clients int, duration time.Duration, newOp func(client int) op) sample {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		all     sample
		stopped atomic.Bool
	)
	start := time.Now()
	timer := time.AfterFunc(duration, func() { stopped.Store(true) })
	defer timer.Stop()
	for c := range clients {
		do := newOp(c)
		wg.Go(func() {
			// Each client keeps its own latencies, merged once at the end,
			// so that recording costs no lock during the run.
			var mine sample
			mine.latencies = make([]time.Duration, 0, 4096)
			for !stopped.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				t0 := time.Now()
				err := do(ctx)
				mine.latencies = append(mine.latencies, time.Since(t0))
				cancel()
				if err != nil {
					mine.errors++
					reportError(err)
				}
			}
			mu.Lock()
			all.latencies = append(all.latencies, mine.latencies...)
			all.errors += mine.errors
			mu.Unlock()
		})
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	return all
}

// errorsShown caps the errors printed per process: the first few explain a
// failing run, thousands more would only bury the report.
var errorsShown atomic.Int32

func reportError(err error) {
	if errorsShown.Add(1) <= 5 {
		logf("error: %v", err)
	}
}

// gqlClient posts GraphQL operations to one Tally server over HTTP.
type gqlClient struct {
	http *http.Client
	url  string
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
	return &gqlClient{http: &http.Client{Transport: tr}, url: baseURL + "/graphql"}
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
}

// post sends one operation and decodes its data into out (when not nil).
func (c *gqlClient) post(ctx context.Context, token string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, raw)
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

// spendQuery asks for little beyond the mutation itself, so that W1
// measures the spend rather than the serialization of a large payload.
const spendQuery = `mutation Spend($input: SpendCreditsInput!) { spendCredits(input: $input) { replayed transaction { id } } }`

// spendOp is W1's operation: a service spends 1 credit from the hot
// account with a key never used before.
func spendOp(c *gqlClient, serviceToken, externalUserID, keyPrefix string, client int) op {
	prefix := keyPrefix + "-" + strconv.Itoa(client) + "-"
	var seq int
	return func(ctx context.Context) error {
		seq++
		body, err := json.Marshal(map[string]any{
			"query": spendQuery,
			"variables": map[string]any{"input": map[string]any{
				"externalUserId": externalUserID,
				"amount":         1,
				"idempotencyKey": prefix + strconv.Itoa(seq),
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
			return fmt.Errorf("spend with a fresh key %s was replayed", prefix+strconv.Itoa(seq))
		}
		return nil
	}
}

// balanceBody is W3's request; it never changes, so it is built once.
var balanceBody = []byte(`{"query":"{ viewer { creditsBalance } }"}`)

// balanceOp is W3's operation: a user reads their own balance.
func balanceOp(c *gqlClient, userToken string, want int64) op {
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
