// Package storemetrics measures a store.Store: the latency of each
// operation, by service, operation and outcome, as a Prometheus histogram.
package storemetrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/countymcc/mcc/services/internal/store"
)

// Metrics are the collectors shared by every measured store of a process.
type Metrics struct {
	latency *prometheus.HistogramVec
	events  *prometheus.CounterVec
	// classify names the kind of an event from its stored bytes.
	classify func([]byte) string
}

// New returns the collectors; register them with the process's registry.
// classify names an event's kind from its stored bytes (the store does not
// know the event format): committed events are counted by service and kind,
// which is how domain alerts (escalated critical values, TAT breaches,
// recalls) are measured, exactly once, by the replica that commits them.
func New(classify func([]byte) string) *Metrics {
	return &Metrics{classify: classify, events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mcc_events_total",
		Help: "Events committed, by service and type (for example criticalNotification.escalated_duty_doctor).",
	}, []string{"service", "type"}), latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mcc_store_operation_seconds",
		Help: "Latency of store operations, by service, operation and outcome (ok, not_found, conflict, error).",
		// From a cached read (tens of µs) to a slow fsync or a Redis
		// failover (seconds).
		Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12),
	}, []string{"service", "op", "outcome"})}
}

// Collectors returns what to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.latency, m.events}
}

// Instrument returns s measured under the service's name. WaitEvents is not
// measured: it blocks by design.
func (m *Metrics) Instrument(s store.Store, service string) store.Store {
	return &measured{Store: s, m: m, service: service}
}

type measured struct {
	store.Store
	m       *Metrics
	service string
}

func (s *measured) observe(op string, start time.Time, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		outcome = "not_found"
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrAlreadyExists):
		outcome = "conflict"
	default:
		outcome = "error"
	}
	s.m.latency.WithLabelValues(s.service, op, outcome).Observe(time.Since(start).Seconds())
}

func (s *measured) Get(ctx context.Context, p store.Partition, key string) (store.Record, error) {
	start := time.Now()
	rec, err := s.Store.Get(ctx, p, key)
	s.observe("get", start, err)
	return rec, err
}

func (s *measured) List(ctx context.Context, p store.Partition, prefix, after string, limit int) ([]store.Record, bool, error) {
	start := time.Now()
	recs, more, err := s.Store.List(ctx, p, prefix, after, limit)
	s.observe("list", start, err)
	return recs, more, err
}

func (s *measured) Txn(ctx context.Context, p store.Partition, fn func(tx store.Tx) error) error {
	start := time.Now()
	var appended [][]byte
	err := s.Store.Txn(ctx, p, func(tx store.Tx) error {
		appended = appended[:0]
		return fn(&counting{Tx: tx, appended: &appended})
	})
	s.observe("txn", start, err)
	if err == nil {
		for _, data := range appended {
			s.m.events.WithLabelValues(s.service, s.m.classify(data)).Inc()
		}
	}
	return err
}

// counting is a Tx that remembers what was appended, to count it once the
// transaction has committed (fn may run more than once).
type counting struct {
	store.Tx
	appended *[][]byte
}

func (c *counting) Append(data []byte) {
	*c.appended = append(*c.appended, data)
	c.Tx.Append(data)
}

func (s *measured) Events(ctx context.Context, p store.Partition, after uint64, limit int) ([]store.Event, error) {
	start := time.Now()
	evs, err := s.Store.Events(ctx, p, after, limit)
	s.observe("events", start, err)
	return evs, err
}
