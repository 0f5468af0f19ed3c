//go:build faults

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/countymcc/mcc/services/internal/mcctest"
)

// storm writes from writers clients until stop closes: each client creates
// facilities and renames each a few times, recording every write it
// attempts and every one acknowledged. A failed write ends nothing: the
// client moves on to a new facility (the old one's version is unknown).
func storm(ctx context.Context, c directoryv1.DirectoryServiceClient, l *ledger, prefix string, writers int, stop <-chan struct{}, onErr func(error)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("%s-%02d-%05d", prefix, w, i)
				var version uint64
				for range 4 {
					select {
					case <-stop:
						return
					default:
					}
					l.attempt()
					callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
					v, err := writeFacility(callCtx, c, id, version)
					cancel()
					if err != nil {
						if onErr != nil {
							onErr(err)
						}
						// A refused write is retried on a new facility
						// after a pause, so a dead server is not counted
						// thousands of times.
						time.Sleep(20 * time.Millisecond)
						break
					}
					l.ack(id, v)
					version = v
				}
			}
		}()
	}
	return &wg
}

// TestSIGKILLDuringWriteStorm kills mcc (bolt) with SIGKILL at a random
// moment of a write storm, ten times, restarting it on the same data
// directory each time. After every restart each acknowledged write is
// there, and each facility's stored version is the one of its last event.
func TestSIGKILLDuringWriteStorm(t *testing.T) {
	bin := mcctest.Build(t)
	dir := t.TempDir()
	l := newLedger()
	var total time.Duration
	for round := range 10 {
		m := startMCC(t, bin, dir, "-store=bolt")
		ctx := adminContext(t, dir)
		c := mcctest.DialDirectory(t, m.GRPC)
		if round > 0 {
			if lost := checkLedger(t, ctx, c, l); lost > 0 {
				t.Fatalf("round %d: %d acknowledged writes lost", round, lost)
			}
		}
		stop := make(chan struct{})
		wg := storm(ctx, c, l, fmt.Sprintf("r%d", round), 16, stop, nil)
		// A random moment: between 0.2 s and 1.5 s into the storm.
		wait := 200*time.Millisecond + rand.N(1300*time.Millisecond)
		total += wait
		time.Sleep(wait)
		m.Kill()
		close(stop)
		wg.Wait()
		attempted, acked := l.counts()
		t.Logf("round %d: killed after %s; so far %d writes attempted, %d acknowledged", round+1, wait.Round(time.Millisecond), attempted, acked)
	}
	m := startMCC(t, bin, dir, "-store=bolt")
	lost := checkLedger(t, adminContext(t, dir), mcctest.DialDirectory(t, m.GRPC), l)
	attempted, acked := l.counts()
	if acked == 0 {
		t.Fatal("no write was acknowledged: the test proved nothing")
	}
	t.Logf("FIGURES kill9: 10 SIGKILLs over %s of storm; writes attempted %d, acknowledged %d, lost %d", total.Round(time.Millisecond), attempted, acked, lost)
}
