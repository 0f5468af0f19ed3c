// Package server builds the gRPC server every MCC service runs on, with the
// same interceptors, limits and health reporting everywhere.
package server

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"runtime/debug"
	"time"

	"buf.build/go/protovalidate"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	protovalidatemw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/telemetry"
)

// Config holds the limits of the gRPC server.
type Config struct {
	// MaxRecvMsgBytes caps the size of one request message.
	MaxRecvMsgBytes int
	// MaxConcurrentStreams caps the concurrent calls on one connection.
	MaxConcurrentStreams uint
	// MaxDeadline caps how long a unary call may run, whatever deadline the
	// client asked for (or none). Streams are not capped: they are watches.
	MaxDeadline time.Duration
	// KeepaliveMinTime is the shortest keepalive ping interval a client may
	// use; faster pingers are disconnected.
	KeepaliveMinTime time.Duration
	// ClientKeepalive is how long a connection this process opened to
	// another service (a peer or the gateway's) may be quiet before it is
	// pinged, and ClientKeepaliveTimeout how long the ping may go
	// unanswered before the connection is closed. A connection that died
	// without a reset (a node lost, a conntrack or NAT entry expired)
	// then fails its calls and streams, and the followers of WatchEvents
	// reconnect instead of waiting forever. 0 never pings.
	ClientKeepalive        time.Duration
	ClientKeepaliveTimeout time.Duration
}

// RegisterFlags registers the server flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxRecvMsgBytes, "grpc.max-recv-msg-bytes", 8<<20, "largest gRPC request message accepted, in bytes")
	fs.UintVar(&c.MaxConcurrentStreams, "grpc.max-concurrent-streams", 1024, "most concurrent calls on one gRPC connection")
	fs.DurationVar(&c.MaxDeadline, "grpc.max-deadline", 30*time.Second, "longest time a unary gRPC call may run")
	fs.DurationVar(&c.KeepaliveMinTime, "grpc.keepalive-min-time", 10*time.Second, "shortest keepalive ping interval allowed to clients")
	fs.DurationVar(&c.ClientKeepalive, "grpc.client-keepalive", 30*time.Second, "ping a connection to another service after it has been quiet this long (at least 10s, the least gRPC allows; 0: never)")
	fs.DurationVar(&c.ClientKeepaliveTimeout, "grpc.client-keepalive-timeout", 10*time.Second, "close a connection to another service whose ping goes unanswered this long")
}

// Validate checks the client keepalive against gRPC's own floor, which
// gRPC would otherwise apply silently, and against what the servers allow.
func (c Config) Validate() error {
	if c.ClientKeepalive != 0 && c.ClientKeepalive < 10*time.Second {
		return errors.New("-grpc.client-keepalive: must be 0 or at least 10s")
	}
	if c.ClientKeepalive != 0 && c.ClientKeepaliveTimeout <= 0 {
		return errors.New("-grpc.client-keepalive-timeout: must be positive")
	}
	if c.ClientKeepalive != 0 && c.ClientKeepalive < c.KeepaliveMinTime {
		return errors.New("-grpc.client-keepalive: must not be shorter than -grpc.keepalive-min-time, or the services would drop each other's connections for pinging too often")
	}
	return nil
}

// DialOptions are the options of every connection this process opens to
// another service.
func (c Config) DialOptions() []grpc.DialOption {
	if c.ClientKeepalive <= 0 {
		return nil
	}
	return []grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: c.ClientKeepalive, Timeout: c.ClientKeepaliveTimeout, PermitWithoutStream: true,
	})}
}

