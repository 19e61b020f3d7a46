package server

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"golang.org/x/time/rate"

	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// rateLimiter gives each caller a token bucket: a verified caller by token
// subject and role, an anonymous one by client address. Buckets idle for a
// while are dropped so memory stays bounded by active callers.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	limiter *rate.Limiter
	seen    time.Time
}

const bucketIdle = 10 * time.Minute

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*bucket{}, swept: time.Now()}
}

// wait returns how long the caller must wait before this request would be
// allowed; zero means it is allowed now (and counted).
func (l *rateLimiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > bucketIdle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > bucketIdle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{limiter: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.limiter.ReserveN(now, 1)
	if !r.OK() {
		return time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// middleware answers 429 with Retry-After (whole seconds) past the limit.
// It runs after authentication, so a caller with a token has one bucket
// wherever it connects from.
func (l *rateLimiter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := "addr:" + clientAddr(r)
		if c, ok := auth.FromContext(r.Context()); ok {
			key = c.Key()
		}
		if d := l.wait(key, time.Now()); d > 0 {
			tooManyRequests(w, d)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Failed authentication: a client address may present this many bad
// tokens at once, then one a second. A bad token is refused before any
// bucket of a caller is known, so without this, guessing or replaying
// tokens (and an RS256 signature check each) would be free.
const (
	authFailuresPerSecond = 1
	authFailureBurst      = 20
)

// failedAuth wraps authentication: an address that has used up its failure
// budget is answered 429 before its token is even checked, and every 401
// that authentication answers spends from that budget.
func (l *rateLimiter) failedAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			next.ServeHTTP(w, r)
			return
		}
		key := "addr:" + clientAddr(r)
		if d := l.peek(key, time.Now()); d > 0 {
			tooManyRequests(w, d)
			return
		}
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		if ww.Status() == http.StatusUnauthorized {
			l.wait(key, time.Now())
		}
	})
}

// peek is how long the key must wait before its next request would be
// allowed, without counting one.
func (l *rateLimiter) peek(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return 0
	}
	missing := 1 - b.limiter.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(l.limit) * float64(time.Second))
}

func tooManyRequests(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
	graph.WriteRequestError(w, http.StatusTooManyRequests, apperr.RateLimited, "too many requests; retry later")
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
