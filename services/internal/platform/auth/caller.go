// Package auth verifies the bearer tokens of MCC and says who is calling.
//
// Tokens are JWTs signed with the community's Ed25519 key (EdDSA). They carry
// the caller's community, facility and roles; services never trust a facility
// named in a request body. Verification happens in a server interceptor on
// every service, so a call between services is checked like any other.
package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/store"
)

// Caller is the authenticated identity of a request.
type Caller struct {
	// Subject is the practitioner or client the token was issued to.
	Subject string
	// Community is the medical community the caller belongs to. Every record
	// a service reads or writes for this caller is in this community.
	Community string
	// Facility is the resource name of the caller's facility,
	// `facilities/{id}`.
	Facility string
	Roles    []typev1.Role
	// TokenID is the token's jti, for audit and revocation.
	TokenID string
	// ClientID is set for the tokens of OAuth2 clients (integrator
	// systems): `<id>@<community>`.
	ClientID string
	// Scopes limit a client token to some services and to reading or
	// writing (`lab.read`, `referral.write`, `*`). Tokens without scopes
	// (people's tokens) are limited by their roles only.
	Scopes []string
	// IssuedAt is when the token was issued; revoking a client refuses the
	// tokens it got before.
	IssuedAt time.Time
}

// Has reports whether the caller holds role.
func (c Caller) Has(role typev1.Role) bool { return slices.Contains(c.Roles, role) }

// SeesCommunity reports whether the caller may see every facility's records
// of its community: administrators and MCC's own services.
func (c Caller) SeesCommunity() bool {
	return c.Has(typev1.Role_ROLE_ADMIN) || c.Has(typev1.Role_ROLE_SERVICE)
}

// Actor returns the caller as the actor of an event or a state change.
func (c Caller) Actor() *typev1.Actor {
	return &typev1.Actor{Subject: c.Subject, Facility: c.Facility, Roles: slices.Clone(c.Roles)}
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller the auth interceptor put into ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Partition is the store partition of the caller's community, where every
// object the caller may touch is kept.
func (c Caller) Partition() store.Partition { return store.Partition(c.Community) }

// Require returns the caller the auth interceptor put into ctx, or an
// UNAUTHENTICATED error when there is none: the handler of a method the
// policy leaves open, or one called without the interceptor.
func Require(ctx context.Context) (Caller, error) {
	c, ok := CallerFrom(ctx)
	if !ok {
		return Caller{}, apierr.ErrUnauthenticated
	}
	return c, nil
}

// ParseRole parses a role as written in tokens and on the command line:
// "clinician", "lab_technologist", or the enum name "ROLE_CLINICIAN".
func ParseRole(s string) (typev1.Role, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "ROLE_") {
		name = "ROLE_" + name
	}
	v, ok := typev1.Role_value[name]
	if !ok || v == int32(typev1.Role_ROLE_UNSPECIFIED) {
		return 0, fmt.Errorf("unknown role %q", s)
	}
	return typev1.Role(v), nil
}

// RoleName is the token spelling of role: "clinician".
func RoleName(role typev1.Role) string {
	return strings.ToLower(strings.TrimPrefix(role.String(), "ROLE_"))
}
