package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/countymcc/mcc/gateway"
	"github.com/countymcc/mcc/services/internal/admin"
	"github.com/countymcc/mcc/services/internal/audit"
	"github.com/countymcc/mcc/services/internal/directory"
	platformaudit "github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/ratelimit"
	"github.com/countymcc/mcc/services/internal/platform/server"
	"github.com/countymcc/mcc/services/internal/platform/telemetry"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	storeredis "github.com/countymcc/mcc/services/internal/store/redis"
	"github.com/countymcc/mcc/services/internal/store/storemetrics"
)

// System is one running mcc process: the services its targets select, on
// one gRPC server, and the HTTP server (the REST gateway, or only /metrics
// and /healthz when the gateway runs elsewhere).
type System struct {
	cfg    Config
	logger *slog.Logger
	clock  clock.Clock

	grpcLis, httpLis net.Listener
	grpc             *grpc.Server
	health           *health.Server
	http             *http.Server
	// services are the names of the gRPC services this process runs.
	services []string
	// runners are the services' background loops.
	runners []runner
	// peers are the connections for calls between services.
	peers map[string]*grpc.ClientConn
	// registry holds the process's metrics.
	registry *prometheus.Registry

	stores []store.Store
	redis  goredis.UniversalClient
	tracer *sdktrace.TracerProvider
	// waits ends, by endWaits, once a shutdown's -shutdown-delay is over:
	// the open watch streams end with it, so that draining the HTTP and
	// gRPC servers does not wait for watchers that never hang up by
	// themselves, and the runners stop. stop then ends the gateway's
	// connections (and anything endWaits has not).
	waits          context.Context
	endWaits, stop context.CancelFunc
	// stopping turns /readyz false when a shutdown begins.
	stopping atomic.Bool
}

// Options are the parts of a System that tests replace.
type Options struct {
	Clock  clock.Clock
	Getenv func(string) string
	// TracerOptions are added to the tracer provider, for example an
	// in-memory exporter in tests.
	TracerOptions []sdktrace.TracerProviderOption
}

