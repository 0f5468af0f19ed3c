package ratelimit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/countymcc/mcc/gateway"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/ratelimit"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

// testLimiter checks a limiter of 1 call/s with bursts of 3: three calls
// pass at once, the fourth waits about a second, and keys are separate.
func testLimiter(t *testing.T, l gateway.Limiter) {
	ctx := context.Background()
	for i := range 3 {
		if ok, _, err := l.Allow(ctx, "a"); !ok || err != nil {
			t.Fatalf("call %d of the burst refused: %v", i+1, err)
		}
	}
	ok, wait, err := l.Allow(ctx, "a")
	if ok || err != nil || wait <= 0 || wait > 2*time.Second {
		t.Fatalf("fourth call: ok=%v wait=%v err=%v; want refused with a wait of about 1s", ok, wait, err)
	}
	if ok, _, _ := l.Allow(ctx, "b"); !ok {
		t.Error("another key shares the first one's bucket")
	}
}

func TestMemory(t *testing.T) { testLimiter(t, ratelimit.NewMemory(1, 3)) }

func TestRedis(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: redistest.Start(t)})
	defer c.Close()
	testLimiter(t, ratelimit.NewRedis(c, redistest.Prefix(t), 1, 3))
}

func TestKey(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := auth.NewKeys(priv, clock.System{})
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	forger := auth.NewKeys(otherPriv, clock.System{})
	person := auth.Caller{Subject: "doc", Community: "urad", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
	client := person
	client.ClientID = "x@urad"
	tok := func(k *auth.Keys, c auth.Caller) string {
		s, err := k.Issue(c, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	key := ratelimit.Key(keys)
	for name, tc := range map[string]struct{ header, want string }{
		"person":       {"Bearer " + tok(keys, person), "user:urad/facilities/dls/doc"},
		"client":       {"Bearer " + tok(keys, client), "client:x@urad"},
		"forged token": {"Bearer " + tok(forger, client), "ip:192.0.2.1"},
		"no token":     {"", "ip:192.0.2.1"},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/facilities", nil)
			r.RemoteAddr = "192.0.2.1:4000"
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := key(r); got != tc.want {
				t.Errorf("key = %q, want %q", got, tc.want)
			}
		})
	}
}
