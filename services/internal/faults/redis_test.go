//go:build faults

package faults

import (
	"sync"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/mcctest"
	"github.com/countymcc/mcc/services/internal/store/redistest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errorLog counts write errors by gRPC code and remembers when the last
// one happened.
type errorLog struct {
	mu     sync.Mutex
	codes  map[codes.Code]int
	first  time.Time
	last   time.Time
	sample map[codes.Code]string
}

func newErrorLog() *errorLog {
	return &errorLog{codes: map[codes.Code]int{}, sample: map[codes.Code]string{}}
}

func (e *errorLog) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	code := status.Code(err)
	e.codes[code]++
	if _, ok := e.sample[code]; !ok {
		e.sample[code] = err.Error()
	}
	now := time.Now()
	if e.first.IsZero() {
		e.first = now
	}
	e.last = now
}

func (e *errorLog) snapshot() (map[codes.Code]int, time.Time, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[codes.Code]int{}
	for k, v := range e.codes {
		out[k] = v
	}
	return out, e.first, e.last
}

// waitAcked waits until the ledger has more than n acknowledged writes, and
// returns when that happened.
func waitAcked(t *testing.T, l *ledger, n int, within time.Duration) time.Time {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, acked := l.counts(); acked > n {
			return time.Now()
		}
	}
	t.Fatalf("no write acknowledged within %s", within)
	return time.Time{}
}

// TestRedisRestartUnderLoad kills redis-server (appendonly, appendfsync
// always) with SIGKILL while mcc writes to it, and starts it again on the
// same files after two seconds. While it is down the clients get
// Unavailable; afterwards their writes succeed again on the same
// connections without anyone restarting mcc, and every write acknowledged
// before, during or after is stored.
func TestRedisRestartUnderLoad(t *testing.T) {
	r := redistest.StartServer(t, "--appendonly", "yes", "--appendfsync", "always")
	bin := mcctest.Build(t)
	dir := t.TempDir()
	m := startMCC(t, bin, dir, "-store=redis", "-redis-addr="+r.Addr)
	ctx := adminContext(t, dir)
	c := mcctest.DialDirectory(t, m.GRPC)
	l := newLedger()
	errs := newErrorLog()
	stop := make(chan struct{})
	wg := storm(ctx, c, l, "redis", 16, stop, errs.add)

	waitAcked(t, l, 500, 30*time.Second)
	_, before := l.counts()
	killed := time.Now()
	r.Kill()
	time.Sleep(2 * time.Second)
	_, duringDown := l.counts()
	r.Restart(t)
	restarted := time.Now()
	_, atRestart := l.counts()
	back := waitAcked(t, l, atRestart, 30*time.Second)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	got, _, lastErr := errs.snapshot()
	if got[codes.Unavailable] == 0 {
		t.Errorf("no Unavailable while Redis was down; errors: %v", got)
	}
	for code, n := range got {
		if code != codes.Unavailable {
			t.Errorf("%d writes failed with %v, want only Unavailable: %s", n, code, errs.sample[code])
		}
	}
	if duringDown > before+16 {
		// Writes in flight at the kill may have been acknowledged; no more.
		t.Errorf("%d writes acknowledged while Redis was down", duringDown-before)
	}
	lost := checkLedger(t, ctx, c, l)
	attempted, acked := l.counts()
	t.Logf("FIGURES redis-restart: Redis down %s (SIGKILL to restart); writes failing for %s (kill to first success after the restart: %s after it); last error %s after the restart; errors by code %v; writes attempted %d, acknowledged %d, lost %d",
		restarted.Sub(killed).Round(time.Millisecond), back.Sub(killed).Round(time.Millisecond), back.Sub(restarted).Round(time.Millisecond),
		lastErr.Sub(restarted).Round(time.Millisecond), got, attempted, acked, lost)
}
