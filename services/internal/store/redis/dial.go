package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/countymcc/mcc/services/internal/store"
)

// ClientConfig says how to reach Redis.
type ClientConfig struct {
	// Addrs is one standalone server, the Sentinels (with MasterName), or
	// some Cluster nodes (with Cluster).
	Addrs []string
	// MasterName selects Sentinel: the name of the monitored primary.
	MasterName string
	// Cluster selects Redis Cluster.
	Cluster  bool
	Username string
	Password string
	// DB is the database number; Cluster has only 0.
	DB int
	// TracerProvider, if set, traces every Redis command (without its
	// arguments: they hold patient data).
	TracerProvider trace.TracerProvider
}

// clusterStateReload is how often a Cluster client refreshes its slot map.
// go-redis defaults to 60 s, which leaves writes failing for up to a minute
// after a failover it has not been redirected from.
const clusterStateReload = time.Second

// Dial connects to Redis as cfg says and checks that it answers. Errors
// wrap store.ErrUnavailable and name the addresses tried.
func Dial(ctx context.Context, cfg ClientConfig) (goredis.UniversalClient, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("redis: no address")
	}
	var client goredis.UniversalClient
	switch {
	case cfg.Cluster && cfg.MasterName != "":
		return nil, errors.New("redis: choose Cluster or Sentinel (MasterName), not both")
	case cfg.Cluster:
		if cfg.DB != 0 {
			return nil, fmt.Errorf("redis: Cluster has only database 0, not %d", cfg.DB)
		}
		client = goredis.NewClusterClient(&goredis.ClusterOptions{
			Addrs:                      cfg.Addrs,
			Username:                   cfg.Username,
			Password:                   cfg.Password,
			ClusterStateReloadInterval: clusterStateReload,
		})
	case cfg.MasterName != "":
		client = goredis.NewFailoverClient(&goredis.FailoverOptions{
			MasterName:    cfg.MasterName,
			SentinelAddrs: cfg.Addrs,
			Username:      cfg.Username,
			Password:      cfg.Password,
			DB:            cfg.DB,
		})
	default:
		if len(cfg.Addrs) != 1 {
			return nil, fmt.Errorf("redis: %d addresses for a standalone server; set Cluster or MasterName", len(cfg.Addrs))
		}
		client = goredis.NewClient(&goredis.Options{
			Addr:     cfg.Addrs[0],
			Username: cfg.Username,
			Password: cfg.Password,
			DB:       cfg.DB,
		})
	}
	if cfg.TracerProvider != nil {
		// Statements stay out of spans: keys and values carry patient
		// records.
		if err := redisotel.InstrumentTracing(client, redisotel.WithTracerProvider(cfg.TracerProvider), redisotel.WithDBStatement(false)); err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("redis: tracing: %w", err)
		}
	}
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		what := strings.Join(cfg.Addrs, ",")
		if cfg.MasterName != "" {
			what = fmt.Sprintf("primary %q via Sentinel %s", cfg.MasterName, what)
		}
		return nil, fmt.Errorf("redis: cannot reach %s: %w: %w", what, store.ErrUnavailable, err)
	}
	return client, nil
}
