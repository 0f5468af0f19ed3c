package app

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/countymcc/mcc/services/internal/audit"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/ecg"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/imaging"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/pathology"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/server"
	"github.com/countymcc/mcc/services/internal/platform/transport"
	"github.com/countymcc/mcc/services/internal/recognition"
	"github.com/countymcc/mcc/services/internal/referral"
	"github.com/countymcc/mcc/services/internal/sterilization"
	storeredis "github.com/countymcc/mcc/services/internal/store/redis"
)

// Config is everything `mcc` (the server) is told on its command line or in
// MCC_* variables. Each field's flag is registered in RegisterFlags with its
// default; run `mcc -help` for the list.
type Config struct {
	// Target is "all" or a comma list of targets.
	Target   string
	GRPCAddr string
	HTTPAddr string
	// Store is "bolt" (embedded, the default) or "redis".
	Store   string
	DataDir string
	Bolt    BoltConfig
	Redis   RedisConfig
	// SigningKey and PIIKey are key file paths; empty means the default
	// file in DataDir.
	SigningKey string
	// PreviousKeys are signing keys replaced by a rotation whose tokens are
	// still accepted, besides the signing-*.key files next to SigningKey.
	PreviousKeys string
	PIIKey       string
	// Clients sets the OAuth2 client-credentials grant.
	Clients directory.ClientConfig
	// RevocationPoll is how often every process refreshes the revoked
	// tokens and clients from the directory.
	RevocationPoll time.Duration
	Server         server.Config
	// TLS turns on HTTPS and (mutual) TLS on gRPC when certificates are
	// given.
	TLS transport.Config
	// Addrs are the gRPC addresses of services running in other processes,
	// by service name (-directory.addr, ...).
	Addrs        map[string]*string
	MaxBodyBytes int64
	// RateLimit is the calls per second each client may make through the
	// gateway (0: no limit), in bursts of RateBurst.
	RateLimit float64
	RateBurst int
	// EventRetention is how long change feeds keep events.
	EventRetention  time.Duration
	Feed            feed.Config
	ShutdownTimeout time.Duration
	ShutdownDelay   time.Duration
	LogLevel        slog.Level
	Lab             lab.Config
	Imaging         imaging.Config
	ECG             ecg.Config
	Pathology       pathology.Config
	Sterilization   sterilization.Config
	Referral        referral.Config
	Recognition     recognition.Config
	Audit           audit.Config
}

// BoltConfig tunes the embedded store.
type BoltConfig struct {
	MaxGroup int
}

// RedisConfig says how to reach Redis in -store=redis mode.
type RedisConfig struct {
	Addrs        string
	MasterName   string
	Cluster      bool
	Username     string
	Password     string
	DB           int
	Prefix       string
	WaitReplicas int
	WaitTimeout  time.Duration
}

// RegisterFlags registers the flags that say how to reach Redis (not the
// server's write rules, -redis.wait-*), for the server and the commands
// that read its store.
func (r *RedisConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&r.Addrs, "redis-addr", "127.0.0.1:6379", "Redis address(es), comma-separated: one server, Sentinels (with -redis.master-name) or Cluster nodes (with -redis.cluster)")
	fs.StringVar(&r.MasterName, "redis.master-name", "", "Sentinel master name; set it to use Redis Sentinel")
	fs.BoolVar(&r.Cluster, "redis.cluster", false, "the Redis addresses are Redis Cluster nodes")
	fs.StringVar(&r.Username, "redis.username", "", "Redis ACL user name")
	fs.StringVar(&r.Password, "redis.password", "", "Redis password (prefer the MCC_REDIS_PASSWORD variable)")
	fs.IntVar(&r.DB, "redis.db", 0, "Redis database number (standalone and Sentinel only)")
	fs.StringVar(&r.Prefix, "redis.prefix", "mcc", "prefix of every Redis key")
}

// client is the Redis client configuration the flags describe.
func (r *RedisConfig) client(tp trace.TracerProvider) storeredis.ClientConfig {
	return storeredis.ClientConfig{
		Addrs: splitList(r.Addrs), MasterName: r.MasterName, Cluster: r.Cluster,
		Username: r.Username, Password: r.Password, DB: r.DB, TracerProvider: tp,
	}
}

