// Package storetest is the conformance suite every store.Store backend must
// pass. It lives in a regular file so that each backend's tests, and any
// wrapper around a backend, run exactly the same checks. It tests error
// kinds with errors.Is, never message text.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/store"
)

// Opener opens a backend on one namespace (a directory, a key prefix). It
// may be called again after the store it returned is closed, and then
// reopens the same data.
type Opener func() (store.Store, error)

// sentinels are the errors the suite distinguishes.
var sentinels = []error{store.ErrNotFound, store.ErrAlreadyExists, store.ErrConflict, store.ErrClosed, store.ErrUnavailable, store.ErrCompacted}

// waitLimit bounds every wait for something that must happen, so a broken
// backend fails the test instead of hanging it.
const waitLimit = 10 * time.Second

// Run runs the suite. newBackend returns an Opener on a fresh, empty
// namespace; it is called once per subtest, with the subtest's t, so it can
// register cleanups there.
func Run(t *testing.T, newBackend func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"SingleKeyOperations", testSingleKey},
		{"TxnAtomicity", testTxnAtomicity},
		{"TxnReadsOwnWrites", testReadOwnWrites},
		{"CompareAndSwapRaces", testRaces},
		{"List", testList},
		{"ListPaging", testListPaging},
		{"PartitionIsolation", testPartitions},
		{"EventLog", testEvents},
		{"EventLogConcurrentAppends", testConcurrentAppends},
		{"WaitEvents", testWaitEvents},
		{"CloseAndReopen", testReopen},
		{"InvalidPartition", testInvalidPartition},
		{"InvalidKey", testInvalidKey},
		{"Ping", testPing},
		{"Partitions", testPartitionList},
		{"TrimEvents", testTrimEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBackend(t)) })
	}
}

// mustOpen opens a store and closes it when the test ends.
func mustOpen(t *testing.T, open Opener) store.Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// ctxFor returns a context that ends with the test, bounded by waitLimit.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 3*waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// checkErr fails unless err is nil (want nil) or matches want by errors.Is.
func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

// checkPlainErr fails unless err is non-nil and none of the sentinels: bad
// input is a programming error, and must not look like a state of the data.
func checkPlainErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one", what)
		return
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			t.Errorf("%s: error %v is %v, want a plain error", what, err, s)
		}
	}
}

// checkRecord fails unless key holds value at version.
func checkRecord(t *testing.T, s store.Store, p store.Partition, key, value string, version uint64) {
	t.Helper()
	rec, err := s.Get(ctxFor(t), p, key)
	if err != nil {
		t.Errorf("get %q: %v", key, err)
		return
	}
	if rec.Key != key || string(rec.Value) != value || rec.Version != version {
		t.Errorf("get %q = {%q %q v%d}, want {%q %q v%d}", key, rec.Key, rec.Value, rec.Version, key, value, version)
	}
}

// checkAbsent fails unless key is absent.
func checkAbsent(t *testing.T, s store.Store, p store.Partition, key string) {
	t.Helper()
	_, err := s.Get(ctxFor(t), p, key)
	checkErr(t, fmt.Sprintf("get %q", key), err, store.ErrNotFound)
}

// checkNoEvents fails if p has any event.
func checkNoEvents(t *testing.T, s store.Store, p store.Partition) {
	t.Helper()
	evs, err := s.Events(ctxFor(t), p, 0, 10)
	if err != nil {
		t.Errorf("events: %v", err)
	}
	if len(evs) != 0 {
		t.Errorf("events = %v, want none", evs)
	}
}

// put writes key through Tx.Put.
func put(ctx context.Context, s store.Store, p store.Partition, key string, value []byte) error {
	return s.Txn(ctx, p, func(tx store.Tx) error { return tx.Put(key, value) })
}

// op is one step of a single-key scenario.
type op struct {
	do      string // get, create, update, put or delete
	value   string
	version uint64
	want    error
	// wantVersion and wantValue are what the key holds after the step;
	// wantVersion 0 means absent.
	wantVersion uint64
	wantValue   string
}

