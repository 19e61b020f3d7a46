package outbound

import (
	"unicode"
	"unicode/utf8"
)

// maxBodyBytes bounds Response.Body, counted after sanitising.
const maxBodyBytes = 1024

// displayBody makes the start of a response body safe to show in an admin
// screen: invalid UTF-8, control and format characters (bidi overrides among
// them) become U+FFFD, except tab and line breaks, which become spaces; the
// result is at most maxBodyBytes bytes and ends on a whole character.
func displayBody(raw []byte) string {
	out := make([]byte, 0, min(len(raw), maxBodyBytes))
	for len(raw) > 0 {
		r, size := utf8.DecodeRune(raw)
		raw = raw[size:]
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			r = utf8.RuneError
		}
		if len(out)+utf8.RuneLen(r) > maxBodyBytes {
			break
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}
