package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/redistest"
	"github.com/countymcc/mcc/services/internal/store/storetest"
)

// opener returns an Opener on a fresh prefix; each open dials its own
// client, as a restarted process would, and the client is closed with tb.
func opener(tb testing.TB, cfg ClientConfig, opts Options) storetest.Opener {
	opts.Prefix = redistest.Prefix(tb)
	if opts.Service == "" {
		opts.Service = "test"
	}
	return func() (store.Store, error) {
		c, err := Dial(context.Background(), cfg)
		if err != nil {
			return nil, err
		}
		tb.Cleanup(func() { _ = c.Close() })
		return New(c, opts)
	}
}

func TestStore(t *testing.T) {
	cfg := ClientConfig{Addrs: []string{redistest.Start(t)}}
	storetest.Run(t, func(t *testing.T) storetest.Opener { return opener(t, cfg, Options{}) })
}

func TestStoreCluster(t *testing.T) {
	cfg := ClientConfig{Addrs: redistest.StartCluster(t), Cluster: true}
	storetest.Run(t, func(t *testing.T) storetest.Opener { return opener(t, cfg, Options{}) })
}

// TestWaitEventsAcrossProcesses checks that a waiter sees an append made
// through another client, as from another process.
func TestWaitEventsAcrossProcesses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T) ClientConfig
	}{
		{"standalone", func(t *testing.T) ClientConfig { return ClientConfig{Addrs: []string{redistest.Start(t)}} }},
		{"cluster", func(t *testing.T) ClientConfig { return ClientConfig{Addrs: redistest.StartCluster(t), Cluster: true} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			open := opener(t, tc.cfg(t), Options{})
			watcher, err := open()
			if err != nil {
				t.Fatal(err)
			}
			defer watcher.Close()
			writer, err := open()
			if err != nil {
				t.Fatal(err)
			}
			defer writer.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- watcher.WaitEvents(ctx, "demo", 0) }()
			time.Sleep(100 * time.Millisecond)
			err = writer.Txn(ctx, "demo", func(tx store.Tx) error {
				tx.Append([]byte("hello"))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("WaitEvents: %v", err)
			}
		})
	}
}

func TestWaitReplicas(t *testing.T) {
	primary := redistest.Start(t)
	cfg := ClientConfig{Addrs: []string{primary}}
	ctx := t.Context()

	t.Run("no replica", func(t *testing.T) {
		s, err := opener(t, cfg, Options{WaitReplicas: 1, WaitTimeout: 100 * time.Millisecond})()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = store.Create(ctx, s, "demo", "k", []byte("v"))
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Create without a replica: %v, want ErrUnavailable", err)
		}
	})

	t.Run("with replica", func(t *testing.T) {
		redistest.StartReplica(t, primary)
		s, err := opener(t, cfg, Options{WaitReplicas: 1, WaitTimeout: 5 * time.Second})()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := store.Create(ctx, s, "demo", "k", []byte("v")); err != nil {
			t.Fatalf("Create with a replica: %v", err)
		}
	})
}

