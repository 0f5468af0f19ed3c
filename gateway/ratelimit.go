package gateway

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Limiter decides whether a caller may make one more call now. Allow
// returns how long to wait when it may not.
type Limiter interface {
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}

// KeyFunc names the caller a request is counted against: its client, or
// its address when it has no valid token.
type KeyFunc func(*http.Request) string

// WithRateLimit counts every API and OAuth2 call against its caller's
// limit and answers 429 with Retry-After beyond it.
func WithRateLimit(l Limiter, key KeyFunc) Option {
	return func(o *options) { o.limiter, o.limitKey = l, key }
}

// rateLimit applies the limiter. A limiter that fails (Redis unreachable)
// lets the call through: the limit protects the services, it must not take
// them down with it.
func rateLimit(l Limiter, key KeyFunc, next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait, err := l.Allow(r.Context(), key(r))
		if err == nil && !ok {
			secs := int(wait.Seconds())
			if time.Duration(secs)*time.Second < wait {
				secs++
			}
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			writeError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "too many requests from this client; retry after the time in Retry-After")
			return
		}
		next.ServeHTTP(w, r)
	})
}
