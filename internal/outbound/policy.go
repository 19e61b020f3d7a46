package outbound

import (
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/tally-billing/tally/internal/apperr"
)

// maxURLBytes bounds an endpoint URL; longer ones are refused rather than
// stored and shown.
const maxURLBytes = 2048

// Policy says which endpoint URLs are allowed.
type Policy struct {
	AllowHTTP bool // plain http:// (development); otherwise https only
	// AllowPrivate allows what is otherwise refused: loopback, private
	// (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), CGNAT
	// 100.64/10, unspecified, multicast, broadcast, the IPv4-mapped forms of
	// those, 0.0.0.0/8, other special-purpose ranges (documentation,
	// benchmarking, reserved, ...) and "localhost" names.
	AllowPrivate bool
}

// Special-purpose IPv4 ranges not covered by netip's predicates. Any of them
// reaching a tenant-chosen endpoint is either a mistake or a probe of our
// own network.
var deniedV4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT shared space
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, with 255.255.255.255 broadcast
}

// IPv6 is allowed only inside global unicast 2000::/3, minus these; the
// prefixes that embed an IPv4 address are judged by that address.
var (
	globalV6 = netip.MustParsePrefix("2000::/3")
	deniedV6 = []netip.Prefix{
		netip.MustParsePrefix("2001::/23"),     // IETF protocol assignments, Teredo
		netip.MustParsePrefix("2001:db8::/32"), // documentation
		netip.MustParsePrefix("3fff::/20"),     // documentation
	}
	nat64V6 = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64, IPv4 in the low 32 bits
	sixTo4  = netip.MustParsePrefix("2002::/16")    // 6to4, IPv4 in bits 16-47
)

// Allowed reports whether the policy lets a connection go to ip.
func (p Policy) Allowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	if p.AllowPrivate {
		return true
	}
	return publicAddr(ip)
}

// publicAddr reports whether ip is a globally routable unicast address.
func publicAddr(ip netip.Addr) bool {
	ip = ip.WithZone("").Unmap()
	if ip.Is4() {
		return publicV4(ip)
	}
	b := ip.As16()
	if nat64V6.Contains(ip) {
		return publicV4(netip.AddrFrom4([4]byte(b[12:16])))
	}
	if !globalV6.Contains(ip) {
		return false
	}
	if sixTo4.Contains(ip) {
		return publicV4(netip.AddrFrom4([4]byte(b[2:6])))
	}
	for _, pre := range deniedV6 {
		if pre.Contains(ip) {
			return false
		}
	}
	return true
}

func publicV4(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsMulticast() ||
		ip.IsUnspecified() {
		return false
	}
	for _, pre := range deniedV4 {
		if pre.Contains(ip) {
			return false
		}
	}
	return true
}

// CheckURL validates an endpoint URL when it is created or changed, before
// any network use: absolute, scheme https (or http when AllowHTTP), a host,
// no user info, no fragment, at most 2,048 bytes, no control characters or
// spaces. An IP-literal host must be allowed by the policy; so must a
// "localhost" name, and a name whose last label is numeric (2130706433,
// 127.1, 0x7f.1: no real name ends so, and some resolvers read them as
// IPv4). Other names are not resolved here: Send checks every address it
// connects to. The error is an *apperr.Error, INVALID_ARGUMENT on field "url".
func (p Policy) CheckURL(raw string) error {
	u, err := p.parseURL(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if ip, ok := parseIP(host); ok {
		if !p.Allowed(ip) {
			return invalidURL("address %s is not allowed (private, loopback or special-purpose)", ip.WithZone(""))
		}
		return nil
	}
	if err := checkHostName(host); err != nil {
		return err
	}
	if p.AllowPrivate {
		return nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return invalidURL("host %s is not allowed (loopback)", host)
	}
	if numericLabel(name[strings.LastIndexByte(name, '.')+1:]) {
		return invalidURL("host %s looks like an IPv4 address in an unusual form; write the address or a name", host)
	}
	return nil
}

// parseURL is the structural half of CheckURL, also what Send insists on
// before it dials (the address itself is checked at the connection).
func (p Policy) parseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, invalidURL("is empty")
	}
	if len(raw) > maxURLBytes {
		return nil, invalidURL("is longer than %d bytes", maxURLBytes)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f {
			return nil, invalidURL("contains a control character or a space at byte %d", i)
		}
	}
	if strings.Contains(raw, "#") {
		return nil, invalidURL("must not have a fragment (#...)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalidURL("is not a valid URL")
	}
	switch {
	case !u.IsAbs():
		return nil, invalidURL("must be absolute (https://...)")
	case u.Scheme == "http" && !p.AllowHTTP, u.Scheme != "https" && u.Scheme != "http":
		return nil, invalidURL("must use https")
	case u.Opaque != "" || u.Hostname() == "":
		return nil, invalidURL("must have a host (https://host/...)")
	case u.User != nil:
		return nil, invalidURL("must not contain a user name or password")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, invalidURL("has an invalid port %q", port)
		}
	}
	return u, nil
}

// parseIP reads an IP-literal host in any notation net/url hands over,
// IPv6 zones included.
func parseIP(host string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(host)
	return ip, err == nil
}

// checkHostName keeps names to what DNS can resolve; internationalised names
// must come in their punycode (xn--) form.
func checkHostName(host string) error {
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 {
		return invalidURL("has an invalid host name")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return invalidURL("has an invalid host name %q", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return invalidURL("has an invalid host name %q (letters, digits, '-' and '.' only; punycode for international names)", host)
			}
		}
	}
	return nil
}

// numericLabel reports whether a label is all decimal digits or a 0x hex
// number: the forms inet_aton accepts as an IPv4 part.
func numericLabel(label string) bool {
	if rest, ok := strings.CutPrefix(strings.ToLower(label), "0x"); ok {
		label = rest
		if label == "" {
			return true
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(label); i++ {
		if c := label[i]; c < '0' || c > '9' {
			return false
		}
	}
	return label != ""
}

func invalidURL(format string, args ...any) *apperr.Error {
	return apperr.Invalid("url", "url "+format, args...)
}
