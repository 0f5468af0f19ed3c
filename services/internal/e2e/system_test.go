package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/app"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/telemetry"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

// backend is a store configuration the e2e tests run on.
type backend struct {
	name  string
	flags func(t *testing.T) []string
}

// backends are the embedded store and a private redis-server (skipped, or
// failed under MCC_TEST_REQUIRE_REDIS=1, where redis-server is missing).
func backends() []backend {
	return []backend{
		{name: "bolt", flags: func(*testing.T) []string { return []string{"-store=bolt"} }},
		{name: "redis", flags: func(t *testing.T) []string {
			addr := redistest.Start(t)
			return []string{"-store=redis", "-redis-addr=" + addr, "-redis.prefix=" + redistest.Prefix(t)}
		}},
	}
}

// start runs mcc -target=all in this process on ephemeral loopback ports,
// with its data directory in a temporary directory, until the test ends.
func start(t *testing.T, extra ...string) *system {
	t.Helper()
	sys, _ := startOn(t, t.TempDir(), nil, extra...)
	return sys
}

// startIn is start on a given data directory.
func startIn(t *testing.T, dir string, extra ...string) *system {
	t.Helper()
	sys, _ := startOn(t, dir, nil, extra...)
	return sys
}

// startAt is start with a clock the test moves. Tokens of the system are
// then issued on that clock.
func startAt(t *testing.T, clk *clock.Manual, extra ...string) *system {
	t.Helper()
	sys, _ := startOn(t, t.TempDir(), clk, extra...)
	return sys
}

// startStoppable is startIn that also returns a function to stop the
// system before the test ends, for tests that restart it.
func startStoppable(t testing.TB, dir string, extra ...string) (*system, func()) {
	t.Helper()
	return startOn(t, dir, nil, extra...)
}

// startOn runs mcc on the data directory dir with the clock clk (nil: the
// real one), and returns it with a function that stops it (it also stops
// when the test ends).
func startOn(t testing.TB, dir string, clk *clock.Manual, extra ...string) (*system, func()) {
	t.Helper()
	// The rate limit is off unless a test sets one: tests drive one
	// client far faster than a clinic does.
	args := append([]string{"-grpc-addr=127.0.0.1:0", "-http-addr=127.0.0.1:0", "-data-dir=" + dir, "-gateway.rate-limit=0"}, extra...)
	env := app.Env{Getenv: func(string) string { return "" }, Stdout: io.Discard, Stderr: io.Discard}
	cfg, err := app.LoadConfig(args, env)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	var logOut io.Writer = logs
	if os.Getenv("MCC_TEST_LOG") != "" {
		logOut = io.MultiWriter(logs, os.Stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logger := telemetry.NewLogger(logOut, slog.LevelDebug)
	spans := tracetest.NewSpanRecorder()
	opts := app.Options{TracerOptions: []sdktrace.TracerProviderOption{sdktrace.WithSpanProcessor(spans)}}
	if clk != nil {
		opts.Clock = clk
	}
	sys, err := app.New(ctx, cfg, logger, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sys.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("mcc stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &system{url: "http://" + sys.HTTPAddr(), grpc: sys.GRPCAddr(), dataDir: dir, logs: logs, clock: clk, spans: spans}, stop
}

// logBuffer collects the system's logs for the tests to search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// wantNoPII fails the test if any of secrets appears in the system's logs,
// in any span it ended (name, attributes, events or status), or in any
// audit record of the demo community.
func (s *system) wantNoPII(t *testing.T, secrets ...string) {
	t.Helper()
	var b strings.Builder
	trail, records := s.auditTrail(t, "demo")
	if records == 0 {
		t.Fatal("no audit record in the demo community: the check would prove nothing")
	}
	b.WriteString(trail)
	b.WriteString(s.logs.String())
	spans := s.spans.Ended()
	for _, sp := range spans {
		b.WriteString(sp.Name())
		b.WriteString(sp.Status().Description)
		for _, a := range sp.Attributes() {
			b.WriteString(string(a.Key) + "=" + a.Value.Emit() + "\n")
		}
		for _, e := range sp.Events() {
			b.WriteString(e.Name)
			for _, a := range e.Attributes {
				b.WriteString(string(a.Key) + "=" + a.Value.Emit() + "\n")
			}
		}
	}
	all := b.String()
	if len(spans) == 0 || !strings.Contains(all, "finished call") {
		t.Fatalf("%d spans and logs without calls: the check would prove nothing", len(spans))
	}
	for _, secret := range secrets {
		if strings.Contains(all, secret) {
			t.Errorf("%q is in the logs or spans", secret)
		}
	}
	t.Logf("no patient identifier in %d bytes of logs, %d spans and %d audit records", len(all), len(spans), records)
}

// auditTrail returns every audit record of community as the REST answers
// that hold them, read by an auditor page by page, and how many there are.
func (s *system) auditTrail(t *testing.T, community string) (string, int) {
	t.Helper()
	auditor := s.token(t, community, "audit", time.Hour, typev1.Role_ROLE_AUDITOR)
	var b strings.Builder
	n, token := 0, ""
	for {
		page := s.do(t, "GET", "/v1/auditRecords?pageSize=1000&pageToken="+token, auditor, "").want(t, 200)
		b.WriteString(page.raw)
		n += len(page.list(t, "auditRecords"))
		if token = page.str(t, "nextPageToken"); token == "" {
			return b.String(), n
		}
	}
}

// eventsOf lists a service's change feed (its ListEvents path) as the
// token's caller sees it, as "type resource" lines.
func (s *system) eventsOf(t *testing.T, feed, token string) []string {
	t.Helper()
	var out []string
	for _, e := range s.do(t, "GET", feed+"?pageSize=1000", token, "").want(t, 200).list(t, "events") {
		m := e.(map[string]any)
		out = append(out, m["type"].(string)+" "+m["resource"].(string))
	}
	return out
}
