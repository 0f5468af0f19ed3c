package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/keyfile"
)

// Issuer and Audience are the iss and aud of every MCC token. A token meant
// for another system is refused even if it were signed with our key.
const (
	Issuer   = "mcc"
	Audience = "mcc"
)

// SystemCommunity is the partition of what spans communities (the
// revocations). Only MCC's own services may name it in a token.
const SystemCommunity = "mcc-system"

// signingKeyType is the PEM block type of the signing key file (PKCS #8, as
// openssl writes it).
const signingKeyType = "PRIVATE KEY"

// claims is the JWT payload.
type claims struct {
	jwt.RegisteredClaims
	Community string   `json:"community"`
	Facility  string   `json:"facility"`
	Roles     []string `json:"roles"`
	ClientID  string   `json:"client_id,omitempty"`
	// Scope is space-separated, as in OAuth2.
	Scope string `json:"scope,omitempty"`
}

// Keys signs and verifies tokens. It signs with one key and verifies with
// that key and any previous ones, so tokens survive a key rotation until they
// expire.
type Keys struct {
	signing ed25519.PrivateKey
	kid     string
	verify  map[string]ed25519.PublicKey
	clock   clock.Clock
	// verified remembers the tokens whose signature and claims Verify has
	// checked, so that a client's next calls with the same token skip the
	// Ed25519 verification and the JSON decoding (a third of a call's CPU).
	// The validity period is still checked on every call, and revocation
	// is checked by the interceptor after Verify, as before.
	mu       sync.Mutex
	verified map[string]verifiedToken
}

// verifiedToken is a token Verify accepted, with its validity period.
type verifiedToken struct {
	caller     Caller
	validFrom  time.Time
	validUntil time.Time
}

// maxVerified bounds the verified-token cache; when it is full it is
// emptied, which costs only a verification per token in use.
const maxVerified = 10000

// NewKeys returns Keys that sign with key and also accept tokens signed by
// the previous keys.
func NewKeys(key ed25519.PrivateKey, clk clock.Clock, previous ...ed25519.PublicKey) *Keys {
	pub := key.Public().(ed25519.PublicKey)
	k := &Keys{signing: key, kid: KeyID(pub), verify: map[string]ed25519.PublicKey{}, clock: clk}
	k.verify[k.kid] = pub
	for _, p := range previous {
		k.verify[KeyID(p)] = p
	}
	return k
}

// LoadKeys reads the signing key at path. If the file does not exist and
// create is true, it generates one; created reports that. The returned keys
// also accept tokens of the previous keys given.
func LoadKeys(path string, create bool, clk clock.Clock, previous ...ed25519.PublicKey) (keys *Keys, created bool, err error) {
	var gen func() ([]byte, error)
	if create {
		gen = func() ([]byte, error) {
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return nil, err
			}
			return x509.MarshalPKCS8PrivateKey(priv)
		}
	}
	der, created, err := keyfile.LoadOrCreate(path, signingKeyType, gen)
	if err != nil {
		return nil, false, fmt.Errorf("signing key: %w", err)
	}
	priv, err := parseSigningKey(path, der)
	if err != nil {
		return nil, false, fmt.Errorf("signing key %w", err)
	}
	return NewKeys(priv, clk, previous...), created, nil
}

// parseSigningKey parses the DER of the Ed25519 signing key in the file at
// path; its errors start with the path.
func parseSigningKey(path string, der []byte) (ed25519.PrivateKey, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return priv, nil
}

// LoadPrevious reads previous signing keys (the PEM files rotation left
// behind) and returns their public halves, to pass to NewKeys.
func LoadPrevious(paths []string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for _, p := range paths {
		der, _, err := keyfile.LoadOrCreate(p, signingKeyType, nil)
		if err != nil {
			return nil, fmt.Errorf("previous signing key: %w", err)
		}
		priv, err := parseSigningKey(p, der)
		if err != nil {
			return nil, fmt.Errorf("previous signing key %w", err)
		}
		out = append(out, priv.Public().(ed25519.PublicKey))
	}
	return out, nil
}

// Rotate replaces the signing key at path with a new one, and keeps the old
// one beside it as signing-<kid>.key, where LoadKeys's callers find it to
// go on accepting the tokens it signed. It returns the old key's file.
func Rotate(path string) (string, error) {
	old, _, err := LoadKeys(path, false, clock.System{})
	if err != nil {
		return "", err
	}
	kept := filepath.Join(filepath.Dir(path), "signing-"+old.kid+".key")
	if err := os.Rename(path, kept); err != nil {
		return "", fmt.Errorf("keep the old signing key: %w", err)
	}
	if _, _, err := LoadKeys(path, true, clock.System{}); err != nil {
		return kept, err
	}
	return kept, nil
}

// PreviousKeyFiles lists the signing-*.key files beside the signing key at
// path, which Rotate left there.
func PreviousKeyFiles(path string) ([]string, error) {
	return filepath.Glob(filepath.Join(filepath.Dir(path), "signing-*.key"))
}

