package feed

import (
	"errors"
	"flag"
	"time"
)

// Config holds the feed service's settings, the -feed.* flags.
type Config struct {
	// RetryHorizon is how long a failing webhook delivery is retried before
	// the event is dead-lettered and delivery moves on.
	RetryHorizon time.Duration
	// RetryBase and RetryMax bound the exponential backoff between
	// attempts; each wait is drawn at random between half and all of it.
	RetryBase time.Duration
	RetryMax  time.Duration
	// DeliveryTimeout bounds one webhook POST, connection and TLS included.
	DeliveryTimeout time.Duration
	// AllowLoopback lets webhook URLs point at loopback addresses. It is for
	// tests and trials on one machine; production leaves it off.
	AllowLoopback bool
	// CAFile names PEM certificates trusted for receivers besides the
	// system's, for county systems with their own certificate authority.
	CAFile string
	// LeaseTTL is how long a process holds the delivery of a subscription
	// without renewing it. With several replicas, another takes over this
	// long after one dies.
	LeaseTTL time.Duration
	// ScanInterval is how often subscriptions made by other replicas are
	// picked up.
	ScanInterval time.Duration
	// LogRetention is how long delivery log entries are kept.
	LogRetention time.Duration
	// CacheEvents is how many recent events of each service and community
	// are kept in memory for the readers that have caught up; 0 turns the
	// cache off (every read goes to the services).
	CacheEvents int
	// CacheIdle is how long a cached feed nobody reads keeps following its
	// service.
	CacheIdle time.Duration
	// MaxWaiting bounds the long polls and watches the process holds open
	// at once; beyond it they are refused with ResourceExhausted (HTTP 429
	// with Retry-After), so a crowd of clients cannot exhaust memory. 0
	// means no bound.
	MaxWaiting int
}

// RegisterFlags registers the feed flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.RetryHorizon, "feed.retry-horizon", 24*time.Hour, "how long a failing webhook delivery is retried before the event is dead-lettered")
	fs.DurationVar(&c.RetryBase, "feed.retry-base", 5*time.Second, "first wait before retrying a failed webhook delivery; it doubles on each attempt")
	fs.DurationVar(&c.RetryMax, "feed.retry-max", 10*time.Minute, "longest wait between webhook delivery attempts")
	fs.DurationVar(&c.DeliveryTimeout, "feed.delivery-timeout", 10*time.Second, "longest time one webhook POST may take")
	fs.BoolVar(&c.AllowLoopback, "feed.allow-loopback", false, "allow webhook URLs on loopback addresses (tests and single-machine trials only)")
	fs.StringVar(&c.CAFile, "feed.webhook-ca-file", "", "PEM file of extra certificate authorities trusted for webhook receivers")
	fs.DurationVar(&c.LeaseTTL, "feed.lease-ttl", 30*time.Second, "how long a replica holds a subscription's deliveries without renewing")
	fs.DurationVar(&c.ScanInterval, "feed.scan-interval", 5*time.Second, "how often subscriptions made by other replicas are picked up")
	fs.DurationVar(&c.LogRetention, "feed.log-retention", 30*24*time.Hour, "how long webhook delivery log entries are kept")
	fs.IntVar(&c.CacheEvents, "feed.cache-events", 10000, "recent events kept in memory per service and community for readers that have caught up (0: none)")
	fs.DurationVar(&c.CacheIdle, "feed.cache-idle", 5*time.Minute, "how long a cached service feed nobody reads is kept")
	fs.IntVar(&c.MaxWaiting, "feed.max-waiting", 1000, "long polls and watches held open at once by this process; more are refused with 429 and Retry-After (0: no bound)")
}

// Validate checks the settings; retention is how long the services keep
// their events.
func (c Config) Validate(retention time.Duration) error {
	var errs []error
	if c.RetryHorizon <= 0 || c.RetryHorizon >= retention {
		errs = append(errs, errors.New("-feed.retry-horizon: must be positive and shorter than -events.retention, or a failing subscription would fall behind what the services keep"))
	}
	if c.RetryBase <= 0 || c.RetryMax < c.RetryBase {
		errs = append(errs, errors.New("-feed.retry-base, -feed.retry-max: must be positive, base at most max"))
	}
	if c.DeliveryTimeout <= 0 || c.LeaseTTL <= 0 || c.ScanInterval <= 0 || c.LogRetention <= 0 || c.CacheIdle <= 0 {
		errs = append(errs, errors.New("-feed.delivery-timeout, -feed.lease-ttl, -feed.scan-interval, -feed.log-retention, -feed.cache-idle: must be positive"))
	}
	if c.DeliveryTimeout > c.LeaseTTL/3 {
		errs = append(errs, errors.New("-feed.delivery-timeout: must be at most a third of -feed.lease-ttl, so a replica renews its lease between deliveries"))
	}
	if c.CacheEvents < 0 {
		errs = append(errs, errors.New("-feed.cache-events: must not be negative"))
	}
	if c.MaxWaiting < 0 {
		errs = append(errs, errors.New("-feed.max-waiting: must not be negative"))
	}
	return errors.Join(errs...)
}
