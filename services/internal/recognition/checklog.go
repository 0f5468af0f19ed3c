package recognition

import (
	"context"
	"sync"
	"time"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/store"
)

// checkLog writes the record of every check: the stored check and its
// event. With no delay (-recognition.check-log-delay=0, the default) a
// check is committed before it is answered, at the cost of an fsync on the
// answer's path. With a delay, checks are queued and committed together at
// most that long after they were answered: a crash can lose the records of
// the last delay, and a check never waits for the disk.
type checkLog struct {
	delay time.Duration

	mu      sync.Mutex
	pending []loggedCheck
	kick    chan struct{}
}

// loggedCheck is one check waiting to be written.
type loggedCheck struct {
	c      auth.Caller
	p      store.Partition
	now    time.Time
	record *recognitionv1.Check
	typ    string
}

func newCheckLog(delay time.Duration) *checkLog {
	return &checkLog{delay: delay, kick: make(chan struct{}, 1)}
}

// recordCheck records a check now, or queues it.
func (s *Service) recordCheck(ctx context.Context, c auth.Caller, p store.Partition, now time.Time, record *recognitionv1.Check, typ string) error {
	lc := loggedCheck{c: c, p: p, now: now, record: record, typ: typ}
	if s.checks.delay <= 0 {
		return s.writeChecks(ctx, p, []loggedCheck{lc})
	}
	s.checks.mu.Lock()
	s.checks.pending = append(s.checks.pending, lc)
	s.checks.mu.Unlock()
	return nil
}

// writeChecks commits checks of one partition in one transaction.
func (s *Service) writeChecks(ctx context.Context, p store.Partition, checks []loggedCheck) error {
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		for _, lc := range checks {
			if err := tx.Put(checkPrefix+lc.record.GetName()[len("checks/"):], mustMarshal(lc.record)); err != nil {
				return err
			}
			change := events.Change{Type: lc.typ, Resource: lc.record.GetName(), Version: 1, Facilities: []string{lc.c.Facility}, Snapshot: lc.record}
			if err := events.Append(tx, lc.c, lc.now, change); err != nil {
				return err
			}
		}
		return nil
	})
}

// flushChecks writes the queued checks until ctx ends, and once more
// after.
func (s *Service) flushChecks(ctx context.Context) {
	if s.checks.delay <= 0 {
		return
	}
	tick := time.NewTicker(s.checks.delay)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s.flushOnce(final)
			cancel()
			return
		case <-tick.C:
			s.flushOnce(ctx)
		}
	}
}

// flushOnce writes what is queued; what cannot be written stays queued.
func (s *Service) flushOnce(ctx context.Context) {
	s.checks.mu.Lock()
	pending := s.checks.pending
	s.checks.pending = nil
	s.checks.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	by := map[store.Partition][]loggedCheck{}
	for _, lc := range pending {
		by[lc.p] = append(by[lc.p], lc)
	}
	for p, checks := range by {
		if err := s.writeChecks(ctx, p, checks); err != nil {
			s.logger.Error("recognition: could not write the records of checks; retrying", "community", string(p), "checks", len(checks), "error", err.Error())
			s.checks.mu.Lock()
			s.checks.pending = append(checks, s.checks.pending...)
			s.checks.mu.Unlock()
		}
	}
}
