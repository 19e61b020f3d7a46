package outboundtest

import "testing"

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