// KeyID is the kid of a public key: the start of its SHA-256, base64url.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// Issue returns a signed token for c, valid for ttl from now.
func (k *Keys) Issue(c Caller, ttl time.Duration) (string, error) {
	if c.Community == "" || c.Facility == "" || len(c.Roles) == 0 {
		return "", errors.New("a token needs a community, a facility and at least one role")
	}
	now := k.clock.Now()
	roles := make([]string, len(c.Roles))
	for i, r := range c.Roles {
		roles[i] = RoleName(r)
	}
	id := c.TokenID
	if id == "" {
		id = uuid.NewString()
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   c.Subject,
			Audience:  jwt.ClaimStrings{Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        id,
		},
		Community: c.Community,
		Facility:  c.Facility,
		Roles:     roles,
		ClientID:  c.ClientID,
		Scope:     strings.Join(c.Scopes, " "),
	})
	tok.Header["kid"] = k.kid
	return tok.SignedString(k.signing)
}

// Verify checks a token's signature, issuer, audience and validity period,
// and returns its caller. Every failure wraps apierr.ErrUnauthenticated.
func (k *Keys) Verify(token string) (Caller, error) {
	now := k.clock.Now()
	k.mu.Lock()
	v, ok := k.verified[token]
	k.mu.Unlock()
	if ok && !now.Before(v.validFrom) && now.Before(v.validUntil) {
		c := v.caller
		c.Roles, c.Scopes = slices.Clone(c.Roles), slices.Clone(c.Scopes)
		return c, nil
	}
	c, cl, err := k.parse(token, true)
	if err != nil {
		return Caller{}, err
	}
	v = verifiedToken{caller: c, validUntil: cl.ExpiresAt.Time}
	c.Roles, c.Scopes = slices.Clone(c.Roles), slices.Clone(c.Scopes)
	if cl.IssuedAt != nil {
		v.validFrom = cl.IssuedAt.Time
	}
	if cl.NotBefore != nil && cl.NotBefore.After(v.validFrom) {
		v.validFrom = cl.NotBefore.Time
	}
	k.mu.Lock()
	if k.verified == nil || len(k.verified) >= maxVerified {
		k.verified = map[string]verifiedToken{}
	}
	k.verified[token] = v
	k.mu.Unlock()
	return c, nil
}

// Parse is Verify without the claims checks: it checks only the signature
// of a token that may have expired. Revocation uses it, since revoking an
// expired token is allowed (and does nothing).
func (k *Keys) Parse(token string) (Caller, error) {
	c, _, err := k.parse(token, false)
	return c, err
}

func (k *Keys) parse(token string, checkTime bool) (Caller, claims, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(k.clock.Now),
	}
	if !checkTime {
		// Only the signature and the algorithm matter here.
		opts = []jwt.ParserOption{jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithoutClaimsValidation()}
	}
	var cl claims
	_, err := jwt.ParseWithClaims(token, &cl, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		pub, ok := k.verify[kid]
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return pub, nil
	}, opts...)
	if err != nil {
		return Caller{}, claims{}, fmt.Errorf("%w: %s", apierr.ErrUnauthenticated, describe(err))
	}
	c := Caller{Subject: cl.Subject, Community: cl.Community, Facility: cl.Facility, TokenID: cl.ID, ClientID: cl.ClientID, Scopes: strings.Fields(cl.Scope)}
	if cl.IssuedAt != nil {
		c.IssuedAt = cl.IssuedAt.Time
	}
	if c.Partition().Validate() != nil || !strings.HasPrefix(c.Facility, "facilities/") || len(cl.Roles) == 0 {
		return Caller{}, claims{}, fmt.Errorf("%w: token lacks a valid community, facility or roles", apierr.ErrUnauthenticated)
	}
	for _, r := range cl.Roles {
		role, err := ParseRole(r)
		if err != nil {
			return Caller{}, claims{}, fmt.Errorf("%w: %v", apierr.ErrUnauthenticated, err)
		}
		c.Roles = append(c.Roles, role)
	}
	if c.Community == SystemCommunity && !c.Has(typev1.Role_ROLE_SERVICE) {
		return Caller{}, claims{}, fmt.Errorf("%w: %s is not a community", apierr.ErrUnauthenticated, SystemCommunity)
	}
	return c, cl, nil
}

// describe turns a jwt error into a short reason that is safe to return to
// the caller.
func describe(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token is for another audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token from another issuer"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "token signature invalid"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token malformed"
	default:
		return "token invalid"
	}
}

// ServiceCaller is the identity MCC's own services use when they call each
// other: the service role in community, acting for facility.
func ServiceCaller(community, facility, service string) Caller {
	return Caller{Subject: "service:" + service, Community: community, Facility: facility, Roles: []typev1.Role{typev1.Role_ROLE_SERVICE}}
}
