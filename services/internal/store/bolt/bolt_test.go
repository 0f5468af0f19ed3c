package bolt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/storetest"
)

// opener returns an Opener on one file in a fresh temp dir.
func opener(tb testing.TB, opts Options) storetest.Opener {
	path := filepath.Join(tb.TempDir(), "test.db")
	return func() (store.Store, error) { return Open(path, opts) }
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener { return opener(t, Options{}) })
}

// TestFailingFnDoesNotRerunOthers runs Txn calls that share group commits,
// some of them failing with a domain error or panicking, and checks that
// every fn ran exactly once: a failure must not make bbolt re-run the other
// callers' functions.
func TestFailingFnDoesNotRerunOthers(t *testing.T) {
	// Callers released together queue up behind the first commit, so
	// most of them share groups.
	s, err := Open(filepath.Join(t.TempDir(), "test.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	const p = store.Partition("batch")
	if _, err := store.Create(ctx, s, p, "taken", nil); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")

	const callers = 48
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		runs  = make(map[int]int)
	)
	for i := range callers {
		wg.Go(func() {
			<-start
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						err = fmt.Errorf("panic: %v", v)
					}
				}()
				err = s.Txn(ctx, p, func(tx store.Tx) error {
					mu.Lock()
					runs[i]++
					mu.Unlock()
					if err := tx.Create(fmt.Sprintf("k%d", i), nil); err != nil {
						return err
					}
					tx.Append(fmt.Appendf(nil, "e%d", i))
					switch i % 4 {
					case 1:
						return errBoom
					case 2:
						return tx.Create("taken", nil)
					case 3:
						if i%8 == 3 {
							panic("fn panicked")
						}
					}
					return nil
				})
			}()
			var want error
			switch i % 4 {
			case 1:
				want = errBoom
			case 2:
				want = store.ErrAlreadyExists
			}
			switch {
			case i%8 == 3:
				if err == nil || !strings.Contains(err.Error(), "fn panicked") {
					t.Errorf("caller %d: %v, want the panic re-raised", i, err)
				}
			case want == nil && err != nil:
				t.Errorf("caller %d: %v", i, err)
			case want != nil && !errors.Is(err, want):
				t.Errorf("caller %d: %v, want %v", i, err, want)
			}
		})
	}
	close(start)
	wg.Wait()

	committed := 0
	for i := range callers {
		if runs[i] != 1 {
			t.Errorf("caller %d: fn ran %d times, want 1", i, runs[i])
		}
		_, err := s.Get(ctx, p, fmt.Sprintf("k%d", i))
		ok := i%4 == 0 || (i%4 == 3 && i%8 != 3)
		if ok {
			committed++
		}
		if ok != (err == nil) {
			t.Errorf("caller %d: key present = %v, want %v", i, err == nil, ok)
		}
	}
	evs, err := s.Events(ctx, p, 0, 1000)
	if err != nil || len(evs) != committed {
		t.Errorf("%d events, %v; want %d", len(evs), err, committed)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "directory.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	t.Run("file mode", func(t *testing.T) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("mode %v, want 0600", mode)
		}
	})

	t.Run("durable", func(t *testing.T) {
		if s.db.NoSync {
			t.Error("NoSync is set")
		}
		if s.maxGroup != DefaultMaxGroup {
			t.Errorf("group size %d, want the default", s.maxGroup)
		}
	})

	t.Run("locked", func(t *testing.T) {
		start := time.Now()
		s2, err := Open(path, Options{LockTimeout: 200 * time.Millisecond})
		if err == nil {
			s2.Close()
			t.Fatal("second Open of a locked file succeeded")
		}
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), path) {
			t.Errorf("error %q: want ErrUnavailable naming %s", err, path)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("gave up after %v, want about the lock timeout", d)
		}
	})

	t.Run("bad options", func(t *testing.T) {
		_, err := Open(filepath.Join(dir, "other.db"), Options{MaxGroup: -1})
		if err == nil {
			t.Error("negative MaxGroup accepted")
		}
	})

	t.Run("not a bolt file", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.db")
		if err := os.WriteFile(bad, []byte(strings.Repeat("not bolt", 1024)), 0o600); err != nil {
			t.Fatal(err)
		}
		if s, err := Open(bad, Options{}); err == nil {
			s.Close()
			t.Error("opened a file that is not a bolt database")
		}
	})
}

func BenchmarkCreate(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			storetest.BenchmarkCreate(b, opener(b, Options{}), writers)
		})
	}
}

func BenchmarkCreateRandom(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			storetest.BenchmarkCreateRandom(b, opener(b, Options{}), writers)
		})
	}
}

// BenchmarkCreateByWriters shows how group commit scales with the number of
// concurrent writers, and how the group bound affects it.
func BenchmarkCreateByWriters(b *testing.B) {
	for _, group := range []int{64, DefaultMaxGroup} {
		for _, writers := range []int{1, 2, 4, 8, 16, 32, 64, 128} {
			b.Run(fmt.Sprintf("group=%d/writers=%d", group, writers), func(b *testing.B) {
				storetest.BenchmarkCreate(b, opener(b, Options{MaxGroup: group}), writers)
			})
		}
	}
}
