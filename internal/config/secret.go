package config

import (
	"fmt"
	"math"
)

// minSecretBits is the least estimated entropy of a production secret.
// Random secrets clear it easily (32 random hex characters score about 110
// bits, 32 random base64 characters about 150); a repeated character, a
// short pattern or a word repeated to length does not.
const minSecretBits = 100

// weakSecret says why s is too weak to guard production, or "" if it is
// not: shorter than minLen bytes, or with too little estimated entropy (the
// Shannon entropy of its characters, times its length). The estimate
// cannot prove a secret random; it catches the placeholders people paste.
func weakSecret(s string, minLen int) string {
	if len(s) < minLen {
		return fmt.Sprintf("must be at least %d bytes in production", minLen)
	}
	if bits := entropyBits(s); bits < minSecretBits {
		return fmt.Sprintf("looks guessable (about %.0f bits of entropy; at least %d are needed)", bits, minSecretBits)
	}
	return ""
}

func entropyBits(s string) float64 {
	counts := map[byte]int{}
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	perByte := 0.0
	for _, n := range counts {
		p := float64(n) / float64(len(s))
		perByte -= p * math.Log2(p)
	}
	return perByte * float64(len(s))
}
