// Package servertest runs services in tests on a real gRPC server, with
// every interceptor of production (auth, validation, error mapping), over an
// in-memory connection.
package servertest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/server"
)

// Env is a running test server.
type Env struct {
	// Conn is a client connection to the server.
	Conn *grpc.ClientConn
	// Keys signs the tokens the server accepts.
	Keys *auth.Keys
	// Clock is the clock the server's token checks use; services under test
	// should use it too.
	Clock *clock.Manual

	lis *bufconn.Listener
}

// Option changes the server's dependencies.
type Option func(*server.Deps)

// WithAudit records the audited calls with rec.
func WithAudit(rec *audit.Recorder) Option { return func(d *server.Deps) { d.Audit = rec } }

// Start serves what register adds under policy, and stops it when the test
// ends.
func Start(t testing.TB, clk *clock.Manual, policy auth.Policy, register func(*grpc.Server), opts ...Option) *Env {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeys(key, clk)
	lifetime, stop := context.WithCancel(context.Background())
	var cfg server.Config
	cfg.MaxRecvMsgBytes = 8 << 20
	cfg.MaxConcurrentStreams = 1024
	cfg.MaxDeadline = 30 * time.Second
	cfg.KeepaliveMinTime = 10 * time.Second
	deps := server.Deps{
		Logger:         slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Keys:           keys,
		Policy:         policy,
		TracerProvider: noop.NewTracerProvider(),
		Lifetime:       lifetime,
	}
	for _, o := range opts {
		o(&deps)
	}
	srv, _, err := server.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	register(srv)
	e := &Env{Keys: keys, Clock: clk, lis: bufconn.Listen(1 << 20)}
	go srv.Serve(e.lis)
	t.Cleanup(func() {
		stop()
		srv.Stop()
	})
	e.Conn = e.Dial(t)
	return e
}

// Dial returns another client connection to the server, with opts, closed
// when the test ends.
func (e *Env) Dial(t testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufconn", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return e.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// As returns a context whose calls carry a token for facility (an ID or
// resource name) in community with the given roles.
func (e *Env) As(t testing.TB, community, facility string, roles ...typev1.Role) context.Context {
	t.Helper()
	if len(facility) < 11 || facility[:11] != "facilities/" {
		facility = "facilities/" + facility
	}
	tok, err := e.Keys.Issue(auth.Caller{Subject: "test", Community: community, Facility: facility, Roles: roles}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return WithToken(context.Background(), tok)
}

// WithToken returns ctx whose calls carry tok as bearer token.
func WithToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}
