package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

var now = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func newKeys(t *testing.T, clk clock.Clock, previous ...ed25519.PublicKey) (*Keys, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return NewKeys(priv, clk, previous...), priv
}

var clinic = Caller{Subject: "doc", Community: "urad", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}

func TestIssueAndVerify(t *testing.T) {
	clk := clock.NewManual(now)
	keys, _ := newKeys(t, clk)
	tok, err := keys.Issue(clinic, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := keys.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "doc" || got.Community != "urad" || got.Facility != "facilities/dls" || !got.Has(typev1.Role_ROLE_CLINICIAN) || got.TokenID == "" {
		t.Errorf("verified caller %+v", got)
	}
	clk.Advance(time.Hour + time.Second)
	if _, err := keys.Verify(tok); !errors.Is(err, apierr.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
}

func TestVerifyRefusesForgeries(t *testing.T) {
	clk := clock.NewManual(now)
	keys, priv := newKeys(t, clk)
	other, _ := newKeys(t, clk)
	pub := priv.Public().(ed25519.PublicKey)
	valid := claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: Issuer, Audience: jwt.ClaimStrings{Audience}, Subject: "x",
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))},
		Community: "urad", Facility: "facilities/dls", Roles: []string{"admin"},
	}
	sign := func(method jwt.SigningMethod, key any, c claims, kid string) string {
		tok := jwt.NewWithClaims(method, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(edit func(*claims)) claims {
		c := valid
		edit(&c)
		return c
	}
	otherTok, _ := other.Issue(clinic, time.Hour)
	tests := map[string]string{
		"alg none":                        sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid, keys.kid),
		"HS256 keyed with the public key": sign(jwt.SigningMethodHS256, []byte(pub), valid, keys.kid),
		"another community's key":         otherTok,
		"unknown kid":                     sign(jwt.SigningMethodEdDSA, priv, valid, "nope"),
		"wrong audience":                  sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.Audience = jwt.ClaimStrings{"other"} }), keys.kid),
		"wrong issuer":                    sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.Issuer = "evil" }), keys.kid),
		"not valid yet":                   sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }), keys.kid),
		"no expiry":                       sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.ExpiresAt = nil }), keys.kid),
		"no community":                    sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.Community = "" }), keys.kid),
		"bad community":                   sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.Community = "{a}" }), keys.kid),
		"unknown role":                    sign(jwt.SigningMethodEdDSA, priv, with(func(c *claims) { c.Roles = []string{"superuser"} }), keys.kid),
		"garbage":                         "a.b.c",
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			if c, err := keys.Verify(tok); !errors.Is(err, apierr.ErrUnauthenticated) {
				t.Errorf("accepted: %+v, %v", c, err)
			}
		})
	}
	if _, err := keys.Verify(sign(jwt.SigningMethodEdDSA, priv, valid, keys.kid)); err != nil {
		t.Errorf("the valid control token was refused: %v", err)
	}
}

func TestRotationAcceptsThePreviousKey(t *testing.T) {
	clk := clock.NewManual(now)
	old, oldPriv := newKeys(t, clk)
	tok, _ := old.Issue(clinic, time.Hour)
	rotated, _ := newKeys(t, clk, oldPriv.Public().(ed25519.PublicKey))
	if _, err := rotated.Verify(tok); err != nil {
		t.Errorf("token of the previous key refused after rotation: %v", err)
	}
	fresh, _ := newKeys(t, clk)
	if _, err := fresh.Verify(tok); err == nil {
		t.Error("token accepted by keys that do not list its key")
	}
}

func TestLoadKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	if _, _, err := LoadKeys(path, false, clock.System{}); err == nil {
		t.Fatal("loaded a missing key without create")
	}
	k1, created, err := LoadKeys(path, true, clock.System{})
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	k2, created, err := LoadKeys(path, true, clock.System{})
	if err != nil || created {
		t.Fatalf("reload: %v %v", created, err)
	}
	tok, _ := k1.Issue(clinic, time.Hour)
	if _, err := k2.Verify(tok); err != nil {
		t.Errorf("reloaded key does not verify: %v", err)
	}
}

