package stripemock_test

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/stripemock"
)

func TestMain(m *testing.M) { os.Exit(stripemock.Run(m)) }

func TestStartServesStripeAPIUntilStop(t *testing.T) {
	base := stripemock.Start(t)
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Fatalf("Start returned %q, want http://127.0.0.1:<port>", base)
	}
	if again := stripemock.Start(t); again != base {
		t.Fatalf("second Start returned %q, want the running instance %q", again, base)
	}

	post := func() (*http.Response, error) {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/customers", strings.NewReader("metadata[user_id]=usr_1"))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("sk_test_123", "")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return (&http.Client{Timeout: 5 * time.Second}).Do(req)
	}
	resp, err := post()
	if err != nil {
		t.Fatalf("creating a customer on stripe-mock: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating a customer on stripe-mock: status %d, want 200", resp.StatusCode)
	}

	stripemock.Stop()
	stripemock.Stop() // a second Stop is harmless
	if resp, err := post(); err == nil {
		resp.Body.Close()
		t.Fatalf("stripe-mock still answers (%d) after Stop", resp.StatusCode)
	}
}
