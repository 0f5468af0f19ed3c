package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// Policy says which roles may call each method, by full method name
// (`/mcc.directory.v1.DirectoryService/CreateFacility`). A method that is not
// in the policy can be called by nobody: access is denied by default, so a new
// RPC is closed until someone decides who may call it. A method mapped to nil
// needs no token at all (only the client-credentials grant, which is how a
// client gets its first token).
//
// Client tokens carry scopes too; a method needs `<service>.read` when its
// name starts with one of ReadPrefixes and `<service>.write` otherwise, or
// `*`. The scope is derived from the method, so no service keeps a second
// table.
type Policy map[string][]typev1.Role

// ReadPrefixes are the method name prefixes that only read.
var ReadPrefixes = []string{"Get", "List", "Watch", "Check", "Match", "Poll", "Search", "Export", "Verify"}

// ScopeFree are the methods any token may call whatever its scopes: a
// client may always revoke its own token (RFC 7009).
var ScopeFree = []string{"/mcc.directory.v1.DirectoryService/RevokeToken"}

// Scope returns the scope a client token needs to call method.
func Scope(method string) string {
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	parts := strings.Split(svc, ".")
	service := svc
	if len(parts) >= 2 {
		service = parts[1]
	}
	for _, p := range ReadPrefixes {
		if strings.HasPrefix(name, p) {
			return service + ".read"
		}
	}
	return service + ".write"
}

// Revocations tells whether a token was revoked after it was issued.
type Revocations interface {
	Revoked(Caller) bool
}

// Merge adds the entries of other to p.
func (p Policy) Merge(other Policy) {
	for m, roles := range other {
		p[m] = roles
	}
}

// AnyRole lists every role but the unspecified one, for methods any
// authenticated caller of the community may call.
func AnyRole() []typev1.Role {
	var roles []typev1.Role
	for v := range typev1.Role_name {
		if v != 0 {
			roles = append(roles, typev1.Role(v))
		}
	}
	slices.Sort(roles)
	return roles
}

// needsToken reports whether a method needs a token: all but health checks
// and reflection, which carry no community data, and the methods the policy
// maps to nil.
func needsToken(policy Policy) selector.Matcher {
	return selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		if strings.HasPrefix(c.Service, "grpc.health.") || strings.HasPrefix(c.Service, "grpc.reflection.") {
			return false
		}
		roles, ok := policy[c.FullMethod()]
		return !ok || roles != nil
	})
}

// UnaryServerInterceptors authenticate the bearer token of every call that
// needs one (refusing revoked tokens when rev is not nil), then authorize the
// caller's roles and scopes against policy.
func UnaryServerInterceptors(keys *Keys, policy Policy, rev Revocations) []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{UnaryAuthenticator(keys, policy, rev), UnaryAuthorizer(policy)}
}

// StreamServerInterceptors are UnaryServerInterceptors for streams.
func StreamServerInterceptors(keys *Keys, policy Policy, rev Revocations) []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{StreamAuthenticator(keys, policy, rev), StreamAuthorizer(policy)}
}

// UnaryAuthenticator is the first half of UnaryServerInterceptors: it puts
// the verified caller into the context. Interceptors that need the caller
// even when authorization refuses it (the audit trail) run between the two.
func UnaryAuthenticator(keys *Keys, policy Policy, rev Revocations) grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(authenticate(keys, rev)), needsToken(policy))
}

// UnaryAuthorizer is the second half of UnaryServerInterceptors: it checks
// the caller's roles and scopes against policy.
func UnaryAuthorizer(policy Policy) grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := authorize(ctx, policy, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}, needsToken(policy))
}

// StreamAuthenticator is UnaryAuthenticator for streams.
func StreamAuthenticator(keys *Keys, policy Policy, rev Revocations) grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(authenticate(keys, rev)), needsToken(policy))
}

// StreamAuthorizer is UnaryAuthorizer for streams.
func StreamAuthorizer(policy Policy) grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := authorize(ss.Context(), policy, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}, needsToken(policy))
}

func authenticate(keys *Keys, rev Revocations) grpcauth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		token, err := grpcauth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, "missing bearer token")
		}
		c, err := keys.Verify(token)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		if rev != nil && rev.Revoked(c) {
			return nil, status.Error(codes.Unauthenticated, "token revoked")
		}
		return WithCaller(ctx, c), nil
	}
}

func authorize(ctx context.Context, policy Policy, method string) error {
	c, ok := CallerFrom(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no caller")
	}
	allowed, ok := policy[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not open to any role", method)
	}
	short := method[strings.LastIndex(method, "/")+1:]
	if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, "*") && !slices.Contains(c.Scopes, Scope(method)) && !slices.Contains(ScopeFree, method) {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("your token's scopes do not include %s, which %s needs", Scope(method), short))
	}
	for _, r := range c.Roles {
		if slices.Contains(allowed, r) {
			return nil
		}
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("your roles may not call %s", short))
}
