// Package ratelimit limits each caller of the gateway to a rate of calls:
// in memory when one gateway runs (embedded mode), in Redis when several
// share the limit (Kubernetes).
package ratelimit

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// Key names the caller of a request: the OAuth2 client, or the subject of
// a person's token (with its community and facility), as verified with
// keys; the peer address when the request has no valid token, so that
// guessing tokens or secrets is limited too. A forged token never picks
// another caller's bucket, because only verified tokens name one.
func Key(keys *auth.Keys) func(*http.Request) string {
	return func(r *http.Request) string {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			if c, err := keys.Verify(strings.TrimSpace(tok)); err == nil {
				if c.ClientID != "" {
					return "client:" + c.ClientID
				}
				return "user:" + c.Community + "/" + c.Facility + "/" + c.Subject
			}
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		return "ip:" + host
	}
}

// Memory is an in-memory limiter: a token bucket per key. Buckets idle for
// longer than idle are dropped, so memory stays bounded by the callers of
// the last minutes.
type Memory struct {
	rate  rate.Limit
	burst int
	idle  time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	limiter *rate.Limiter
	seen    time.Time
}

// NewMemory returns a limiter of perSecond calls per key, with bursts of
// burst.
func NewMemory(perSecond float64, burst int) *Memory {
	return &Memory{rate: rate.Limit(perSecond), burst: burst, idle: 10 * time.Minute, buckets: map[string]*bucket{}}
}

// Allow takes one call from key's bucket.
func (m *Memory) Allow(_ context.Context, key string) (bool, time.Duration, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.swept) > m.idle {
		for k, b := range m.buckets {
			if now.Sub(b.seen) > m.idle {
				delete(m.buckets, k)
			}
		}
		m.swept = now
	}
	b, ok := m.buckets[key]
	if !ok {
		b = &bucket{limiter: rate.NewLimiter(m.rate, m.burst)}
		m.buckets[key] = b
	}
	b.seen = now
	r := b.limiter.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d, nil
	}
	return true, 0, nil
}

// Redis is a limiter shared by every gateway replica through Redis (GCRA,
// go-redis/redis_rate).
type Redis struct {
	limiter *redis_rate.Limiter
	limit   redis_rate.Limit
	prefix  string
}

// NewRedis returns a limiter of perSecond calls per key with bursts of
// burst, keeping its state under prefix.
func NewRedis(client goredis.UniversalClient, prefix string, perSecond float64, burst int) *Redis {
	// redis_rate counts per period; a period of one second at the rate
	// rounded up keeps the rate, and the burst is its own setting.
	per := max(int(perSecond+0.5), 1)
	return &Redis{
		limiter: redis_rate.NewLimiter(client),
		limit:   redis_rate.Limit{Rate: per, Burst: burst, Period: time.Second},
		prefix:  prefix + ":ratelimit:",
	}
}

// Allow takes one call from key's allowance.
func (r *Redis) Allow(ctx context.Context, key string) (bool, time.Duration, error) {
	res, err := r.limiter.Allow(ctx, r.prefix+key, r.limit)
	if err != nil {
		return false, 0, err
	}
	return res.Allowed > 0, res.RetryAfter, nil
}
