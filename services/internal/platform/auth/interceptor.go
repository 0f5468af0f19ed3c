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
// RPC is closed until someone decides who may call it.
type Policy map[string][]typev1.Role

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

// public reports whether a method needs no token: health checks and
// reflection, which carry no community data.
func public(_ context.Context, c interceptors.CallMeta) bool {
	return !strings.HasPrefix(c.Service, "grpc.health.") && !strings.HasPrefix(c.Service, "grpc.reflection.")
}

// UnaryServerInterceptors authenticate the bearer token of every call but the
// public ones, then authorize the caller's roles against policy.
func UnaryServerInterceptors(keys *Keys, policy Policy) []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{
		selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(authenticate(keys)), selector.MatchFunc(public)),
		selector.UnaryServerInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := authorize(ctx, policy, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}, selector.MatchFunc(public)),
	}
}

// StreamServerInterceptors are UnaryServerInterceptors for streams.
func StreamServerInterceptors(keys *Keys, policy Policy) []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{
		selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(authenticate(keys)), selector.MatchFunc(public)),
		selector.StreamServerInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := authorize(ss.Context(), policy, info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}, selector.MatchFunc(public)),
	}
}

func authenticate(keys *Keys) grpcauth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		token, err := grpcauth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, "missing bearer token")
		}
		c, err := keys.Verify(token)
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
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
	for _, r := range c.Roles {
		if slices.Contains(allowed, r) {
			return nil
		}
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("your roles may not call %s", method[strings.LastIndex(method, "/")+1:]))
}