func TestParseRole(t *testing.T) {
	for in, want := range map[string]typev1.Role{"clinician": typev1.Role_ROLE_CLINICIAN, "LAB_TECHNOLOGIST": typev1.Role_ROLE_LAB_TECHNOLOGIST, "ROLE_ADMIN": typev1.Role_ROLE_ADMIN} {
		if got, err := ParseRole(in); err != nil || got != want {
			t.Errorf("ParseRole(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "unspecified", "root"} {
		if _, err := ParseRole(bad); err == nil {
			t.Errorf("ParseRole(%q) accepted", bad)
		}
	}
}

func TestSystemCommunityIsForServices(t *testing.T) {
	keys, _ := newKeys(t, clock.NewManual(now))
	person, _ := keys.Issue(Caller{Subject: "x", Community: SystemCommunity, Facility: "facilities/a", Roles: []typev1.Role{typev1.Role_ROLE_ADMIN}}, time.Hour)
	if _, err := keys.Verify(person); !errors.Is(err, apierr.ErrUnauthenticated) {
		t.Errorf("a person's token for %s: %v", SystemCommunity, err)
	}
	svc, _ := keys.Issue(ServiceCaller(SystemCommunity, "facilities/mcc-system", "lab"), time.Hour)
	if _, err := keys.Verify(svc); err != nil {
		t.Errorf("a service token for %s: %v", SystemCommunity, err)
	}
}

func TestClientClaimsRoundTrip(t *testing.T) {
	keys, _ := newKeys(t, clock.NewManual(now))
	tok, _ := keys.Issue(Caller{Subject: "clients/1", Community: "urad", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}, ClientID: "1@urad", Scopes: []string{"lab.read", "lab.write"}}, time.Hour)
	c, err := keys.Verify(tok)
	if err != nil || c.ClientID != "1@urad" || len(c.Scopes) != 2 || !c.IssuedAt.Equal(now) {
		t.Errorf("verified %+v, %v", c, err)
	}
}

func TestScope(t *testing.T) {
	for method, want := range map[string]string{
		"/mcc.lab.v1.LabService/GetOrder":                         "lab.read",
		"/mcc.lab.v1.LabService/ListOrders":                       "lab.read",
		"/mcc.lab.v1.LabService/CreateOrder":                      "lab.write",
		"/mcc.recognition.v1.RecognitionService/CheckRecognition": "recognition.read",
		"/mcc.feed.v1.FeedService/Poll":                           "feed.read",
		"/mcc.referral.v1.ReferralService/AcceptReferral":         "referral.write",
	} {
		if got := Scope(method); got != want {
			t.Errorf("Scope(%s) = %s, want %s", method, got, want)
		}
	}
}

func TestRevocationList(t *testing.T) {
	var l RevocationList
	c := Caller{Community: "urad", TokenID: "t1", ClientID: "c1@urad", IssuedAt: now}
	if l.Revoked(c) {
		t.Fatal("revoked by an empty list")
	}
	l.Replace(map[string]time.Time{"c1@urad": now.Add(time.Minute)}, nil)
	if !l.Revoked(c) {
		t.Error("a token issued before its client was revoked is accepted")
	}
	later := c
	later.IssuedAt = now.Add(2 * time.Minute)
	if l.Revoked(later) {
		t.Error("a token issued after the revocation is refused (the client would have no token at all to get it)")
	}
	l.Replace(nil, map[string]bool{"urad/t1": true})
	if !l.Revoked(c) {
		t.Error("a revoked token ID is accepted")
	}
	other := c
	other.Community = "elsewhere"
	if l.Revoked(other) {
		t.Error("a token ID of another community is refused")
	}
}

// TestVerifiedTokensStillExpire: Verify remembers a checked token, but a
// remembered token is refused once expired, and is never accepted before it
// is valid; what the caller gets is its own copy.
func TestVerifiedTokensStillExpire(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC))
	keys := NewKeys(key, clk)
	tok, err := keys.Issue(Caller{Subject: "d", Community: "demo", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		c, err := keys.Verify(tok)
		if err != nil || c.Subject != "d" || len(c.Roles) != 1 {
			t.Fatalf("verification %d: %v %v", i, c, err)
		}
		c.Roles[0] = typev1.Role_ROLE_ADMIN
	}
	if c, _ := keys.Verify(tok); c.Roles[0] != typev1.Role_ROLE_CLINICIAN {
		t.Errorf("a caller's change to its roles reached the cache: %v", c.Roles)
	}
	clk.Advance(time.Minute)
	if _, err := keys.Verify(tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired remembered token: %v", err)
	}
	clk.Advance(-2 * time.Hour)
	if _, err := keys.Verify(tok); err == nil {
		t.Error("a remembered token was accepted before it was issued")
	}
}