// Deps are what the server needs from the rest of the process.
type Deps struct {
	Logger *slog.Logger
	Keys   *auth.Keys
	Policy auth.Policy
	// Revocations, if not nil, refuses revoked tokens.
	Revocations    auth.Revocations
	TracerProvider trace.TracerProvider
	// Metrics, if not nil, records RED metrics per method. Register it with
	// the process's Prometheus registry.
	Metrics *grpcprom.ServerMetrics
	// Lifetime ends when a shutdown stops serving watches (after
	// -shutdown-delay). Streams end with it, UNAVAILABLE, so that draining
	// the server does not wait for watchers that would never hang up by
	// themselves.
	Lifetime context.Context
	// Transport holds the TLS options of the server (none: plaintext).
	Transport []grpc.ServerOption
	// Audit, if not nil, records every call that touches patient data
	// (see package audit). Nil only in tests of other concerns.
	Audit *audit.Recorder
}

// New returns a gRPC server with every MCC interceptor, the health service
// and reflection. The interceptors run in this order: log the call, recover
// from panics, map domain errors to statuses, cap the deadline, authenticate,
// audit, authorize, validate the request with protovalidate, then the
// handler. The audit interceptor sits between authentication and
// authorization, so a call refused by role or by validation is recorded
// with its outcome, and it sees the handler's domain error before the error
// mapping turns it into a status.
func New(cfg Config, d Deps) (*grpc.Server, *health.Server, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, nil, err
	}
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		d.Logger.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		d.Logger.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})

	// Health checks (probes every few seconds, /readyz asking every
	// service) are not logged: they would drown the calls that matter.
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	unary := []grpc.UnaryServerInterceptor{selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, logOpts...), notHealth)}
	stream := []grpc.StreamServerInterceptor{selector.StreamServerInterceptor(logging.StreamServerInterceptor(logger, logOpts...), notHealth)}
	if d.Metrics != nil {
		unary = append(unary, d.Metrics.UnaryServerInterceptor())
		stream = append(stream, d.Metrics.StreamServerInterceptor())
	}
	unary = append(unary,
		recovery.UnaryServerInterceptor(recoverOpt),
		apierr.UnaryServerInterceptor(d.Logger),
		capDeadline(cfg.MaxDeadline),
	)
	stream = append(stream,
		recovery.StreamServerInterceptor(recoverOpt),
		apierr.StreamServerInterceptor(d.Logger),
		endWith(d.Lifetime),
	)
	unary = append(unary, auth.UnaryAuthenticator(d.Keys, d.Policy, d.Revocations))
	stream = append(stream, auth.StreamAuthenticator(d.Keys, d.Policy, d.Revocations))
	if d.Audit != nil {
		unary = append(unary, d.Audit.UnaryServerInterceptor())
		stream = append(stream, d.Audit.StreamServerInterceptor())
	}
	unary = append(unary, auth.UnaryAuthorizer(d.Policy))
	stream = append(stream, auth.StreamAuthorizer(d.Policy))
	unary = append(unary, protovalidatemw.UnaryServerInterceptor(validator), refuseOutputOnly())
	stream = append(stream, protovalidatemw.StreamServerInterceptor(validator))

	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(d.TracerProvider),
			otelgrpc.WithPropagators(telemetry.Propagator()),
		)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		// Stop, too, waits for the handlers it cancels: each commits its
		// call's audit record before returning, and the stores close after.
		grpc.WaitForHandlers(true),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}, d.Transport...)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs, nil
}

// capDeadline bounds every unary call by max, so a client that sends no
// deadline (or a far one) cannot hold server resources forever.
func capDeadline(limit time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > limit {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, limit)
			defer cancel()
		}
		return handler(ctx, req)
	}
}

// ErrStopping ends a stream cut short because the process is stopping.
var ErrStopping = status.Error(codes.Unavailable, "the server is stopping; open the stream again, after the last cursor received")

// endWith cancels every stream's context when lifetime ends; the client
// then gets UNAVAILABLE, which it retries, rather than CANCELLED.
func endWith(lifetime context.Context) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if lifetime == nil {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		stop := context.AfterFunc(lifetime, cancel)
		defer stop()
		wrapped := middleware.WrapServerStream(ss)
		wrapped.WrappedContext = ctx
		err := handler(srv, wrapped)
		if err != nil && lifetime.Err() != nil && ss.Context().Err() == nil {
			return ErrStopping
		}
		return err
	}
}