func testSingleKey(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	tests := []struct {
		name string
		ops  []op
	}{
		{"get absent", []op{{do: "get", want: store.ErrNotFound}}},
		{"create", []op{{do: "create", value: "a", wantVersion: 1, wantValue: "a"}}},
		{"create existing", []op{
			{do: "create", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "create", value: "b", want: store.ErrAlreadyExists, wantVersion: 1, wantValue: "a"},
		}},
		{"update", []op{
			{do: "create", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "update", value: "b", version: 1, wantVersion: 2, wantValue: "b"},
			{do: "update", value: "c", version: 2, wantVersion: 3, wantValue: "c"},
		}},
		{"update stale", []op{
			{do: "create", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "update", value: "b", version: 1, wantVersion: 2, wantValue: "b"},
			{do: "update", value: "c", version: 1, want: store.ErrConflict, wantVersion: 2, wantValue: "b"},
			{do: "update", value: "c", version: 3, want: store.ErrConflict, wantVersion: 2, wantValue: "b"},
			{do: "update", value: "c", version: 0, want: store.ErrConflict, wantVersion: 2, wantValue: "b"},
		}},
		{"update absent", []op{
			{do: "update", value: "a", version: 1, want: store.ErrNotFound},
			{do: "update", value: "a", version: 0, want: store.ErrNotFound},
		}},
		{"put", []op{
			{do: "put", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "put", value: "b", wantVersion: 2, wantValue: "b"},
			{do: "update", value: "c", version: 2, wantVersion: 3, wantValue: "c"},
			{do: "put", value: "d", wantVersion: 4, wantValue: "d"},
		}},
		{"delete", []op{
			{do: "create", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "delete", version: 1},
			{do: "get", want: store.ErrNotFound},
		}},
		{"delete stale", []op{
			{do: "create", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "delete", version: 2, want: store.ErrConflict, wantVersion: 1, wantValue: "a"},
		}},
		{"delete absent", []op{{do: "delete", version: 1, want: store.ErrNotFound}}},
		{"delete version 0 absent", []op{{do: "delete", version: 0}}},
		{"delete version 0 present", []op{
			{do: "put", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "put", value: "b", wantVersion: 2, wantValue: "b"},
			{do: "delete", version: 0},
			{do: "delete", version: 0},
		}},
		{"recreate after delete", []op{
			{do: "create", value: "a", wantVersion: 1, wantValue: "a"},
			{do: "update", value: "b", version: 1, wantVersion: 2, wantValue: "b"},
			{do: "delete", version: 2},
			{do: "update", value: "c", version: 2, want: store.ErrNotFound},
			{do: "create", value: "c", wantVersion: 1, wantValue: "c"},
		}},
		{"empty value", []op{
			{do: "create", value: "", wantVersion: 1, wantValue: ""},
			{do: "update", value: "x", version: 1, wantVersion: 2, wantValue: "x"},
			{do: "put", value: "", wantVersion: 3, wantValue: ""},
		}},
		{"binary value", []op{
			{do: "create", value: "\x00\xff\r\n{}\x00", wantVersion: 1, wantValue: "\x00\xff\r\n{}\x00"},
		}},
	}
	const p = store.Partition("single")
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			key := fmt.Sprintf("key/%d", i)
			for j, o := range tc.ops {
				var (
					err error
					rec store.Record
				)
				switch o.do {
				case "get":
					_, err = s.Get(ctx, p, key)
				case "create":
					rec, err = store.Create(ctx, s, p, key, []byte(o.value))
				case "update":
					rec, err = store.Update(ctx, s, p, key, []byte(o.value), o.version)
				case "put":
					err = put(ctx, s, p, key, []byte(o.value))
				case "delete":
					err = store.Delete(ctx, s, p, key, o.version)
				default:
					t.Fatalf("bad op %q", o.do)
				}
				what := fmt.Sprintf("step %d %s(%q, v%d)", j, o.do, o.value, o.version)
				checkErr(t, what, err, o.want)
				if err == nil && (o.do == "create" || o.do == "update") && (rec.Key != key || string(rec.Value) != o.value || rec.Version != o.wantVersion) {
					t.Errorf("%s returned {%q %q v%d}, want {%q %q v%d}", what, rec.Key, rec.Value, rec.Version, key, o.value, o.wantVersion)
				}
				if o.do == "get" {
					continue
				}
				if o.wantVersion == 0 {
					checkAbsent(t, s, p, key)
				} else {
					checkRecord(t, s, p, key, o.wantValue, o.wantVersion)
				}
			}
		})
	}
	// Writes without Append leave the event log alone.
	checkNoEvents(t, s, p)
}

// errBoom is a Txn function's own error, which Txn must return unchanged.
var errBoom = errors.New("boom")

func testTxnAtomicity(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("atomic")
	if _, err := store.Create(ctx, s, p, "existing", []byte("old")); err != nil {
		t.Fatal(err)
	}

	failing := []struct {
		name string
		fn   func(tx store.Tx) error
		want error
	}{
		{"own error after writes", func(tx store.Tx) error {
			if err := tx.Create("new1", []byte("x")); err != nil {
				return err
			}
			if err := tx.Update("existing", []byte("new"), 1); err != nil {
				return err
			}
			if err := tx.Delete("existing", 2); err != nil {
				return err
			}
			if err := tx.Put("new2", []byte("y")); err != nil {
				return err
			}
			tx.Append([]byte("event"))
			return errBoom
		}, errBoom},
		{"wrapped own error", func(tx store.Tx) error {
			if err := tx.Create("new1", []byte("x")); err != nil {
				return err
			}
			tx.Append([]byte("event"))
			return fmt.Errorf("validating: %w", errBoom)
		}, errBoom},
		{"domain error from Tx", func(tx store.Tx) error {
			if err := tx.Put("new1", []byte("x")); err != nil {
				return err
			}
			tx.Append([]byte("event"))
			return tx.Create("existing", []byte("y"))
		}, store.ErrAlreadyExists},
		{"conflict from Tx", func(tx store.Tx) error {
			tx.Append([]byte("event"))
			if err := tx.Create("new1", []byte("x")); err != nil {
				return err
			}
			return tx.Update("existing", []byte("y"), 7)
		}, store.ErrConflict},
	}
	for _, tc := range failing {
		t.Run(tc.name, func(t *testing.T) {
			var wantErr error
			err := s.Txn(ctx, p, func(tx store.Tx) error {
				wantErr = tc.fn(tx)
				return wantErr
			})
			if err != wantErr {
				t.Errorf("Txn returned %v, want fn's own error %v unchanged", err, wantErr)
			}
			checkErr(t, "Txn", err, tc.want)
			checkRecord(t, s, p, "existing", "old", 1)
			checkAbsent(t, s, p, "new1")
			checkAbsent(t, s, p, "new2")
			checkNoEvents(t, s, p)
		})
	}

	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := s.Txn(cctx, p, func(tx store.Tx) error {
			tx.Append([]byte("event"))
			return tx.Create("new1", []byte("x"))
		})
		checkErr(t, "Txn", err, context.Canceled)
		checkAbsent(t, s, p, "new1")
		checkNoEvents(t, s, p)
	})

	t.Run("commit", func(t *testing.T) {
		if _, err := store.Create(ctx, s, p, "gone", []byte("g")); err != nil {
			t.Fatal(err)
		}
		err := s.Txn(ctx, p, func(tx store.Tx) error {
			if err := tx.Create("new1", []byte("x")); err != nil {
				return err
			}
			if err := tx.Update("existing", []byte("new"), 1); err != nil {
				return err
			}
			if err := tx.Delete("gone", 1); err != nil {
				return err
			}
			if err := tx.Put("new2", []byte("y")); err != nil {
				return err
			}
			tx.Append([]byte("first"))
			tx.Append([]byte("second"))
			return nil
		})
		if err != nil {
			t.Fatalf("Txn: %v", err)
		}
		checkRecord(t, s, p, "new1", "x", 1)
		checkRecord(t, s, p, "existing", "new", 2)
		checkRecord(t, s, p, "new2", "y", 1)
		checkAbsent(t, s, p, "gone")
		evs, err := s.Events(ctx, p, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.Event{{Seq: 1, Data: []byte("first")}, {Seq: 2, Data: []byte("second")}}
		if !eventsEqual(evs, want) {
			t.Errorf("events = %v, want %v", evs, want)
		}
	})
}

