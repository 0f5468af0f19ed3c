package bench

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Recorder collects the latency and errors of each operation. It is safe
// for concurrent use; each operation has its own HDR histogram (1 µs to
// 60 s, three significant digits).
type Recorder struct {
	mu  sync.Mutex
	ops map[string]*opStats
}

type opStats struct {
	hist   *hdrhistogram.Histogram
	errors int64
	// firstErr is kept to say why an operation fails.
	firstErr string
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{ops: map[string]*opStats{}} }

// Record adds one call of op that took d and ended with err.
func (r *Recorder) Record(op string, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.ops[op]
	if !ok {
		s = &opStats{hist: hdrhistogram.New(1, 60_000_000, 3)}
		r.ops[op] = s
	}
	if err != nil {
		s.errors++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.hist.RecordValue(d.Microseconds())
}

// Summary is the result of one operation over a run.
type Summary struct {
	Op            string
	Count, Errors int64
	PerSecond     float64
	P50, P90, P99 time.Duration
	FirstError    string
}

// Summaries returns each operation's figures over elapsed, sorted by name.
func (r *Recorder) Summaries(elapsed time.Duration) []Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Summary
	for op, s := range r.ops {
		q := func(p float64) time.Duration { return time.Duration(s.hist.ValueAtQuantile(p)) * time.Microsecond }
		out = append(out, Summary{
			Op: op, Count: s.hist.TotalCount(), Errors: s.errors,
			PerSecond: float64(s.hist.TotalCount()) / elapsed.Seconds(),
			P50:       q(50), P90: q(90), P99: q(99), FirstError: s.firstErr,
		})
	}
	slices.SortFunc(out, func(a, b Summary) int {
		if a.Op < b.Op {
			return -1
		}
		if a.Op > b.Op {
			return 1
		}
		return 0
	})
	return out
}

// Total is the number of successful and failed calls of every operation.
func (r *Recorder) Total() (ok, failed int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.ops {
		ok += s.hist.TotalCount()
		failed += s.errors
	}
	return ok, failed
}

// merge adds o's figures to r.
func (r *Recorder) merge(o *Recorder) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	for op, s := range o.ops {
		d, ok := r.ops[op]
		if !ok {
			d = &opStats{hist: hdrhistogram.New(1, 60_000_000, 3)}
			r.ops[op] = d
		}
		d.hist.Merge(s.hist)
		d.errors += s.errors
		if d.firstErr == "" {
			d.firstErr = s.firstErr
		}
	}
}

func printSummaries(w io.Writer, sums []Summary) {
	fmt.Fprintf(w, "%-28s %9s %10s %9s %9s %9s %7s\n", "operation", "count", "per sec", "p50", "p90", "p99", "errors")
	for _, s := range sums {
		fmt.Fprintf(w, "%-28s %9d %10.1f %9s %9s %9s %7d\n", s.Op, s.Count, s.PerSecond, ms(s.P50), ms(s.P90), ms(s.P99), s.Errors)
	}
	for _, s := range sums {
		if s.FirstError != "" {
			fmt.Fprintf(w, "  first error of %s: %s\n", s.Op, s.FirstError)
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
