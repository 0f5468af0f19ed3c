package storemetrics_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	"github.com/countymcc/mcc/services/internal/store/storemetrics"
	"github.com/countymcc/mcc/services/internal/store/storetest"
)

// TestConformance: the measured store is still a complete store.
func TestConformance(t *testing.T) {
	m := storemetrics.New(func([]byte) string { return "event" })
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "m.db")
		return func() (store.Store, error) {
			s, err := bolt.Open(path, bolt.Options{})
			if err != nil {
				return nil, err
			}
			return m.Instrument(s, "test"), nil
		}
	})
}

func TestOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := storemetrics.New(func(b []byte) string { return string(b) })
	reg.MustRegister(m.Collectors()...)
	b, err := bolt.Open(filepath.Join(t.TempDir(), "m.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := m.Instrument(b, "lab")
	defer s.Close()
	ctx := context.Background()
	if _, err := store.Create(ctx, s, "p", "k", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, s, "p", "k", nil); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "p", "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	// Events count once committed, never for a failed transaction.
	if err := s.Txn(ctx, "p", func(tx store.Tx) error { tx.Append([]byte("order.created")); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Txn(ctx, "p", func(tx store.Tx) error { tx.Append([]byte("order.created")); return errors.New("no") }); err == nil {
		t.Fatal("the failing transaction succeeded")
	}
	if got := testutil.ToFloat64(m.Collectors()[1].(*prometheus.CounterVec).WithLabelValues("lab", "order.created")); got != 1 {
		t.Errorf("mcc_events_total = %v, want 1", got)
	}
	for _, want := range []string{`op="txn",outcome="ok",service="lab"`, `op="txn",outcome="conflict",service="lab"`, `op="get",outcome="not_found",service="lab"`} {
		n, err := testutil.GatherAndCount(reg, "mcc_store_operation_seconds")
		if err != nil || n == 0 {
			t.Fatalf("gathered %d, %v", n, err)
		}
		mfs, _ := reg.Gather()
		found := false
		for _, mf := range mfs {
			for _, metric := range mf.GetMetric() {
				labels := ""
				for _, l := range metric.GetLabel() {
					labels += l.GetName() + "=\"" + l.GetValue() + "\","
				}
				if strings.Contains(labels, want) && metric.GetHistogram().GetSampleCount() > 0 {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("no sample with %s", want)
		}
	}
}