func testReadOwnWrites(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("ryow")
	if _, err := store.Create(ctx, s, p, "pre", []byte("p1")); err != nil {
		t.Fatal(err)
	}
	// steps run in order inside one Txn; each checks the Tx's view.
	steps := []struct {
		name string
		do   func(tx store.Tx) error
		want error
		key  string
		// wantValue and wantVersion are what tx.Get(key) returns next;
		// version 0 means ErrNotFound.
		wantValue   string
		wantVersion uint64
	}{
		{"get absent", func(tx store.Tx) error { return nil }, nil, "k", "", 0},
		{"create", func(tx store.Tx) error { return tx.Create("k", []byte("v1")) }, nil, "k", "v1", 1},
		{"create again", func(tx store.Tx) error { return tx.Create("k", []byte("v9")) }, store.ErrAlreadyExists, "k", "v1", 1},
		{"update", func(tx store.Tx) error { return tx.Update("k", []byte("v2"), 1) }, nil, "k", "v2", 2},
		{"update stale", func(tx store.Tx) error { return tx.Update("k", []byte("v9"), 1) }, store.ErrConflict, "k", "v2", 2},
		{"put", func(tx store.Tx) error { return tx.Put("k", []byte("v3")) }, nil, "k", "v3", 3},
		{"delete stale", func(tx store.Tx) error { return tx.Delete("k", 2) }, store.ErrConflict, "k", "v3", 3},
		{"delete", func(tx store.Tx) error { return tx.Delete("k", 3) }, nil, "k", "", 0},
		{"update deleted", func(tx store.Tx) error { return tx.Update("k", []byte("v9"), 3) }, store.ErrNotFound, "k", "", 0},
		{"delete deleted", func(tx store.Tx) error { return tx.Delete("k", 3) }, store.ErrNotFound, "k", "", 0},
		{"delete deleted version 0", func(tx store.Tx) error { return tx.Delete("k", 0) }, nil, "k", "", 0},
		{"recreate", func(tx store.Tx) error { return tx.Create("k", []byte("v4")) }, nil, "k", "v4", 1},
		{"see committed", func(tx store.Tx) error { return nil }, nil, "pre", "p1", 1},
		{"update committed", func(tx store.Tx) error { return tx.Update("pre", []byte("p2"), 1) }, nil, "pre", "p2", 2},
		{"delete committed", func(tx store.Tx) error { return tx.Delete("pre", 0) }, nil, "pre", "", 0},
		{"recreate committed", func(tx store.Tx) error { return tx.Put("pre", []byte("p3")) }, nil, "pre", "p3", 1},
		{"put new", func(tx store.Tx) error { return tx.Put("q", []byte("q1")) }, nil, "q", "q1", 1},
		{"delete new", func(tx store.Tx) error { return tx.Delete("q", 1) }, nil, "q", "", 0},
	}
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	err := s.Txn(ctx, p, func(tx store.Tx) error {
		mu.Lock()
		failures = nil // fn may run more than once; report the last run.
		mu.Unlock()
		for _, st := range steps {
			if err := st.do(tx); (st.want == nil && err != nil) || (st.want != nil && !errors.Is(err, st.want)) {
				fail("%s: error %v, want %v", st.name, err, st.want)
			}
			rec, err := tx.Get(st.key)
			switch {
			case st.wantVersion == 0 && !errors.Is(err, store.ErrNotFound):
				fail("%s: tx.Get(%q) = %v, %v; want ErrNotFound", st.name, st.key, rec, err)
			case st.wantVersion != 0 && (err != nil || string(rec.Value) != st.wantValue || rec.Version != st.wantVersion || rec.Key != st.key):
				fail("%s: tx.Get(%q) = {%q %q v%d}, %v; want {%q v%d}", st.name, st.key, rec.Key, rec.Value, rec.Version, err, st.wantValue, st.wantVersion)
			}
		}
		// Bytes returned by Get are the caller's: changing them must not
		// change what the transaction commits.
		rec, err := tx.Get("k")
		if err == nil && len(rec.Value) > 0 {
			rec.Value[0] = 'X'
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	for _, f := range failures {
		t.Error(f)
	}
	checkRecord(t, s, p, "k", "v4", 1)
	checkRecord(t, s, p, "pre", "p3", 1)
	checkAbsent(t, s, p, "q")
}

func testRaces(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	const p = store.Partition("races")

	t.Run("increments", func(t *testing.T) {
		ctx := ctxFor(t)
		const goroutines, increments = 32, 50
		if _, err := store.Create(ctx, s, p, "counter", []byte("0")); err != nil {
			t.Fatal(err)
		}
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			conflicts int
		)
		for range goroutines {
			wg.Go(func() {
				for range increments {
					for {
						err := s.Txn(ctx, p, func(tx store.Tx) error {
							rec, err := tx.Get("counter")
							if err != nil {
								return err
							}
							n, err := strconv.Atoi(string(rec.Value))
							if err != nil {
								return err
							}
							return tx.Update("counter", []byte(strconv.Itoa(n+1)), rec.Version)
						})
						if errors.Is(err, store.ErrConflict) {
							// Txn may give up after bounded retries; the
							// caller then retries, as a service would.
							mu.Lock()
							conflicts++
							mu.Unlock()
							continue
						}
						if err != nil {
							t.Errorf("increment: %v", err)
							return
						}
						break
					}
				}
			})
		}
		wg.Wait()
		total := goroutines * increments
		checkRecord(t, s, p, "counter", strconv.Itoa(total), uint64(total+1))
		if conflicts > 0 {
			t.Logf("%d increments gave up with ErrConflict and were retried", conflicts)
		}
	})

	// race starts n goroutines at once and returns their errors.
	race := func(n int, fn func(i int) error) []error {
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = fn(i)
			})
		}
		close(start)
		wg.Wait()
		return errs
	}
	// winner returns the index of the only nil error, checking that every
	// other error is want.
	winner := func(t *testing.T, errs []error, want error) int {
		t.Helper()
		win := -1
		for i, err := range errs {
			switch {
			case err == nil && win >= 0:
				t.Errorf("goroutines %d and %d both won", win, i)
			case err == nil:
				win = i
			default:
				checkErr(t, fmt.Sprintf("goroutine %d", i), err, want)
			}
		}
		if win < 0 {
			t.Fatalf("nobody won: %v", errs)
		}
		return win
	}

	t.Run("stale updates", func(t *testing.T) {
		ctx := ctxFor(t)
		if _, err := store.Create(ctx, s, p, "cas", []byte("start")); err != nil {
			t.Fatal(err)
		}
		errs := race(16, func(i int) error {
			_, err := store.Update(ctx, s, p, "cas", []byte(strconv.Itoa(i)), 1)
			return err
		})
		win := winner(t, errs, store.ErrConflict)
		checkRecord(t, s, p, "cas", strconv.Itoa(win), 2)
	})

	t.Run("stale deletes", func(t *testing.T) {
		ctx := ctxFor(t)
		if _, err := store.Create(ctx, s, p, "del", []byte("start")); err != nil {
			t.Fatal(err)
		}
		errs := race(16, func(i int) error { return store.Delete(ctx, s, p, "del", 1) })
		var ok int
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict):
				t.Errorf("goroutine %d: %v, want nil, ErrNotFound or ErrConflict", i, err)
			}
		}
		if ok != 1 {
			t.Errorf("%d deletes succeeded, want 1", ok)
		}
		checkAbsent(t, s, p, "del")
	})

	t.Run("parallel creates", func(t *testing.T) {
		ctx := ctxFor(t)
		errs := race(16, func(i int) error {
			_, err := store.Create(ctx, s, p, "once", []byte(strconv.Itoa(i)))
			return err
		})
		win := winner(t, errs, store.ErrAlreadyExists)
		checkRecord(t, s, p, "once", strconv.Itoa(win), 1)
	})
}

