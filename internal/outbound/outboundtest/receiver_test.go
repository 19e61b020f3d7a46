package outboundtest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestVerifyKnowsTheSpecificationsVector: the verifier agrees with the
// Standard Webhooks specification's published example, and refuses it
// changed in any part.
func TestVerifyKnowsTheSpecificationsVector(t *testing.T) {
	const secret, id, sig = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	body := []byte(`{"test": 2432232314}`)
	if !Verify(secret, id, 1614265330, body, []string{"v1,bm9wZQ==", sig}) {
		t.Fatal("the specification's vector does not verify")
	}
	for name, ok := range map[string]bool{
		"other body":      Verify(secret, id, 1614265330, []byte(`{"test": 2432232315}`), []string{sig}),
		"other timestamp": Verify(secret, id, 1614265331, body, []string{sig}),
		"other id":        Verify(secret, id+"x", 1614265330, body, []string{sig}),
		"other secret":    Verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx", id, 1614265330, body, []string{sig}),
		"other version":   Verify(secret, id, 1614265330, body, []string{"v2" + sig[2:]}),
	} {
		if ok {
			t.Errorf("%s verifies", name)
		}
	}
}

// TestHangFirstHoldsOneRequest: the first request gets no answer and is not
// counted as accepted; the one after it is answered.
func TestHangFirstHoldsOneRequest(t *testing.T) {
	r := New(t)
	r.HangFirst()
	client := &http.Client{Timeout: 200 * time.Millisecond}
	post := func(id string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, r.URL, strings.NewReader(`{"type":"x"}`))
		req.Header.Set("webhook-id", id)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := post("a"); err == nil {
		t.Fatalf("the held request was answered %d", code)
	}
	if got := r.WaitRequests(1, time.Second); got[0].ID != "a" || got[0].Answer != 0 {
		t.Fatalf("held request recorded as %+v", got[0])
	}
	if code, err := post("a"); err != nil || code != http.StatusOK {
		t.Fatalf("the request after the held one: %d, %v", code, err)
	}
	if acc := r.Accepted(); len(acc) != 1 || acc[0].Answer != http.StatusOK {
		t.Fatalf("accepted %+v, want the second request only", acc)
	}
}