func TestSentinel(t *testing.T) {
	primary := redistest.Start(t)
	sentinel := redistest.StartSentinel(t, primary, "mcc-primary")
	s, err := opener(t, ClientConfig{Addrs: []string{sentinel}, MasterName: "mcc-primary"}, Options{WaitReplicas: 0})()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	if _, err := store.Create(ctx, s, "demo", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(ctx, "demo", "k"); err != nil || string(rec.Value) != "v" {
		t.Errorf("Get = %v, %v", rec, err)
	}
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnavailable(t *testing.T) {
	addr := deadAddr(t)
	ctx := t.Context()

	t.Run("Dial", func(t *testing.T) {
		for _, cfg := range []ClientConfig{
			{Addrs: []string{addr}},
			{Addrs: []string{addr}, Cluster: true},
			{Addrs: []string{addr}, MasterName: "mcc"},
		} {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := Dial(dctx, cfg)
			cancel()
			if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), addr) {
				t.Errorf("Dial(%+v) = %v, want ErrUnavailable naming %s", cfg, err, addr)
			}
		}
	})

	t.Run("operations", func(t *testing.T) {
		c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		defer c.Close()
		s, err := New(c, Options{Service: "test"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		calls := []struct {
			name string
			call func() error
		}{
			{"Get", func() error { _, err := s.Get(ctx, "demo", "k"); return err }},
			{"List", func() error { _, _, err := s.List(ctx, "demo", "", "", 10); return err }},
			{"Txn", func() error { _, err := store.Create(ctx, s, "demo", "k", nil); return err }},
			{"Append", func() error {
				return s.Txn(ctx, "demo", func(tx store.Tx) error { tx.Append(nil); return nil })
			}},
			{"Events", func() error { _, err := s.Events(ctx, "demo", 0, 10); return err }},
			{"WaitEvents", func() error { return s.WaitEvents(ctx, "demo", 0) }},
			{"Ping", func() error { return s.Ping(ctx) }},
		}
		for _, c := range calls {
			if err := c.call(); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s: %v, want ErrUnavailable", c.name, err)
			}
		}
	})
}

func TestNewRejects(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: deadAddr(t)})
	defer c.Close()
	for _, opts := range []Options{
		{},
		{Service: "a/b"},
		{Service: "{x}"},
		{Service: "ok", Prefix: "a{b"},
		{Service: "ok", WaitReplicas: -1},
	} {
		if _, err := New(c, opts); err == nil {
			t.Errorf("New(%+v) succeeded", opts)
		}
	}
	if _, err := New(nil, Options{Service: "ok"}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// TestKeyLayout pins the key names and checks that a partition's keys all
// share one hash slot.
func TestKeyLayout(t *testing.T) {
	addr := redistest.Start(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	prefix := redistest.Prefix(t)
	s, err := New(c, Options{Prefix: prefix, Service: "directory"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	err = s.Txn(ctx, "demo", func(tx store.Tx) error {
		tx.Append([]byte("e"))
		return tx.Create("patients/1", []byte("x"))
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	base := prefix + ":{directory/demo}:"
	want := map[string]bool{base + "k:patients/1": true, base + "idx": true, base + "log": true, base + "seq": true, prefix + ":partitions:{directory}": true}
	markers := 0
	for _, k := range keys {
		switch {
		case want[k]:
			delete(want, k)
		case strings.HasPrefix(k, base+"tx:"):
			markers++
			if ttl := c.PTTL(ctx, k).Val(); ttl <= 0 || ttl > markerTTL {
				t.Errorf("marker %s has TTL %v", k, ttl)
			}
		default:
			t.Errorf("unexpected key %q", k)
		}
	}
	if len(want) > 0 || markers != 1 {
		t.Errorf("missing keys %v, %d markers; have %q", want, markers, keys)
	}
	fields, err := c.HGetAll(ctx, base+"k:patients/1").Result()
	if err != nil || fields["v"] != "1" || fields["d"] != "x" {
		t.Errorf("record hash = %v, %v", fields, err)
	}
}

// newStore returns a store on a private redis-server, and its client.
func newStore(t *testing.T) (*goredis.Client, *Store) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: redistest.Start(t)})
	t.Cleanup(func() { c.Close() })
	s, err := New(c, Options{Prefix: redistest.Prefix(t), Service: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// TestCommitIdempotent re-sends a commit that already ran, as go-redis does
// when a connection drops before the reply: the second run must change
// nothing.
func TestCommitIdempotent(t *testing.T) {
	c, s := newStore(t)
	ctx := t.Context()
	k := s.keysOf("demo")
	rkeys := []string{k.seq(), k.index(), k.log(), k.marker("fixed"), k.record("a")}
	args := []any{markerTTL.Milliseconds(), 1, 1, "a", "0", "p", "1", "value", "event"}
	for i, want := range []int64{committed, recommitted} {
		res, err := commitScript.Run(ctx, c, rkeys, args...).Int64()
		if err != nil || res != want {
			t.Fatalf("run %d = %d, %v; want %d", i, res, err, want)
		}
	}
	evs, err := s.Events(ctx, "demo", 0, 10)
	if err != nil || len(evs) != 1 {
		t.Errorf("events = %v, %v; want exactly one", evs, err)
	}
}

// TestBrokenLogRefused checks that a commit whose event log and counter
// disagree writes nothing, instead of writing the records and failing on
// the append.
func TestBrokenLogRefused(t *testing.T) {
	c, s := newStore(t)
	ctx := t.Context()
	if err := c.Set(ctx, s.keysOf("demo").seq(), "5", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err := s.Txn(ctx, "demo", func(tx store.Tx) error {
		tx.Append([]byte("e"))
		return tx.Create("k", nil)
	})
	if err == nil {
		t.Fatal("commit on a broken log succeeded")
	}
	if _, err := s.Get(ctx, "demo", "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record written by a refused commit: %v", err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"a/", "a0", true},
		{"a\xff", "b", true},
		{"\xff\xff", "", false},
		{"日", "\xe6\x97\xa6", true},
	} {
		got, ok := prefixEnd(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func BenchmarkCreate(b *testing.B) {
	cfg := ClientConfig{Addrs: []string{redistest.Start(b)}}
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			storetest.BenchmarkCreate(b, opener(b, cfg, Options{}), writers)
		})
	}
}

func BenchmarkCreateCluster(b *testing.B) {
	cfg := ClientConfig{Addrs: redistest.StartCluster(b), Cluster: true}
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			storetest.BenchmarkCreate(b, opener(b, cfg, Options{}), writers)
		})
	}
}