// listKeys is the fixture of the List tests: prefixes that share bytes,
// separators, unicode, and bytes at both ends of the range.
var listKeys = []string{
	"a", "a/1", "a/10", "a/2", "a/b/c", "a/b:c", "a:1", "a:2", "ab", "ab/1", "ab/2",
	"b", "b/é", "b/日本", "b/日本/1", "b/\x00", "b/\xff", "b/\xff\xff", "b/\xff\xff/x",
	"c:{x}", "c:{y}", "z",
}

// fillList writes listKeys into p, each with value "v:"+key.
func fillList(t *testing.T, s store.Store, p store.Partition) {
	t.Helper()
	ctx := ctxFor(t)
	for _, k := range listKeys {
		if _, err := store.Create(ctx, s, p, k, []byte("v:"+k)); err != nil {
			t.Fatalf("create %q: %v", k, err)
		}
	}
}

// model is what List must return, computed from listKeys in byte order.
func model(prefix, after string, limit int) ([]string, bool) {
	var all []string
	for _, k := range slices.Sorted(slices.Values(listKeys)) {
		if strings.HasPrefix(k, prefix) && k > after {
			all = append(all, k)
		}
	}
	if len(all) > limit {
		return all[:limit], true
	}
	return all, false
}

// checkPage fails unless recs and more are the model's page.
func checkPage(t *testing.T, what string, recs []store.Record, more bool, wantKeys []string, wantMore bool) {
	t.Helper()
	var got []string
	for _, r := range recs {
		got = append(got, r.Key)
		if string(r.Value) != "v:"+r.Key || r.Version != 1 {
			t.Errorf("%s: record {%q %q v%d}, want value %q at v1", what, r.Key, r.Value, r.Version, "v:"+r.Key)
		}
	}
	if !slices.Equal(got, wantKeys) || more != wantMore {
		t.Errorf("%s = %q more=%v, want %q more=%v", what, got, more, wantKeys, wantMore)
	}
}

