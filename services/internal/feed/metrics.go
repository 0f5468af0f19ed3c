package feed

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// metrics count webhook deliveries by outcome (delivered, failed and to be
// retried, dead-lettered), measure how long after its commit an event
// reached its receiver, and gauge the long polls and watches open.
type metrics struct {
	deliveries *prometheus.CounterVec
	lag        prometheus.Histogram
	waiting    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcc_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered, failed (to be retried), dead_lettered, cursor_expired.",
		}, []string{"outcome"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcc_webhook_delivery_lag_seconds",
			Help:    "Time from an event's commit to its successful webhook delivery.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 12),
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcc_feed_waiting",
			Help: "Long polls and watches of the feed open in this process; at -feed.max-waiting more are refused with 429.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.lag, m.waiting)
	}
	return m
}

// observe records a logged delivery attempt of head.
func (m *metrics) observe(d *feedv1.Delivery, head *typev1.Event) {
	outcome := strings.ToLower(strings.TrimPrefix(d.GetOutcome().String(), "OUTCOME_"))
	m.deliveries.WithLabelValues(outcome).Inc()
	if d.GetOutcome() == feedv1.Delivery_OUTCOME_DELIVERED && head.GetTime() != nil && d.GetTime() != nil {
		m.lag.Observe(d.GetTime().AsTime().Sub(head.GetTime().AsTime()).Seconds())
	}
}