// RegisterFlags registers every server flag with its default.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", "all", "what to run: all, or a comma list of "+strings.Join(targetNames(), ", "))
	fs.StringVar(&c.GRPCAddr, "grpc-addr", ":9090", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8080", "HTTP listen address (REST gateway, /metrics, /healthz)")
	fs.StringVar(&c.Store, "store", "bolt", "state store: bolt (embedded, one file per service in -data-dir) or redis")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for the embedded store files and the keys")
	fs.IntVar(&c.Bolt.MaxGroup, "bolt.max-group", 0, "most transactions committed together in one fsync (0: the store's default)")
	c.Redis.RegisterFlags(fs)
	fs.IntVar(&c.Redis.WaitReplicas, "redis.wait-replicas", 0, "replicas that must acknowledge each write (Redis WAIT) before it is confirmed")
	fs.DurationVar(&c.Redis.WaitTimeout, "redis.wait-timeout", time.Second, "longest wait for -redis.wait-replicas acknowledgements")
	fs.StringVar(&c.SigningKey, "auth.signing-key", "", "Ed25519 token signing key (PEM); default <data-dir>/signing.key, created on first start")
	fs.StringVar(&c.PreviousKeys, "auth.previous-keys", "", "comma list of previous signing key files whose tokens are still accepted (signing-*.key beside -auth.signing-key are found without it)")
	fs.StringVar(&c.PIIKey, "pii.key", "", "key for encrypting and hashing patient identifiers (PEM); default <data-dir>/pii.key, created on first start")
	c.Clients.RegisterFlags(fs)
	fs.DurationVar(&c.RevocationPoll, "auth.revocation-poll", 2*time.Second, "how often each process refreshes revoked tokens and clients from the directory")
	c.Server.RegisterFlags(fs)
	c.TLS.RegisterFlags(fs)
	c.Addrs = map[string]*string{}
	for _, t := range serviceTargets() {
		c.Addrs[t.name] = fs.String(t.name+".addr", "", "gRPC address of the "+t.name+" service when it runs in another process")
	}
	fs.Int64Var(&c.MaxBodyBytes, "gateway.max-body-bytes", 4<<20, "largest REST request body accepted; larger ones get 413")
	fs.Float64Var(&c.RateLimit, "gateway.rate-limit", 100, "calls per second each client (or address without a token) may make through the gateway; 0 turns the limit off")
	fs.IntVar(&c.RateBurst, "gateway.rate-burst", 300, "calls a client may make at once above -gateway.rate-limit")
	fs.DurationVar(&c.EventRetention, "events.retention", 30*24*time.Hour, "how long change feeds keep events; older cursors must resynchronize")
	c.Feed.RegisterFlags(fs)
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "longest graceful shutdown before open calls are cut")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "at a stop, how long to go on serving after readiness turns false, before watches end and the servers drain, so load balancers (Kubernetes endpoints) stop sending calls first")
	fs.TextVar(&c.LogLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	c.Lab.RegisterFlags(fs)
	c.Imaging.RegisterFlags(fs)
	c.ECG.RegisterFlags(fs)
	c.Pathology.RegisterFlags(fs)
	c.Sterilization.RegisterFlags(fs)
	c.Referral.RegisterFlags(fs)
	c.Recognition.RegisterFlags(fs)
	c.Audit.RegisterFlags(fs)
}

// targets resolves -target into the set of target names to run.
func (c *Config) targets() (map[string]bool, error) {
	known := targetNames()
	out := map[string]bool{}
	for _, t := range strings.Split(c.Target, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "all":
			for _, k := range known {
				out[k] = true
			}
		case slices.Contains(known, t):
			out[t] = true
		default:
			return nil, fmt.Errorf("-target: unknown target %q (known: all, %s)", t, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// validate checks the configuration before anything starts, so a mistake
// fails fast with the flag's name.
func (c *Config) validate() error {
	if _, err := c.targets(); err != nil {
		return err
	}
	var errs []error
	switch c.Store {
	case "bolt":
		if c.DataDir == "" {
			errs = append(errs, errors.New("-data-dir: required with -store=bolt"))
		}
	case "redis":
		if strings.TrimSpace(c.Redis.Addrs) == "" {
			errs = append(errs, errors.New("-redis-addr: required with -store=redis"))
		}
		if c.Redis.Cluster && c.Redis.MasterName != "" {
			errs = append(errs, errors.New("-redis.cluster and -redis.master-name: choose one"))
		}
	default:
		errs = append(errs, fmt.Errorf("-store: must be bolt or redis, not %q", c.Store))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("-gateway.max-body-bytes: must be positive"))
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Clients.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.RateLimit < 0 || (c.RateLimit > 0 && c.RateBurst < 1) {
		errs = append(errs, errors.New("-gateway.rate-limit, -gateway.rate-burst: the limit must be 0 or more, the burst at least 1"))
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownDelay < 0 {
		errs = append(errs, errors.New("-shutdown-timeout, -shutdown-delay: the timeout must be positive, the delay 0 or more"))
	}
	if c.RevocationPoll <= 0 {
		errs = append(errs, errors.New("-auth.revocation-poll: must be positive"))
	}
	if c.EventRetention < time.Hour {
		errs = append(errs, errors.New("-events.retention: must be at least 1h"))
	}
	if err := c.Feed.Validate(c.EventRetention); err != nil {
		errs = append(errs, err)
	}
	if err := c.Audit.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Server.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) signingKeyPath() string {
	if c.SigningKey != "" {
		return c.SigningKey
	}
	return filepath.Join(c.DataDir, "signing.key")
}

// previousKeys loads the keys of -auth.previous-keys and the signing-*.key
// files that `mcc keys rotate` left beside the signing key.
func (c *Config) previousKeys() ([]ed25519.PublicKey, error) {
	found, err := auth.PreviousKeyFiles(c.signingKeyPath())
	if err != nil {
		return nil, err
	}
	keys, err := auth.LoadPrevious(append(found, splitList(c.PreviousKeys)...))
	if err != nil {
		return nil, fmt.Errorf("-auth.previous-keys: %w", err)
	}
	return keys, nil
}

func (c *Config) piiKeyPath() string {
	if c.PIIKey != "" {
		return c.PIIKey
	}
	return filepath.Join(c.DataDir, "pii.key")
}