func testList(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("list")
	fillList(t, s, p)

	tests := []struct {
		name          string
		prefix, after string
		limit         int
		want          []string
		more          bool
	}{
		{"prefix a/ excludes ab/", "a/", "", 10, []string{"a/1", "a/10", "a/2", "a/b/c", "a/b:c"}, false},
		{"prefix ab/ excludes a/", "ab/", "", 10, []string{"ab/1", "ab/2"}, false},
		{"prefix ab", "ab", "", 10, []string{"ab", "ab/1", "ab/2"}, false},
		{"prefix a: ", "a:", "", 10, []string{"a:1", "a:2"}, false},
		{"limit with more", "a/", "", 2, []string{"a/1", "a/10"}, true},
		{"after token", "a/", "a/10", 2, []string{"a/2", "a/b/c"}, true},
		{"last page exactly full", "a/", "a/2", 2, []string{"a/b/c", "a/b:c"}, false},
		{"after last", "a/", "a/b:c", 2, nil, false},
		{"after beyond prefix", "a/", "b", 5, nil, false},
		{"after before prefix", "b/", "a", 2, []string{"b/\x00", "b/é"}, true},
		{"after not a key", "a/", "a/11", 10, []string{"a/2", "a/b/c", "a/b:c"}, false},
		{"unicode", "b/日本", "", 10, []string{"b/日本", "b/日本/1"}, false},
		{"high bytes", "b/\xff", "", 10, []string{"b/\xff", "b/\xff\xff", "b/\xff\xff/x"}, false},
		{"highest bytes", "b/\xff\xff", "b/\xff\xff", 10, []string{"b/\xff\xff/x"}, false},
		{"braces", "c:{", "", 10, []string{"c:{x}", "c:{y}"}, false},
		{"exact key as prefix", "z", "", 10, []string{"z"}, false},
		{"no match", "nothing", "", 10, nil, false},
		{"empty prefix", "", "", 3, []string{"a", "a/1", "a/10"}, true},
		{"empty prefix to end", "", "c:{y}", 3, []string{"z"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, more, err := s.List(ctx, p, tc.prefix, tc.after, tc.limit)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			checkPage(t, "List", recs, more, tc.want, tc.more)
			// The table above is hand-written; the model must agree with it.
			if mk, mm := model(tc.prefix, tc.after, tc.limit); !slices.Equal(mk, tc.want) || mm != tc.more {
				t.Errorf("model disagrees with table: %q %v", mk, mm)
			}
		})
	}

	t.Run("every prefix and after against the model", func(t *testing.T) {
		cuts := []string{""}
		for _, k := range listKeys {
			for i := 1; i <= len(k); i++ {
				cuts = append(cuts, k[:i])
			}
		}
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
		for _, prefix := range cuts {
			for _, after := range []string{"", prefix, prefix + "/", prefix + "\xff", "a/2", "b/\xff"} {
				for _, limit := range []int{1, 3, 100} {
					recs, more, err := s.List(ctx, p, prefix, after, limit)
					if err != nil {
						t.Fatalf("List(%q, %q, %d): %v", prefix, after, limit, err)
					}
					wk, wm := model(prefix, after, limit)
					checkPage(t, fmt.Sprintf("List(%q, %q, %d)", prefix, after, limit), recs, more, wk, wm)
				}
			}
		}
	})

	t.Run("empty partition", func(t *testing.T) {
		recs, more, err := s.List(ctx, "list-empty", "", "", 10)
		if err != nil || len(recs) != 0 || more {
			t.Errorf("List = %v, %v, %v; want nothing", recs, more, err)
		}
	})

	t.Run("bad limit", func(t *testing.T) {
		for _, limit := range []int{0, -1} {
			_, _, err := s.List(ctx, p, "", "", limit)
			checkPlainErr(t, fmt.Sprintf("List limit %d", limit), err)
		}
	})
}

func testListPaging(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("paging")
	fillList(t, s, p)
	for _, prefix := range []string{"", "a", "a/", "b/", "b/\xff", "z", "none"} {
		for _, limit := range []int{1, 2, 3, 5, 11, 100} {
			t.Run(fmt.Sprintf("%q by %d", prefix, limit), func(t *testing.T) {
				want, _ := model(prefix, "", len(listKeys))
				var got []string
				after := ""
				for page := 0; ; page++ {
					if page > len(listKeys)+1 {
						t.Fatal("paging does not end")
					}
					recs, more, err := s.List(ctx, p, prefix, after, limit)
					if err != nil {
						t.Fatal(err)
					}
					if len(recs) > limit || (more && len(recs) != limit) {
						t.Fatalf("page %d: %d records, more=%v, limit %d", page, len(recs), more, limit)
					}
					for _, r := range recs {
						got = append(got, r.Key)
					}
					if !more {
						break
					}
					after = recs[len(recs)-1].Key
				}
				if !slices.Equal(got, want) {
					t.Errorf("pages = %q, want %q", got, want)
				}
			})
		}
	}
}

