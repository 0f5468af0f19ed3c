package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/countymcc/mcc/services/internal/store"
)

// pages is a Lister over sorted keys that counts its calls and can fail
// from a given call on.
type pages struct {
	keys   []string
	calls  int
	failAt int
}

func (l *pages) List(_ context.Context, _ store.Partition, prefix, after string, limit int) ([]store.Record, bool, error) {
	l.calls++
	if l.failAt > 0 && l.calls >= l.failAt {
		return nil, false, errors.New("backend down")
	}
	var out []store.Record
	for _, k := range l.keys {
		if !strings.HasPrefix(k, prefix) || k <= after {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, store.Record{Key: k})
	}
	return out, false, nil
}

func keysOf(n int) []string {
	var keys []string
	for i := range n {
		keys = append(keys, fmt.Sprintf("a/%03d", i))
	}
	return append(keys, "b/000")
}

func TestScanReadsEveryPageInOrder(t *testing.T) {
	l := &pages{keys: keysOf(10)}
	var got []string
	for r, err := range store.Scan(context.Background(), l, "p", "a/", "a/002", 3) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Key)
	}
	if want := keysOf(10)[3:10]; !slices.Equal(got, want) {
		t.Errorf("keys %q, want %q", got, want)
	}
	if l.calls != 3 {
		t.Errorf("%d reads of pages of 3 for 7 keys, want 3", l.calls)
	}
}

func TestScanStopsWhenTheLoopBreaks(t *testing.T) {
	l := &pages{keys: keysOf(10)}
	n := 0
	for _, err := range store.Scan(context.Background(), l, "p", "a/", "", 3) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	if l.calls != 1 {
		t.Errorf("%d reads after breaking on the first page's last record, want 1", l.calls)
	}
}

func TestScanYieldsAFailedReadAndEnds(t *testing.T) {
	l := &pages{keys: keysOf(10), failAt: 2}
	var keys, errs int
	for _, err := range store.Scan(context.Background(), l, "p", "a/", "", 4) {
		if err != nil {
			errs++
			continue
		}
		keys++
	}
	if keys != 4 || errs != 1 {
		t.Errorf("%d records and %d errors, want the first page's 4 and one error", keys, errs)
	}
}