// New builds the system described by cfg: it opens the stores, loads or
// creates the keys and binds both listeners, but serves nothing until Run.
func New(ctx context.Context, cfg Config, logger *slog.Logger, opts Options) (_ *System, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = clock.System{}
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	targets, _ := cfg.targets()
	lifetime, stop := context.WithCancel(context.WithoutCancel(ctx))
	waits, endWaits := context.WithCancel(lifetime)
	s := &System{cfg: cfg, logger: logger, clock: opts.Clock, waits: waits, endWaits: endWaits, stop: stop}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	s.tracer, err = telemetry.NewTracerProvider(ctx, opts.Getenv, "mcc", opts.TracerOptions...)
	if err != nil {
		return nil, err
	}
	// A county's first start creates the keys in the data directory. In
	// Redis mode every replica must share them, so they are created only
	// when missing and the operator is warned to distribute them.
	previous, err := cfg.previousKeys()
	if err != nil {
		return nil, err
	}
	// A key path given explicitly (a mounted Secret) must exist: creating
	// one there would give this replica a key of its own. Only the default
	// path in the data directory is created on first start.
	keys, created, err := auth.LoadKeys(cfg.signingKeyPath(), cfg.SigningKey == "", opts.Clock, previous...)
	if err != nil {
		return nil, fmt.Errorf("-auth.signing-key: %w", err)
	}
	if created {
		logger.Info("created the community signing key", "path", cfg.signingKeyPath())
		if cfg.Store == "redis" {
			logger.Warn("in redis mode every replica must use the same -auth.signing-key and -pii.key files")
		}
	}
	protector, err := pii.LoadProtector(cfg.piiKeyPath(), cfg.PIIKey == "")
	if err != nil {
		return nil, fmt.Errorf("-pii.key: %w", err)
	}

	registry := prometheus.NewRegistry()
	s.registry = registry
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	registry.MustRegister(metrics)
	storeMetrics := storemetrics.New(events.TypeOf)
	registry.MustRegister(storeMetrics.Collectors()...)

	for _, t := range serviceTargets() {
		if targets[t.name] {
			s.services = append(s.services, t.name)
		}
	}
	if len(s.services) > 0 {
		if s.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
			return nil, fmt.Errorf("-grpc-addr: %w", err)
		}
	}
	serverTLS, err := cfg.TLS.ServerOption()
	if err != nil {
		return nil, err
	}
	if err := s.dialPeers(); err != nil {
		return nil, err
	}

	policy := admin.Policy()
	backupers := map[string]admin.Backuper{}
	instrumented := map[string]store.Store{}
	open := func(name string) (store.Store, error) {
		if st, ok := instrumented[name]; ok {
			return st, nil
		}
		raw, err := s.openStore(ctx, name)
		if err != nil {
			return nil, err
		}
		if b, ok := raw.(admin.Backuper); ok {
			backupers[name] = b
		}
		instrumented[name] = storeMetrics.Instrument(raw, name)
		return instrumented[name], nil
	}
	// Every process that serves gRPC writes the audit records of its calls
	// into the shared audit store; the audit target reads them.
	var trail *platformaudit.Trail
	var recorder *platformaudit.Recorder
	if len(s.services) > 0 {
		st, err := open(audit.Name)
		if err != nil {
			return nil, err
		}
		trail = platformaudit.NewTrail(st)
		recorder = platformaudit.NewRecorder(platformaudit.NewWriter(trail), opts.Clock, logger)
	}
	var built []registrar
	for _, t := range serviceTargets() {
		if !targets[t.name] {
			continue
		}
		st, err := open(t.name)
		if err != nil {
			return nil, err
		}
		policy.Merge(t.policy())
		svc, err := t.build(deps{
			store:   st,
			pii:     protector,
			clock:   opts.Clock,
			logger:  logger.With("service", t.name),
			peers:   peer.New(t.name, keys, opts.Clock, s.peers),
			keys:    keys,
			audit:   trail,
			metrics: registry,
		}, &cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		if r, ok := svc.(runner); ok {
			s.runners = append(s.runners, r)
		}
		built = append(built, svc)
	}

	if len(built) > 0 {
		s.grpc, s.health, err = server.New(cfg.Server, server.Deps{
			Logger:         logger,
			Keys:           keys,
			Policy:         policy,
			TracerProvider: s.tracer,
			Metrics:        metrics,
			Lifetime:       waits,
			Revocations:    s.revocations(keys, opts.Clock),
			Transport:      serverTLS,
			Audit:          recorder,
		})
		if err != nil {
			return nil, err
		}
		for _, b := range built {
			b.Register(s.grpc)
		}
		admin.New(backupers, opts.Clock).Register(s.grpc)
		metrics.InitializeMetrics(s.grpc)
	}

	httpMux := http.NewServeMux()
	metricsHandler := promhttp.HandlerFor(registry, promhttp.HandlerOpts{})
	if targets[gatewayTarget] {
		endpoints := gateway.Endpoints{}
		for name, addr := range s.addresses() {
			if slices.Contains(gateway.Services(), name) {
				endpoints[name] = addr
			}
		}
		// Every process with a gRPC server serves the admin service for
		// itself; the gateway exposes the one of its own process.
		if s.grpcLis != nil {
			endpoints[admin.Name] = dialAddr(s.grpcLis.Addr())
		}
		limiter, err := s.limiter(ctx)
		if err != nil {
			return nil, err
		}
		creds, err := cfg.TLS.DialOption()
		if err != nil {
			return nil, err
		}
		gwOpts := []gateway.Option{gateway.WithMaxBodyBytes(cfg.MaxBodyBytes), gateway.WithDialOptions(append(cfg.Server.DialOptions(), creds)...),
			gateway.WithTracing(s.tracer, telemetry.Propagator()),
			gateway.WithMetrics(metricsHandler)}
		if limiter != nil {
			gwOpts = append(gwOpts, gateway.WithRateLimit(limiter, ratelimit.Key(keys)))
		}
		h, err := gateway.New(lifetime, endpoints, gwOpts...)
		if err != nil {
			return nil, err
		}
		httpMux.Handle("/", h)
		httpMux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			if s.stopping.Load() {
				http.Error(w, "stopping", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	} else {
		httpMux.Handle("GET /metrics", metricsHandler)
		httpMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("-http-addr: %w", err)
	}
	s.http = &http.Server{
		Handler:           httpMux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if s.http.TLSConfig, err = cfg.TLS.HTTPConfig(); err != nil {
		return nil, err
	}
	return s, nil
}

// openStore opens the store of one service: its own bolt file, or its own
// key space in the shared Redis.
func (s *System) openStore(ctx context.Context, service string) (store.Store, error) {
	var st store.Store
	switch s.cfg.Store {
	case "bolt":
		if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("-data-dir: %w", err)
		}
		b, err := bolt.Open(filepath.Join(s.cfg.DataDir, service+".db"), bolt.Options{MaxGroup: s.cfg.Bolt.MaxGroup})
		if err != nil {
			return nil, fmt.Errorf("-data-dir: %w", err)
		}
		st = b
	case "redis":
		client, err := s.redisClient(ctx)
		if err != nil {
			return nil, err
		}
		r, err := storeredis.New(client, storeredis.Options{
			Prefix:       s.cfg.Redis.Prefix,
			Service:      service,
			WaitReplicas: s.cfg.Redis.WaitReplicas,
			WaitTimeout:  s.cfg.Redis.WaitTimeout,
		})
		if err != nil {
			return nil, err
		}
		st = r
	}
	s.stores = append(s.stores, st)
	return st, nil
}

// revocations returns the list of revoked tokens the process's services
// refuse, kept fresh from the directory in the background. Without a
// directory address there is nothing to poll, and nothing is revoked.
func (s *System) revocations(keys *auth.Keys, clk clock.Clock) auth.Revocations {
	conn, ok := s.peers[directory.Name]
	if !ok {
		return nil
	}
	list := &auth.RevocationList{}
	self := peer.New("mcc", keys, clk, s.peers)
	asService := func(ctx context.Context) (context.Context, error) {
		return self.AsService(ctx, string(directory.SystemPartition))
	}
	s.runners = append(s.runners, runFunc(func(ctx context.Context) error {
		return directory.PollRevocations(ctx, conn, asService, list, s.cfg.RevocationPoll, s.logger)
	}))
	return list
}

// redisClient returns the process's one Redis client, dialling it the first
// time.
func (s *System) redisClient(ctx context.Context) (goredis.UniversalClient, error) {
	if s.redis != nil {
		return s.redis, nil
	}
	c, err := storeredis.Dial(ctx, s.cfg.Redis.client(s.tracer))
	if err != nil {
		return nil, fmt.Errorf("-redis-addr: %w", err)
	}
	s.redis = c
	return c, nil
}

// limiter returns the gateway's per-client rate limit: shared through Redis
// in Redis mode, in memory otherwise; nil when -gateway.rate-limit is 0.
func (s *System) limiter(ctx context.Context) (gateway.Limiter, error) {
	if s.cfg.RateLimit == 0 {
		return nil, nil
	}
	if s.cfg.Store != "redis" {
		return ratelimit.NewMemory(s.cfg.RateLimit, s.cfg.RateBurst), nil
	}
	client, err := s.redisClient(ctx)
	if err != nil {
		return nil, err
	}
	return ratelimit.NewRedis(client, s.cfg.Redis.Prefix, s.cfg.RateLimit, s.cfg.RateBurst), nil
}

// addresses are the gRPC addresses of every service, for the gateway and
// for calls between services: this process for the services it runs,
// -<service>.addr for the others. A service with neither is left out, and
// said so in the log.
func (s *System) addresses() map[string]string {
	local := ""
	if s.grpcLis != nil {
		local = dialAddr(s.grpcLis.Addr())
	}
	out := map[string]string{}
	for _, t := range serviceTargets() {
		switch {
		case slices.Contains(s.services, t.name):
			out[t.name] = local
		case s.cfg.Addrs[t.name] != nil && *s.cfg.Addrs[t.name] != "":
			out[t.name] = *s.cfg.Addrs[t.name]
		default:
			s.logger.Debug("no address for a service that runs elsewhere", "service", t.name, "flag", "-"+t.name+".addr")
		}
	}
	return out
}

// dialPeers opens the connections services use to call each other. They
// connect lazily, on the first call.
func (s *System) dialPeers() error {
	creds, err := s.cfg.TLS.DialOption()
	if err != nil {
		return err
	}
	s.peers = map[string]*grpc.ClientConn{}
	for name, addr := range s.addresses() {
		conn, err := grpc.NewClient(addr, append(s.cfg.Server.DialOptions(),
			creds,
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(
				otelgrpc.WithTracerProvider(s.tracer),
				otelgrpc.WithPropagators(telemetry.Propagator()),
			)))...)
		if err != nil {
			return fmt.Errorf("-%s.addr: %w", name, err)
		}
		s.peers[name] = conn
	}
	return nil
}

// dialAddr turns a listener address into one a client on this machine can
// dial: a wildcard host becomes loopback.
func dialAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// GRPCAddr is the address the gRPC server listens on ("" if this process
// runs no service).
func (s *System) GRPCAddr() string {
	if s.grpcLis == nil {
		return ""
	}
	return dialAddr(s.grpcLis.Addr())
}

// HTTPAddr is the address the HTTP server listens on.
func (s *System) HTTPAddr() string { return dialAddr(s.httpLis.Addr()) }

// Run serves until ctx ends, then shuts down gracefully (see shutdown) and
// closes the stores.
func (s *System) Run(ctx context.Context) error {
	defer s.close()
	g, gctx := errgroup.WithContext(ctx)
	if s.grpc != nil {
		for _, name := range s.services {
			s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
		g.Go(func() error {
			if err := s.grpc.Serve(s.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("grpc server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		serve := func() error { return s.http.Serve(s.httpLis) }
		if s.http.TLSConfig != nil {
			serve = func() error { return s.http.ServeTLS(s.httpLis, "", "") }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	// The runners stop with the watches, after -shutdown-delay: until then
	// the feed answers long polls as usual.
	for _, r := range s.runners {
		g.Go(func() error { return r.Run(s.waits) })
	}
	g.Go(func() error { return s.retainEvents(s.waits) })
	s.logger.Info("mcc started", "target", s.cfg.Target, "store", s.cfg.Store, "grpc", s.GRPCAddr(), "http", s.HTTPAddr())
	g.Go(func() error {
		<-gctx.Done()
		s.shutdown()
		return nil
	})
	return g.Wait()
}

// retainInterval is how often old events are trimmed.
const retainInterval = time.Hour

// retainEvents trims every store's change feed to -events.retention, once an
// hour, until ctx ends. A failure is logged and retried at the next round.
func (s *System) retainEvents(ctx context.Context) error {
	tick := time.NewTicker(retainInterval)
	defer tick.Stop()
	for {
		cutoff := s.clock.Now().Add(-s.cfg.EventRetention)
		for _, st := range s.stores {
			if _, err := events.Retain(ctx, st, cutoff); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "trimming old events", "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// shutdown stops the process in an order that loses nothing and waits for
// nothing that would not end by itself:
//  1. readiness turns false, and the process goes on serving for
//     -shutdown-delay, while load balancers take it out;
//  2. the watches end and the runners stop (so long polls are answered
//     with their page: the feed's Run has stopped);
//  3. the HTTP server drains, its calls still reaching the gRPC servers;
//  4. the gateway's connections close and the gRPC server drains.
//
// Only calls still running at -shutdown-timeout are cut, and the cut
// handlers are waited for (grpc.WaitForHandlers), so their audit records
// are committed before the stores close.
func (s *System) shutdown() {
	s.logger.Info("mcc shutting down")
	s.stopping.Store(true)
	if s.health != nil {
		s.health.Shutdown()
	}
	if d := s.cfg.ShutdownDelay; d > 0 {
		s.logger.Info("serving on, not ready, for -shutdown-delay", "delay", d.String())
		time.Sleep(d)
	}
	s.endWaits()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.http.Shutdown(ctx)
	s.stop()
	if s.grpc != nil {
		done := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
		}
	}
}

// close releases what New acquired. It is safe on a partly built System.
func (s *System) close() {
	s.stop()
	for _, l := range []net.Listener{s.grpcLis, s.httpLis} {
		if l != nil {
			l.Close()
		}
	}
	for _, st := range s.stores {
		if err := st.Close(); err != nil {
			s.logger.Error("closing store", "error", err)
		}
	}
	s.stores = nil
	for _, c := range s.peers {
		c.Close()
	}
	s.peers = nil
	if s.redis != nil {
		s.redis.Close()
		s.redis = nil
	}
	if s.tracer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.tracer.Shutdown(ctx)
	}
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
