// Package deadline keeps the durable timers of MCC's workflows: a critical
// value that must be acknowledged within 10 minutes, a referral to triage
// within 24 hours, a TAT limit, an appointment code that expires.
//
// A timer is a store key in the community partition, written in the same
// transaction as the state change that starts the clock, so it exists
// exactly when the change does, and it survives restarts. A Scheduler scans
// every partition for timers that are due and fires each one in a
// transaction that also deletes it: the handler's writes and the timer's
// removal commit together, so a timer fires once even when several replicas
// scan the same store (the losers of the race find the timer gone).
package deadline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/store"
)

// Keys. A due key sorts by time, so a scan stops at the first timer that is
// not due; the by-name key finds a timer's due key to move or clear it.
const (
	duePrefix  = "deadline/due/"
	namePrefix = "deadline/name/"
)

func dueKey(at time.Time, kind, id string) string {
	return fmt.Sprintf("%s%020d/%s/%s", duePrefix, at.UnixNano(), kind, id)
}

func nameKey(kind, id string) string { return namePrefix + kind + "/" + id }

// Set starts or moves the timer of kind for id (for example "critical",
// "results/123") to fire at at, with payload for its handler. It runs inside
// the caller's transaction.
func Set(tx store.Tx, kind, id string, at time.Time, payload []byte) error {
	if strings.Contains(kind, "/") {
		return fmt.Errorf("deadline: kind %q contains a slash", kind)
	}
	if err := Clear(tx, kind, id); err != nil {
		return err
	}
	key := dueKey(at, kind, id)
	if err := tx.Put(key, payload); err != nil {
		return err
	}
	return tx.Put(nameKey(kind, id), []byte(key))
}

// Clear stops the timer of kind for id, if it runs.
func Clear(tx store.Tx, kind, id string) error {
	rec, err := tx.Get(nameKey(kind, id))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := tx.Delete(string(rec.Value), 0); err != nil {
		return err
	}
	return tx.Delete(nameKey(kind, id), 0)
}

// Due reports when the timer of kind for id fires, and whether it runs.
func Due(tx store.Tx, kind, id string) (time.Time, bool, error) {
	rec, err := tx.Get(nameKey(kind, id))
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	at, _, _, err := parseDueKey(string(rec.Value))
	return at, err == nil, err
}

func parseDueKey(key string) (at time.Time, kind, id string, err error) {
	rest, ok := strings.CutPrefix(key, duePrefix)
	parts := strings.SplitN(rest, "/", 3)
	if !ok || len(parts) != 3 {
		return time.Time{}, "", "", fmt.Errorf("deadline: malformed key %q", key)
	}
	nanos, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return time.Time{}, "", "", fmt.Errorf("deadline: malformed key %q", key)
	}
	return time.Unix(0, nanos).UTC(), parts[1], parts[2], nil
}

// Timer is a due timer, as a handler sees it.
type Timer struct {
	Partition store.Partition
	Kind, ID  string
	// At is when the timer was due; Now when it fired. A handler uses At,
	// not Now, to stamp what happened "on time", so a restart that delays
	// the scan does not shift the record.
	At, Now time.Time
	Payload []byte
}

// Handler reacts to a due timer inside the transaction that removes it. It
// may set new timers (the next escalation step). If it fails, the
// transaction is rolled back and the timer fires again at the next scan.
type Handler func(tx store.Tx, t Timer) error

// Scheduler fires the due timers of one store.
type Scheduler struct {
	store    store.Store
	clock    clock.Clock
	logger   *slog.Logger
	handlers map[string]Handler
}

// NewScheduler returns a Scheduler for s. Register handlers with Handle
// before running it.
func NewScheduler(s store.Store, clk clock.Clock, logger *slog.Logger) *Scheduler {
	return &Scheduler{store: s, clock: clk, logger: logger, handlers: map[string]Handler{}}
}

// Handle registers the handler of a kind of timer.
func (s *Scheduler) Handle(kind string, h Handler) { s.handlers[kind] = h }

// scanBatch is how many timers one scan of a partition reads at a time.
const scanBatch = 100

// Fire fires every timer that is due now, in every partition, and returns
// how many fired. A timer without a handler, or whose handler fails, is
// logged and left for the next scan.
func (s *Scheduler) Fire(ctx context.Context) (int, error) {
	parts, err := s.store.Partitions(ctx)
	if err != nil {
		return 0, err
	}
	now := s.clock.Now()
	fired := 0
	for _, p := range parts {
		n, err := s.firePartition(ctx, p, now)
		fired += n
		if err != nil {
			return fired, err
		}
	}
	return fired, nil
}

func (s *Scheduler) firePartition(ctx context.Context, p store.Partition, now time.Time) (int, error) {
	fired := 0
	for rec, err := range store.Scan(ctx, s.store, p, duePrefix, "", scanBatch) {
		if err != nil {
			return fired, err
		}
		at, kind, id, err := parseDueKey(rec.Key)
		if err != nil {
			s.logger.ErrorContext(ctx, "skipping a malformed timer", "partition", string(p), "key", rec.Key)
			continue
		}
		if at.After(now) {
			return fired, nil
		}
		ok, err := s.fire(ctx, p, rec.Key, Timer{Partition: p, Kind: kind, ID: id, At: at, Now: now})
		if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrClosed) || ctx.Err() != nil {
			return fired, err
		}
		if err != nil {
			s.logger.ErrorContext(ctx, "timer handler failed; it will fire again", "partition", string(p), "kind", kind, "error", err.Error())
			continue
		}
		if ok {
			fired++
		}
	}
	return fired, nil
}

// fire runs one timer's handler in the transaction that deletes it. It
// reports false when the timer was already gone (fired by another replica,
// cleared, or moved).
func (s *Scheduler) fire(ctx context.Context, p store.Partition, key string, t Timer) (bool, error) {
	h, ok := s.handlers[t.Kind]
	if !ok {
		return false, fmt.Errorf("no handler for timers of kind %q", t.Kind)
	}
	fired := false
	err := s.store.Txn(ctx, p, func(tx store.Tx) error {
		fired = false
		rec, err := tx.Get(key)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		t.Payload = rec.Value
		if err := tx.Delete(key, 0); err != nil {
			return err
		}
		if err := tx.Delete(nameKey(t.Kind, t.ID), 0); err != nil {
			return err
		}
		fired = true
		return h(tx, t)
	})
	return fired, err
}

// Run fires due timers every interval until ctx ends. Errors are logged,
// not returned: a store outage delays timers, it does not stop the process.
func (s *Scheduler) Run(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if _, err := s.Fire(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "firing timers", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
