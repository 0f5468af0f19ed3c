package facts_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/facts"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

// wantField fails unless err is bad input on field.
func wantField(t *testing.T, err error, field string) {
	t.Helper()
	var inv *apierr.InvalidError
	if !errors.As(err, &inv) || len(inv.Violations) != 1 || inv.Violations[0].Field != field {
		t.Fatalf("err = %v, want bad input on %s", err, field)
	}
}

func TestDays(t *testing.T) {
	zone := time.FixedZone("CST", 8*60*60)
	start, end, err := facts.Days("2026-11-01", "2026-11-03", zone)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 1, 0, 0, 0, 0, zone); !start.Equal(want) {
		t.Errorf("start = %v, want %v", start, want)
	}
	if want := time.Date(2026, 11, 3, 0, 0, 0, 0, zone); !end.Equal(want) {
		t.Errorf("end = %v, want %v", end, want)
	}
	if _, _, err := facts.Days("2026-11-01", "2027-02-01", zone); err != nil {
		t.Errorf("92 days after the start: %v", err)
	}
	for _, tc := range []struct{ start, end, field string }{
		{"01/11/2026", "2026-11-03", "start_day"},
		{"2026-11-01", "", "end_day"},
		{"2026-11-03", "2026-11-01", "end_day"},           // reversed
		{"2026-11-01", "2027-02-02", "end_day"},           // 93 days after
		{"2026-02-30", "2026-03-01", "start_day"},         // no such day
		{"2026-11-01", "2026-11-01T00:00:00Z", "end_day"}, // not a date
	} {
		_, _, err := facts.Days(tc.start, tc.end, zone)
		wantField(t, err, tc.field)
	}
}

type fact struct {
	N int `json:"n"`
}

func TestScan(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "facts.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := store.Partition("demo")
	put := func(day, id string, n int) {
		t.Helper()
		if err := st.Txn(ctx, p, func(tx store.Tx) error { return facts.Put(tx, day, id, fact{N: n}) }); err != nil {
			t.Fatal(err)
		}
	}
	put("2026-10-31", "a", 0) // before the range
	put("2026-11-02", "b", 3)
	put("2026-11-01", "b", 2)
	put("2026-11-01", "a", 1)
	put("2026-11-04", "a", 9) // after the range
	for i := range 1500 {     // more than a page of another day
		put("2026-11-03", fmt.Sprintf("%04d", i), 100)
	}
	if err := st.Txn(ctx, p, func(tx store.Tx) error { return tx.Put("stat-other", []byte("not a fact")) }); err != nil {
		t.Fatal(err)
	}

	zone := time.UTC
	start, end, err := facts.Days("2026-11-01", "2026-11-03", zone)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	days := map[string]int{}
	err = facts.Scan(ctx, st, p, start, end, "reports", func(day string, f fact) error {
		days[day]++
		if f.N < 100 {
			got = append(got, f.N)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("facts in order %v, want %v", got, want)
	}
	if days["2026-11-01"] != 2 || days["2026-11-02"] != 1 || days["2026-11-03"] != 1500 || len(days) != 3 {
		t.Errorf("facts by day %v", days)
	}

	stop := errors.New("stop")
	err = facts.Scan(ctx, st, p, start, end, "reports", func(string, fact) error { return stop })
	if !errors.Is(err, stop) {
		t.Errorf("fn's error: %v, want it returned", err)
	}

	put("2026-11-05", "bad", 0)
	if err := st.Txn(ctx, p, func(tx store.Tx) error { return tx.Put("stat/2026-11-05/bad", []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	day5, _, _ := facts.Days("2026-11-05", "2026-11-05", zone)
	if err := facts.Scan(ctx, st, p, day5, day5, "reports", func(string, fact) error { return nil }); err == nil {
		t.Error("a fact that does not decode was not reported")
	}
}

func TestNearestRank(t *testing.T) {
	sorted := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	for _, tc := range []struct{ q, want float64 }{{0.5, 50}, {0.9, 90}, {0.95, 100}, {1, 100}, {0.01, 10}} {
		if got := facts.NearestRank(sorted, tc.q); got != tc.want {
			t.Errorf("NearestRank(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := facts.NearestRank([]float64{7}, 0.5); got != 7 {
		t.Errorf("one value: %v", got)
	}
}
