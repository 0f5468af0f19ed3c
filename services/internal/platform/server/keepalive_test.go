package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/server"
)

// TestClientKeepaliveDropsASilentlyDeadConnection holds a health watch open
// to an MCC server through a TCP relay that can go silent: it keeps both
// sockets open but passes nothing, as a lost node or an expired NAT entry
// does. While the relay passes traffic the watch outlives a ping (the
// server accepts its rate); once it is silent the watch fails
// within one ping interval and the ping timeout, instead of never.
func TestClientKeepaliveDropsASilentlyDeadConnection(t *testing.T) {
	cfg := server.Config{
		MaxRecvMsgBytes: 1 << 20, MaxConcurrentStreams: 16, MaxDeadline: time.Minute,
		KeepaliveMinTime: 5 * time.Second, ClientKeepalive: 10 * time.Second, ClientKeepaliveTimeout: time.Second,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv, _, err := server.New(cfg, server.Deps{
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Keys: auth.NewKeys(key, clock.System{}),
		TracerProvider: noop.NewTracerProvider(), Lifetime: t.Context(),
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	r := newRelay(t, lis.Addr().String())

	conn, err := grpc.NewClient(r.addr, append(cfg.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		ended <- err
	}()
	select {
	case err := <-ended:
		t.Fatalf("the watch ended while the relay passed traffic (pings refused?): %v", err)
	case <-time.After(12 * time.Second):
	}

	r.silence()
	silent := time.Now()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("the watch ended with %v, want Unavailable", err)
		}
		t.Logf("the watch failed %s after the relay went silent", time.Since(silent).Round(time.Millisecond))
	case <-time.After(cfg.ClientKeepalive + cfg.ClientKeepaliveTimeout + 5*time.Second):
		t.Fatal("the watch is still waiting on a silent connection")
	}
}

func TestValidateClientKeepalive(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  server.Config
		ok   bool
	}{
		{"default", server.Config{KeepaliveMinTime: 10 * time.Second, ClientKeepalive: 30 * time.Second, ClientKeepaliveTimeout: 10 * time.Second}, true},
		{"off", server.Config{KeepaliveMinTime: 10 * time.Second}, true},
		{"under gRPC's floor", server.Config{ClientKeepalive: 5 * time.Second, ClientKeepaliveTimeout: time.Second}, false},
		{"faster than servers allow", server.Config{KeepaliveMinTime: time.Minute, ClientKeepalive: 30 * time.Second, ClientKeepaliveTimeout: time.Second}, false},
		{"no timeout", server.Config{ClientKeepalive: 30 * time.Second}, false},
	} {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// relay passes TCP traffic to a target until it is silenced; then it keeps
// every connection open and drops whatever arrives.
type relay struct {
	addr   string
	mu     sync.Mutex
	silent bool
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: lis.Addr().String()}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go r.pipe(in, out)
			go r.pipe(out, in)
		}
	}()
	return r
}

func (r *relay) silence() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.silent = true
}

func (r *relay) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		silent := r.silent
		r.mu.Unlock()
		if !silent {
			if _, err := to.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}