func testPartitions(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p1, p2 = store.Partition("community-1"), store.Partition("community-2")
	for _, c := range []struct {
		p store.Partition
		v string
	}{{p1, "one"}, {p2, "two"}} {
		err := s.Txn(ctx, c.p, func(tx store.Tx) error {
			if err := tx.Create("k", []byte(c.v)); err != nil {
				return err
			}
			tx.Append([]byte(c.v))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Update(ctx, s, p1, "k", []byte("one-b"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, s, p1, "only-1", nil); err != nil {
		t.Fatal(err)
	}
	err := s.Txn(ctx, p1, func(tx store.Tx) error {
		tx.Append([]byte("one-2"))
		tx.Append([]byte("one-3"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkRecord(t, s, p1, "k", "one-b", 2)
	checkRecord(t, s, p2, "k", "two", 1)
	checkAbsent(t, s, p2, "only-1")
	recs, _, err := s.List(ctx, p2, "", "", 10)
	if err != nil || len(recs) != 1 || recs[0].Key != "k" {
		t.Errorf("List(p2) = %v, %v; want only k", recs, err)
	}
	for _, c := range []struct {
		p    store.Partition
		want []store.Event
	}{
		{p1, []store.Event{{Seq: 1, Data: []byte("one")}, {Seq: 2, Data: []byte("one-2")}, {Seq: 3, Data: []byte("one-3")}}},
		{p2, []store.Event{{Seq: 1, Data: []byte("two")}}},
	} {
		evs, err := s.Events(ctx, c.p, 0, 10)
		if err != nil || !eventsEqual(evs, c.want) {
			t.Errorf("Events(%s) = %v, %v; want %v", c.p, evs, err, c.want)
		}
	}
	if err := store.Delete(ctx, s, p1, "k", 0); err != nil {
		t.Fatal(err)
	}
	checkRecord(t, s, p2, "k", "two", 1)
}

// eventsEqual compares event slices by Seq and Data.
func eventsEqual(a, b []store.Event) bool {
	return slices.EqualFunc(a, b, func(x, y store.Event) bool { return x.Seq == y.Seq && bytes.Equal(x.Data, y.Data) })
}

// appendEvents commits one Txn appending data.
func appendEvents(ctx context.Context, s store.Store, p store.Partition, data ...string) error {
	return s.Txn(ctx, p, func(tx store.Tx) error {
		for _, d := range data {
			tx.Append([]byte(d))
		}
		return nil
	})
}

func testEvents(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("events")
	checkNoEvents(t, s, p)
	var want []store.Event
	for i := range 10 {
		data := []string{fmt.Sprintf("e%d", len(want)+1)}
		if i%3 == 0 {
			data = append(data, fmt.Sprintf("e%d", len(want)+2))
		}
		if i == 4 {
			data = append(data, "", "\x00\xff")
		}
		if err := appendEvents(ctx, s, p, data...); err != nil {
			t.Fatal(err)
		}
		for _, d := range data {
			want = append(want, store.Event{Seq: uint64(len(want) + 1), Data: []byte(d)})
		}
	}
	n := uint64(len(want))
	tests := []struct {
		name  string
		after uint64
		limit int
		want  []store.Event
	}{
		{"all", 0, 100, want},
		{"first", 0, 1, want[:1]},
		{"page", 5, 3, want[5:8]},
		{"tail", n - 2, 100, want[n-2:]},
		{"after last", n, 10, nil},
		{"far after last", n + 100, 10, nil},
		{"max cursor", ^uint64(0), 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := s.Events(ctx, p, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !eventsEqual(evs, tc.want) {
				t.Errorf("Events(%d, %d) = %v, want %v", tc.after, tc.limit, evs, tc.want)
			}
		})
	}
	t.Run("bad limit", func(t *testing.T) {
		_, err := s.Events(ctx, p, 0, 0)
		checkPlainErr(t, "Events limit 0", err)
	})
}

func testConcurrentAppends(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("appends")
	const goroutines, txns = 16, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range txns {
				// Each Txn appends two events and writes a key, so the log
				// must also keep one commit's events adjacent.
				err := s.Txn(ctx, p, func(tx store.Tx) error {
					tx.Append(fmt.Appendf(nil, "%d/%d/0", g, i))
					tx.Append(fmt.Appendf(nil, "%d/%d/1", g, i))
					return tx.Create(fmt.Sprintf("k/%d/%d", g, i), nil)
				})
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	var all []store.Event
	for after := uint64(0); ; {
		evs, err := s.Events(ctx, p, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].Seq
	}
	if len(all) != 2*goroutines*txns {
		t.Fatalf("%d events, want %d", len(all), 2*goroutines*txns)
	}
	seen := make(map[string]bool)
	last := make(map[int]int) // goroutine -> last txn seen, for per-writer order
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has Seq %d: the log has a gap or is out of order", i, e.Seq)
		}
		if seen[string(e.Data)] {
			t.Errorf("event %q appears twice", e.Data)
		}
		seen[string(e.Data)] = true
		var g, n, half int
		if _, err := fmt.Sscanf(string(e.Data), "%d/%d/%d", &g, &n, &half); err != nil {
			t.Fatalf("event %q: %v", e.Data, err)
		}
		if half == 0 {
			if prev, ok := last[g]; ok && n <= prev {
				t.Errorf("goroutine %d: txn %d logged after txn %d", g, n, prev)
			}
			last[g] = n
			continue
		}
		if i == 0 || string(all[i-1].Data) != fmt.Sprintf("%d/%d/0", g, n) {
			t.Errorf("event %q at Seq %d does not follow its twin", e.Data, e.Seq)
		}
	}
}

func testWaitEvents(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	const p = store.Partition("wait")

	// waitAsync runs WaitEvents in a goroutine and returns its result
	// channel.
	waitAsync := func(ctx context.Context, p store.Partition, after uint64) <-chan error {
		done := make(chan error, 1)
		go func() { done <- s.WaitEvents(ctx, p, after) }()
		return done
	}
	// mustBlock fails if the wait returns within a short while.
	mustBlock := func(t *testing.T, done <-chan error) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("WaitEvents returned %v before any new event", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// result waits for the wait to return.
	result := func(t *testing.T, done <-chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(waitLimit):
			t.Fatal("WaitEvents did not return")
			return nil
		}
	}

	t.Run("wakes on first append to a new partition", func(t *testing.T) {
		ctx := ctxFor(t)
		done := waitAsync(ctx, p, 0)
		mustBlock(t, done)
		if err := appendEvents(ctx, s, p, "one"); err != nil {
			t.Fatal(err)
		}
		if err := result(t, done); err != nil {
			t.Fatalf("WaitEvents: %v", err)
		}
	})

	t.Run("returns at once when behind", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctxFor(t), waitLimit)
		defer cancel()
		if err := s.WaitEvents(ctx, p, 0); err != nil {
			t.Fatalf("WaitEvents: %v", err)
		}
	})

	t.Run("wakes on append from another goroutine", func(t *testing.T) {
		ctx := ctxFor(t)
		const waiters = 4
		var dones []<-chan error
		for range waiters {
			dones = append(dones, waitAsync(ctx, p, 1))
		}
		for _, d := range dones {
			mustBlock(t, d)
		}
		if err := appendEvents(ctx, s, p, "two"); err != nil {
			t.Fatal(err)
		}
		for _, d := range dones {
			if err := result(t, d); err != nil {
				t.Fatalf("WaitEvents: %v", err)
			}
		}
		evs, err := s.Events(ctx, p, 1, 10)
		if err != nil || len(evs) != 1 || evs[0].Seq != 2 {
			t.Errorf("Events after wake = %v, %v; want Seq 2", evs, err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctxFor(t))
		done := waitAsync(ctx, p, 2)
		mustBlock(t, done)
		start := time.Now()
		cancel()
		err := result(t, done)
		checkErr(t, "WaitEvents", err, context.Canceled)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("WaitEvents took %v to notice the cancel", d)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctxFor(t), 200*time.Millisecond)
		defer cancel()
		err := result(t, waitAsync(ctx, p, 2))
		checkErr(t, "WaitEvents", err, context.DeadlineExceeded)
	})

	t.Run("already done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctxFor(t))
		cancel()
		err := s.WaitEvents(ctx, p, 2)
		checkErr(t, "WaitEvents", err, context.Canceled)
	})
}

func testReopen(t *testing.T, open Opener) {
	ctx := ctxFor(t)
	const p = store.Partition("reopen")
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	err = s.Txn(ctx, p, func(tx store.Tx) error {
		if err := tx.Create("a", []byte("1")); err != nil {
			return err
		}
		if err := tx.Create("b", []byte("2")); err != nil {
			return err
		}
		tx.Append([]byte("e1"))
		tx.Append([]byte("e2"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Update(ctx, s, p, "a", []byte("1b"), 1); err != nil {
		t.Fatal(err)
	}
	if err := appendEvents(ctx, s, p, "e3"); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() { waiting <- s.WaitEvents(ctx, p, 3) }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	t.Run("waiter released by Close", func(t *testing.T) {
		select {
		case err := <-waiting:
			checkErr(t, "WaitEvents during Close", err, store.ErrClosed)
		case <-time.After(waitLimit):
			t.Fatal("WaitEvents still blocked after Close")
		}
	})

	t.Run("calls after Close", func(t *testing.T) {
		calls := []struct {
			name string
			call func() error
		}{
			{"Get", func() error { _, err := s.Get(ctx, p, "a"); return err }},
			{"List", func() error { _, _, err := s.List(ctx, p, "", "", 10); return err }},
			{"Txn", func() error {
				return s.Txn(ctx, p, func(tx store.Tx) error { return tx.Put("c", nil) })
			}},
			{"Create", func() error { _, err := store.Create(ctx, s, p, "c", nil); return err }},
			{"Events", func() error { _, err := s.Events(ctx, p, 0, 10); return err }},
			{"WaitEvents", func() error { return s.WaitEvents(ctx, p, 0) }},
			{"Ping", func() error { return s.Ping(ctx) }},
			{"Close", s.Close},
		}
		for _, c := range calls {
			checkErr(t, c.name, c.call(), store.ErrClosed)
		}
	})

	s = mustOpen(t, open)
	t.Run("data survives", func(t *testing.T) {
		checkRecord(t, s, p, "a", "1b", 2)
		checkRecord(t, s, p, "b", "2", 1)
		checkAbsent(t, s, p, "c")
		evs, err := s.Events(ctx, p, 0, 10)
		want := []store.Event{{Seq: 1, Data: []byte("e1")}, {Seq: 2, Data: []byte("e2")}, {Seq: 3, Data: []byte("e3")}}
		if err != nil || !eventsEqual(evs, want) {
			t.Errorf("Events = %v, %v; want %v", evs, err, want)
		}
	})
	t.Run("sequence and versions continue", func(t *testing.T) {
		err := s.Txn(ctx, p, func(tx store.Tx) error {
			tx.Append([]byte("e4"))
			return tx.Update("a", []byte("1c"), 2)
		})
		if err != nil {
			t.Fatal(err)
		}
		checkRecord(t, s, p, "a", "1c", 3)
		evs, err := s.Events(ctx, p, 3, 10)
		want := []store.Event{{Seq: 4, Data: []byte("e4")}}
		if err != nil || !eventsEqual(evs, want) {
			t.Errorf("Events after reopen = %v, %v; want %v", evs, err, want)
		}
	})
}

// badPartitions are names Partition.Validate rejects.
var badPartitions = []store.Partition{"", " ", "a b", "{x}", "x}", "-x", ".x", "a/b", "é", store.Partition(strings.Repeat("x", 65))}

func testInvalidPartition(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	for _, p := range badPartitions {
		t.Run(fmt.Sprintf("%q", p), func(t *testing.T) {
			calls := []struct {
				name string
				call func() error
			}{
				{"Get", func() error { _, err := s.Get(ctx, p, "k"); return err }},
				{"List", func() error { _, _, err := s.List(ctx, p, "", "", 10); return err }},
				{"Txn", func() error {
					return s.Txn(ctx, p, func(tx store.Tx) error {
						tx.Append([]byte("e"))
						return tx.Put("k", nil)
					})
				}},
				{"Events", func() error { _, err := s.Events(ctx, p, 0, 10); return err }},
				{"WaitEvents", func() error { return s.WaitEvents(ctx, p, 0) }},
			}
			for _, c := range calls {
				checkPlainErr(t, c.name, c.call())
			}
		})
	}
	if s.Ping(ctx) != nil {
		t.Error("store unusable after invalid partitions")
	}
}

func testInvalidKey(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	ctx := ctxFor(t)
	const p = store.Partition("keys")
	long := strings.Repeat("k", store.MaxKeyLen)
	if _, err := store.Create(ctx, s, p, long, []byte("max")); err != nil {
		t.Fatalf("create %d-byte key: %v", len(long), err)
	}
	checkRecord(t, s, p, long, "max", 1)

	for _, key := range []string{"", long + "k"} {
		t.Run(fmt.Sprintf("%d bytes", len(key)), func(t *testing.T) {
			_, err := s.Get(ctx, p, key)
			checkPlainErr(t, "Get", err)
			ops := []struct {
				name string
				do   func(tx store.Tx) error
			}{
				{"Get", func(tx store.Tx) error { _, err := tx.Get(key); return err }},
				{"Create", func(tx store.Tx) error { return tx.Create(key, nil) }},
				{"Update", func(tx store.Tx) error { return tx.Update(key, nil, 1) }},
				{"Put", func(tx store.Tx) error { return tx.Put(key, nil) }},
				{"Delete", func(tx store.Tx) error { return tx.Delete(key, 0) }},
			}
			for _, o := range ops {
				// fn ignores the error of the bad key and returns nil; the
				// Txn must still fail, writing neither the good key nor
				// the event.
				var opErr error
				err := s.Txn(ctx, p, func(tx store.Tx) error {
					if err := tx.Create("good", nil); err != nil {
						return err
					}
					tx.Append([]byte("e"))
					opErr = o.do(tx)
					return nil
				})
				checkPlainErr(t, "Tx."+o.name, opErr)
				checkPlainErr(t, "Txn after Tx."+o.name, err)
				checkAbsent(t, s, p, "good")
				checkNoEvents(t, s, p)
			}
		})
	}
}

func testPing(t *testing.T, open Opener) {
	s := mustOpen(t, open)
	if err := s.Ping(ctxFor(t)); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// testPartitionList checks that Partitions lists the partitions written to,
// in byte order, also after a reopen, and that reads create none.
func testPartitionList(t *testing.T, open Opener) {
	ctx := ctxFor(t)
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Partitions(ctx); err != nil || len(got) != 0 {
		t.Fatalf("a new store lists %v, %v", got, err)
	}
	for _, p := range []store.Partition{"wlcb", "demo", "alxa"} {
		if _, err := store.Create(ctx, s, p, "k", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, "read-only", "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get in an unknown partition: %v", err)
	}
	if _, _, err := s.List(ctx, "read-only", "", "", 10); err != nil {
		t.Fatal(err)
	}
	want := []store.Partition{"alxa", "demo", "wlcb"}
	if got, err := s.Partitions(ctx); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Partitions = %v, %v; want %v", got, err, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Partitions(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Partitions after Close: %v, want ErrClosed", err)
	}
	s, err = open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Partitions(ctx); err != nil || !slices.Equal(got, want) {
		t.Errorf("after reopen Partitions = %v, %v; want %v", got, err, want)
	}
}

// testTrimEvents checks retention: trimmed events are gone, a read from
// before the trimmed point is ErrCompacted (never a silent gap) except from
// the start (0), which begins at the oldest event kept; the last
// event is always kept, numbering carries on, and all of it survives a
// reopen.
func testTrimEvents(t *testing.T, open Opener) {
	ctx := ctxFor(t)
	const p = store.Partition("trim")
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.TrimEvents(ctx, p, 10); err != nil {
		t.Fatalf("trimming an empty log: %v", err)
	}
	for i := range 10 {
		if err := appendEvents(ctx, s, p, fmt.Sprintf("e%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.TrimEvents(ctx, p, 4); err != nil {
		t.Fatal(err)
	}
	check := func(s store.Store) {
		t.Helper()
		if _, err := s.Events(ctx, p, 3, 10); !errors.Is(err, store.ErrCompacted) {
			t.Errorf("Events after 3, trimmed through 4: %v, want ErrCompacted", err)
		}
		if evs, err := s.Events(ctx, p, 0, 10); err != nil || len(evs) == 0 || evs[0].Seq != 5 {
			t.Errorf("Events from the start after a trim: %v, %v; want the oldest kept, 5", evs, err)
		}
		evs, err := s.Events(ctx, p, 4, 100)
		if err != nil || len(evs) == 0 || evs[0].Seq != 5 {
			t.Fatalf("Events after the trimmed point: %v, %v; want 5 onwards", evs, err)
		}
	}
	check(s)
	// Trimming less than before changes nothing; trimming past the end
	// keeps the last event.
	if err := s.TrimEvents(ctx, p, 2); err != nil {
		t.Fatal(err)
	}
	check(s)
	if err := s.TrimEvents(ctx, p, 1000); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, p, 9, 10)
	if err != nil || len(evs) != 1 || evs[0].Seq != 10 {
		t.Fatalf("after trimming past the end: %v, %v; want the last event kept", evs, err)
	}
	if _, err := s.Events(ctx, p, 8, 10); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("Events after 8, trimmed through 9: %v", err)
	}
	if err := appendEvents(ctx, s, p, "e11"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err = s.Events(ctx, p, 9, 10)
	if err != nil || len(evs) != 2 || evs[1].Seq != 11 {
		t.Errorf("after reopen: %v, %v; want 10 and 11", evs, err)
	}
	if _, err := s.Events(ctx, p, 8, 10); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("the trim mark did not survive a reopen: %v", err)
	}
}
