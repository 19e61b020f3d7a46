package outbound_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/outbound"
)

func TestCheckURLAccepts(t *testing.T) {
	strict := outbound.Policy{}
	for _, raw := range []string{
		"https://hooks.example.com/tally",
		"HTTPS://Hooks.Example.COM:8443/a/b?x=1&y=2",
		"https://example.com.",
		"https://8.8.8.8/hook",
		"https://[2606:4700:4700::1111]/hook",
		"https://[64:ff9b::808:808]/", // NAT64 of a public address
		"https://xn--bcher-kva.example/",
		"https://a_b.example.com/",
		"https://" + "h.example.com/" + strings.Repeat("a", 2048-len("https://h.example.com/")),
	} {
		if err := strict.CheckURL(raw); err != nil {
			t.Errorf("CheckURL(%.80q) = %v, want nil", raw, err)
		}
	}
	loose := outbound.Policy{AllowHTTP: true, AllowPrivate: true}
	for _, raw := range []string{
		"http://localhost/hook",
		"http://127.0.0.1:9/",
		"https://[::1]/",
		"https://10.0.0.1",
		"https://[fe80::1%25eth0]/",
		"https://2130706433/",
	} {
		if err := loose.CheckURL(raw); err != nil {
			t.Errorf("AllowHTTP+AllowPrivate: CheckURL(%q) = %v, want nil", raw, err)
		}
	}
}

func TestCheckURLRefuses(t *testing.T) {
	strict := outbound.Policy{}
	httpOK := outbound.Policy{AllowHTTP: true}
	cases := []struct {
		p   outbound.Policy
		raw string
	}{
		{strict, "http://hooks.example.com/"},
		{strict, "https://127.0.0.1/"},
		{strict, "https://127.0.0.2:8443/"},
		{strict, "https://[::1]/"},
		{strict, "https://10.0.0.1"},
		{strict, "https://172.16.5.4/"},
		{strict, "https://192.168.1.1/"},
		{strict, "https://169.254.169.254/latest/meta-data"},
		{strict, "https://[::ffff:127.0.0.1]/"},
		{strict, "https://[::ffff:a9fe:a9fe]/"}, // mapped 169.254.169.254 in hex
		{strict, "https://[64:ff9b::a00:1]/"},   // NAT64 of 10.0.0.1
		{strict, "https://[2002:7f00:1::1]/"},   // 6to4 of 127.0.0.1
		{strict, "https://[fe80::1%25eth0]/"},
		{strict, "https://[fd00::1]/"},
		{strict, "https://[fc00::1]/"},
		{strict, "https://[::]/"},
		{strict, "https://[ff02::1]/"},
		{strict, "https://[2001:db8::1]/"},
		{strict, "https://0.0.0.0"},
		{strict, "https://0.1.2.3"},
		{strict, "https://100.64.0.1"},
		{strict, "https://224.0.0.1"},
		{strict, "https://255.255.255.255"},
		{strict, "https://localhost/"},
		{strict, "https://LOCALHOST./"},
		{strict, "https://api.localhost/"},
		{strict, "https://2130706433/"},
		{strict, "https://0x7f000001/"},
		{strict, "https://127.1/"},
		{strict, "https://0x7f.0.0.1/"},
		{strict, "https://017700000001/"},
		{httpOK, "http://127.0.0.1/"},
		{strict, "https://user:pass@hooks.example.com/"},
		{strict, "https://user@hooks.example.com/"},
		{strict, "https://hooks.example.com/#frag"},
		{strict, "https://hooks.example.com/#"},
		{strict, "https://hooks.example.com/" + strings.Repeat("a", 2048)},
		{strict, "https://hooks.example.com/a\x00b"},
		{strict, "https://hooks.example.com/a\nb"},
		{strict, "https://hooks.example.com/a\x7fb"},
		{strict, "https://hooks.example.com/a b"},
		{strict, "/relative/path"},
		{strict, "hooks.example.com/path"},
		{strict, "ftp://hooks.example.com/"},
		{strict, "javascript:alert(1)"},
		{strict, "https:hooks.example.com"},
		{strict, "https:///path"},
		{strict, "https://:443/"},
		{strict, ""},
		{strict, "https://hooks.example.com:0/"},
		{strict, "https://hooks.example.com:99999/"},
		{strict, "https://bücher.example/"},
		{strict, "https://-bad.example.com/"},
		{strict, "https://a..b/"},
	}
	for _, c := range cases {
		err := c.p.CheckURL(c.raw)
		if err == nil {
			t.Errorf("CheckURL(%.60q) with %+v = nil, want an error", c.raw, c.p)
			continue
		}
		if code := apperr.CodeOf(err); code != apperr.InvalidArgument {
			t.Errorf("CheckURL(%.60q): code %s, want INVALID_ARGUMENT (%v)", c.raw, code, err)
		}
		if e, ok := apperr.As(err); !ok || e.Field != "url" || e.Message == "" {
			t.Errorf("CheckURL(%.60q): %#v, want field url and a message", c.raw, err)
		}
	}
}

func TestAllowed(t *testing.T) {
	strict := outbound.Policy{}
	loose := outbound.Policy{AllowPrivate: true}
	allowed := []string{"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"}
	refused := []string{
		"127.0.0.1", "10.1.2.3", "172.31.255.255", "192.168.0.1", "169.254.169.254", "100.127.255.254",
		"0.0.0.0", "0.255.255.255", "224.0.0.251", "239.255.255.250", "255.255.255.255", "240.0.0.1",
		"192.0.2.1", "198.18.0.1", "::", "::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fdff::1", "ff02::1",
		"ff05::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::a9fe:a9fe",
		"64:ff9b:1::1", "2002:a00:1::", "2001::1", "2001:db8::1", "100::1", "fec0::1",
	}
	for _, s := range allowed {
		ip := netip.MustParseAddr(s)
		if !strict.Allowed(ip) {
			t.Errorf("Allowed(%s) = false, want true", s)
		}
	}
	for _, s := range refused {
		ip := netip.MustParseAddr(s)
		if strict.Allowed(ip) {
			t.Errorf("Allowed(%s) = true, want false", s)
		}
		if !loose.Allowed(ip) {
			t.Errorf("AllowPrivate: Allowed(%s) = false, want true", s)
		}
	}
	if loose.Allowed(netip.Addr{}) {
		t.Error("the zero Addr is allowed")
	}
}
