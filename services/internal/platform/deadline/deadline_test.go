package deadline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

var start = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

type fixture struct {
	path  string
	store store.Store
	clock *clock.Manual
	mu    sync.Mutex
	fired []deadline.Timer
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{path: filepath.Join(t.TempDir(), "t.db"), clock: clock.NewManual(start)}
	f.open(t)
	return f
}

func (f *fixture) open(t *testing.T) {
	t.Helper()
	s, err := bolt.Open(f.path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.store = s
	t.Cleanup(func() { s.Close() })
}

// scheduler returns a scheduler whose "escalate" handler records the timer
// and whose "fail" handler fails while fail is set.
func (f *fixture) scheduler(fail *atomic.Bool) *deadline.Scheduler {
	s := deadline.NewScheduler(f.store, f.clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Handle("escalate", func(tx store.Tx, t deadline.Timer) error {
		f.mu.Lock()
		f.fired = append(f.fired, t)
		f.mu.Unlock()
		return tx.Put("fired/"+t.ID, t.Payload)
	})
	s.Handle("fail", func(tx store.Tx, t deadline.Timer) error {
		if fail != nil && fail.Load() {
			return errors.New("not now")
		}
		return tx.Put("fired/"+t.ID, nil)
	})
	return s
}

func (f *fixture) set(t *testing.T, p store.Partition, kind, id string, at time.Time) {
	t.Helper()
	err := f.store.Txn(context.Background(), p, func(tx store.Tx) error {
		return deadline.Set(tx, kind, id, at, []byte("payload-"+id))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) fire(t *testing.T, s *deadline.Scheduler) int {
	t.Helper()
	n, err := s.Fire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFiresOnceWhenDue(t *testing.T) {
	f := newFixture(t)
	s := f.scheduler(nil)
	f.set(t, "urad", "escalate", "crit/1", start.Add(10*time.Minute))
	f.set(t, "urad", "escalate", "crit/2", start.Add(20*time.Minute))
	f.set(t, "other", "escalate", "crit/3", start.Add(10*time.Minute))

	if n := f.fire(t, s); n != 0 {
		t.Fatalf("%d fired before they were due", n)
	}
	f.clock.Advance(10 * time.Minute)
	if n := f.fire(t, s); n != 2 {
		t.Fatalf("%d fired at 10 min, want 2 (one per partition)", n)
	}
	if n := f.fire(t, s); n != 0 {
		t.Fatalf("%d fired again", n)
	}
	got := f.fired[0]
	if got.ID != "crit/3" && got.ID != "crit/1" || string(got.Payload) != "payload-"+got.ID || !got.At.Equal(start.Add(10*time.Minute)) {
		t.Errorf("fired %+v", got)
	}
	if _, err := f.store.Get(context.Background(), "urad", "fired/crit/1"); err != nil {
		t.Errorf("the handler's write is missing: %v", err)
	}
	f.clock.Advance(time.Hour)
	if n := f.fire(t, s); n != 1 {
		t.Fatalf("%d fired late, want the remaining 1", n)
	}
}

func TestClearAndMove(t *testing.T) {
	f := newFixture(t)
	s := f.scheduler(nil)
	ctx := context.Background()
	f.set(t, "urad", "escalate", "a", start.Add(time.Minute))
	f.set(t, "urad", "escalate", "b", start.Add(time.Minute))
	if err := f.store.Txn(ctx, "urad", func(tx store.Tx) error { return deadline.Clear(tx, "escalate", "a") }); err != nil {
		t.Fatal(err)
	}
	f.set(t, "urad", "escalate", "b", start.Add(time.Hour)) // moved
	err := f.store.Txn(ctx, "urad", func(tx store.Tx) error {
		at, ok, err := deadline.Due(tx, "escalate", "b")
		if err != nil || !ok || !at.Equal(start.Add(time.Hour)) {
			t.Errorf("Due = %v %v %v", at, ok, err)
		}
		_, ok, _ = deadline.Due(tx, "escalate", "a")
		if ok {
			t.Error("a cleared timer is still due")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute)
	if n := f.fire(t, s); n != 0 {
		t.Fatalf("%d fired: a cleared or moved timer fired at its old time", n)
	}
	f.clock.Advance(time.Hour)
	if n := f.fire(t, s); n != 1 {
		t.Fatalf("%d fired, want the moved one", n)
	}
}

func TestFailingHandlerFiresAgain(t *testing.T) {
	f := newFixture(t)
	var fail atomic.Bool
	fail.Store(true)
	s := f.scheduler(&fail)
	f.set(t, "urad", "fail", "x", start)
	f.set(t, "urad", "nobody-handles-this", "y", start)
	f.set(t, "urad", "escalate", "z", start)
	if n := f.fire(t, s); n != 1 {
		t.Fatalf("%d fired, want only z", n)
	}
	if _, err := f.store.Get(context.Background(), "urad", "fired/x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed handler's write was kept: %v", err)
	}
	fail.Store(false)
	if n := f.fire(t, s); n != 1 {
		t.Fatalf("%d fired after the handler recovered, want 1", n)
	}
}

func TestTimersSurviveARestart(t *testing.T) {
	f := newFixture(t)
	f.set(t, "urad", "escalate", "crit/1", start.Add(10*time.Minute))
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(11 * time.Minute)
	f.open(t)
	if n := f.fire(t, f.scheduler(nil)); n != 1 {
		t.Fatalf("%d fired after the restart, want 1", n)
	}
}

func TestConcurrentSchedulersFireEachTimerOnce(t *testing.T) {
	f := newFixture(t)
	for i := range 50 {
		f.set(t, "urad", "escalate", fmt.Sprint(i), start.Add(time.Duration(i)*time.Second))
	}
	f.clock.Advance(time.Hour)
	var total atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		s := f.scheduler(nil)
		wg.Go(func() {
			n, err := s.Fire(context.Background())
			if err != nil {
				t.Error(err)
			}
			total.Add(int64(n))
		})
	}
	wg.Wait()
	if total.Load() != 50 || len(f.fired) != 50 {
		t.Errorf("%d reported, %d handled; want 50 each", total.Load(), len(f.fired))
	}
}

func TestHandlerCanSetTheNextStep(t *testing.T) {
	f := newFixture(t)
	s := deadline.NewScheduler(f.store, f.clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var steps []time.Time
	s.Handle("escalate", func(tx store.Tx, t deadline.Timer) error {
		steps = append(steps, t.At)
		if len(steps) < 3 {
			return deadline.Set(tx, t.Kind, t.ID, t.At.Add(10*time.Minute), nil)
		}
		return nil
	})
	f.set(t, "urad", "escalate", "crit/1", start.Add(10*time.Minute))
	f.clock.Advance(time.Hour)
	for range 5 {
		f.fire(t, s)
	}
	want := []time.Time{start.Add(10 * time.Minute), start.Add(20 * time.Minute), start.Add(30 * time.Minute)}
	if len(steps) != 3 || !steps[0].Equal(want[0]) || !steps[1].Equal(want[1]) || !steps[2].Equal(want[2]) {
		t.Errorf("steps %v, want %v", steps, want)
	}
}
