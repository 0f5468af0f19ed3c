package feed_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

const (
	community = "urad"
	admin     = typev1.Role_ROLE_ADMIN
	clinician = typev1.Role_ROLE_CLINICIAN
)

// fixture is the directory and the feed on one real gRPC server, with
// every production interceptor. The feed reads the directory and itself
// over the server's connection, as in `mcc -target=all`.
type fixture struct {
	*servertest.Env
	dir       directoryv1.DirectoryServiceClient
	feed      feedv1.FeedServiceClient
	dirStore  store.Store
	feedStore store.Store
	pii       *pii.Protector
	svc       *feed.Service
	// stopSvc stops svc's Run, as a process's shutdown does.
	stopSvc func()
	cfg     feed.Config
}

// late lets the feed service be registered before it can be built: it
// needs the server's connection and keys, which exist only once the
// server runs.
type late struct{ feedv1.FeedServiceServer }

func openStore(t testing.TB, name string) store.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), name+".db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testConfig is a feed configuration with short horizons, so retries,
// dead letters and leases happen in well under a second.
func testConfig() feed.Config {
	return feed.Config{
		RetryHorizon: 400 * time.Millisecond, RetryBase: 20 * time.Millisecond, RetryMax: 80 * time.Millisecond,
		DeliveryTimeout: 2 * time.Second, AllowLoopback: true, LeaseTTL: 6 * time.Second, ScanInterval: 50 * time.Millisecond,
		LogRetention: time.Hour, CacheEvents: 1000, CacheIdle: time.Minute,
	}
}

// newFixture starts the directory and a feed service with cfg. The
// directory and the feed use the real clock; tokens are checked against a
// manual clock set to now, so they never expire during a test.
func newFixture(t testing.TB, cfg feed.Config) *fixture {
	t.Helper()
	f := &fixture{dirStore: openStore(t, "directory"), feedStore: openStore(t, "feed"), cfg: cfg}
	var err error
	if f.pii, err = pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true); err != nil {
		t.Fatal(err)
	}
	dir := directory.New(f.dirStore, f.pii, clock.System{})
	feedSrv := &late{}
	policy := directory.Policy()
	policy.Merge(feed.Policy())
	f.Env = servertest.Start(t, clock.NewManual(time.Now()), policy, func(s *grpc.Server) {
		dir.Register(s)
		feedv1.RegisterFeedServiceServer(s, feedSrv)
	})
	f.svc, f.stopSvc = f.service(t, cfg, map[string]*grpc.ClientConn{directory.Name: f.Conn, feed.Name: f.Conn})
	feedSrv.FeedServiceServer = f.svc
	f.dir = directoryv1.NewDirectoryServiceClient(f.Conn)
	f.feed = feedv1.NewFeedServiceClient(f.Conn)
	return f
}

// service builds and runs another feed service on the fixture's stores,
// with its own connections, until the test ends or stop is called.
func (f *fixture) service(t testing.TB, cfg feed.Config, conns map[string]*grpc.ClientConn) (svc *feed.Service, stop func()) {
	t.Helper()
	svc, err := feed.New(feed.Deps{
		Store: f.feedStore, Clock: clock.System{}, PII: f.pii, Retention: 30 * 24 * time.Hour,
		Peers:  peer.New(feed.Name, f.Keys, f.Clock, conns),
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		svc.Run(ctx)
		close(done)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return svc, stop
}

// deadConn is a connection to a port where nothing listens.
func deadConn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *fixture) admin(t testing.TB) context.Context { return f.As(t, community, "qrmyy", admin) }

func (f *fixture) clinic(t testing.TB, facility string) context.Context {
	return f.As(t, community, facility, clinician)
}

// caller is the identity of f.clinic(t, facility), for calls made without
// gRPC.
func caller(facility string) auth.Caller {
	return auth.Caller{Subject: "test", Community: community, Facility: "facilities/" + facility, Roles: []typev1.Role{clinician}}
}

// county creates the county hospital and two townships under it.
func (f *fixture) county(t testing.TB) {
	t.Helper()
	for _, req := range []*directoryv1.CreateFacilityRequest{
		{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "乌拉特中旗人民医院", Level: typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL}},
		{FacilityId: "dls", Facility: &directoryv1.Facility{DisplayName: "德岭山中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
		{FacilityId: "wjh", Facility: &directoryv1.Facility{DisplayName: "乌加河中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
	} {
		if _, err := f.dir.CreateFacility(f.admin(t), req); err != nil {
			t.Fatalf("create %s: %v", req.GetFacilityId(), err)
		}
	}
}

// village creates a village clinic under parent: one facility.created
// event that concerns both.
func (f *fixture) village(t testing.TB, id, parent string) {
	t.Helper()
	_, err := f.dir.CreateFacility(f.admin(t), &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{
		DisplayName: "卫生室 " + id, Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC, Parent: "facilities/" + parent,
	}})
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

// receiver is an HTTPS webhook endpoint whose answers the test controls.
type receiver struct {
	*httptest.Server
	// CAFile is the server's certificate, for -feed.webhook-ca-file.
	CAFile string

	mu       sync.Mutex
	requests []request
	answer   func(r request) int
	arrived  chan struct{}
}

// request is one POST the receiver got.
type request struct {
	// ctx ends when the sender hangs up.
	ctx    context.Context
	header http.Header
	body   []byte
	at     time.Time
}

// newReceiver starts a receiver that answers 200 until told otherwise.
func newReceiver(t testing.TB) *receiver {
	t.Helper()
	r := &receiver{answer: func(request) int { return http.StatusOK }, arrived: make(chan struct{}, 1)}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.Server.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	r.StartTLS()
	t.Cleanup(r.Close)
	r.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate().Raw})
	if err := os.WriteFile(r.CAFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	got := request{ctx: req.Context(), header: req.Header.Clone(), body: body, at: time.Now()}
	r.mu.Lock()
	r.requests = append(r.requests, got)
	answer := r.answer
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	w.WriteHeader(answer(got))
}

// setAnswer changes how the receiver answers.
func (r *receiver) setAnswer(fn func(request) int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = fn
}

// got returns the requests so far.
func (r *receiver) got() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.requests...)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	until := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(until) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
