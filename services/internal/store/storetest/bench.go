package storetest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/store"
)

// benchValue is the size of a typical MCC record (an order or a result
// summary serialized as protobuf).
var benchValue = bytes.Repeat([]byte("x"), 256)

// BenchmarkCreate measures Create throughput with writers concurrent
// goroutines and reports it as writes/s. Keys grow with time, like the
// UUIDv7 IDs services give their resources, so concurrent creates land near
// each other in a B-tree. It opens the store with open and closes it at
// the end; keys carry the run's start time, so repeated runs on one
// namespace never collide.
func BenchmarkCreate(b *testing.B, open Opener, writers int) {
	benchmarkCreate(b, open, writers, func(run, i int64) string {
		return fmt.Sprintf("bench/%d/%012d", run, i)
	})
}

// BenchmarkCreateRandom is BenchmarkCreate with uniformly random keys, such
// as index entries keyed by a hash: the worst case for a B-tree store,
// where nearly every create dirties a page of its own.
func BenchmarkCreateRandom(b *testing.B, open Opener, writers int) {
	benchmarkCreate(b, open, writers, func(run, _ int64) string {
		return fmt.Sprintf("bench/%d/%016x", run, rand.Uint64())
	})
}

// benchmarkCreate runs b.N creates spread over writers goroutines, with the
// i-th key from key.
func benchmarkCreate(b *testing.B, open Opener, writers int, key func(run, i int64) string) {
	s, err := open()
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	const p = store.Partition("bench")
	run := time.Now().UnixNano()

	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	b.ReportAllocs()
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := store.Create(ctx, s, p, key(run, i), benchValue); err != nil {
					b.Errorf("create: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}
