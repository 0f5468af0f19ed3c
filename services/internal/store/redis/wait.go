package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/countymcc/mcc/services/internal/store"
)

// feed is the shared watch on one partition's log. One poller goroutine per
// partition with waiters runs a blocking XREAD and wakes all of them, so a
// thousand watchers hold one pooled connection, not a thousand. It sees
// appends by every process, because it reads Redis, not local state.
type feed struct {
	// waiters is guarded by Store.mu.
	waiters int

	mu sync.Mutex
	// last is the highest Seq known to exist.
	last uint64
	// failures counts failed polls; err is the latest failure.
	failures int
	err      error
	// wake is closed, and replaced, whenever last or failures change.
	wake chan struct{}
}

// WaitEvents blocks until p has an event with Seq > after, ctx is done or
// the store is closed. It returns promptly on ctx: the blocking read runs
// in the shared poller, not in the caller.
func (s *Store) WaitEvents(ctx context.Context, p store.Partition, after uint64) error {
	if err := s.check(ctx, p); err != nil {
		return err
	}
	last, err := s.lastSeq(ctx, p)
	if err != nil {
		return err
	}
	if last > after {
		return nil
	}
	f, err := s.join(p, last)
	if err != nil {
		return err
	}
	defer s.leave(f)
	f.mu.Lock()
	failuresAtJoin := f.failures
	f.mu.Unlock()
	for {
		f.mu.Lock()
		last, failures, ferr, wake := f.last, f.failures, f.err, f.wake
		f.mu.Unlock()
		switch {
		case last > after:
			return nil
		case failures > failuresAtJoin:
			return ferr
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("redis: wait events: %w", store.ErrClosed)
		}
	}
}

// join registers a waiter on p's feed, starting its poller if needed. seen
// is a Seq the caller knows to exist.
func (s *Store) join(p store.Partition, seen uint64) (*feed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Close sets closed under mu before it waits for the pollers, so no
	// poller starts after that wait began.
	if s.closed.Load() {
		return nil, fmt.Errorf("redis: wait events: %w", store.ErrClosed)
	}
	f, ok := s.feeds[p]
	if !ok {
		f = &feed{last: seen, wake: make(chan struct{})}
		s.feeds[p] = f
		s.pollers.Add(1)
		go s.poll(p, f)
	}
	f.waiters++
	f.advance(seen)
	return f, nil
}

// leave unregisters a waiter; the poller stops after its current read once
// the last waiter left.
func (s *Store) leave(f *feed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.waiters--
}

// poll follows p's log while anyone waits on it.
func (s *Store) poll(p store.Partition, f *feed) {
	defer s.pollers.Done()
	log := s.keysOf(p).log()
	failures := 0
	for {
		s.mu.Lock()
		if f.waiters == 0 || s.closed.Load() {
			delete(s.feeds, p)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()

		f.mu.Lock()
		from := f.last
		f.mu.Unlock()
		seq, err := s.readAfter(log, from)
		switch {
		case s.ctx.Err() != nil:
			// Closing; the loop head stops the poller.
		case err != nil:
			f.fail(wrap("wait events", err))
			failures++
			_ = sleep(s.ctx, backoff(failures, 100*time.Millisecond, pollSlice))
		default:
			failures = 0
			f.advance(seq)
		}
	}
}

// readAfter blocks for at most pollSlice until log has an entry after Seq
// from, and returns the highest Seq it saw (from if none).
func (s *Store) readAfter(log string, from uint64) (uint64, error) {
	streams, err := s.client.XRead(s.ctx, &goredis.XReadArgs{
		Streams: []string{log, "0-" + strconv.FormatUint(from, 10)},
		Count:   1,
		Block:   pollSlice,
	}).Result()
	if errors.Is(err, goredis.Nil) {
		return from, nil
	}
	if err != nil {
		return from, err
	}
	last := from
	for _, st := range streams {
		for _, m := range st.Messages {
			seq, err := parseID(m.ID)
			if err != nil {
				return from, err
			}
			last = max(last, seq)
		}
	}
	return last, nil
}

// advance records that Seq seq exists, waking waiters if that is news.
func (f *feed) advance(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq > f.last {
		f.last = seq
		close(f.wake)
		f.wake = make(chan struct{})
	}
}

// fail records a failed poll and wakes waiters, which return err.
func (f *feed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures++
	f.err = err
	close(f.wake)
	f.wake = make(chan struct{})
}
