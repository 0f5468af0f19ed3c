// Package bolt is the embedded Store: one bbolt file per service, used when
// MCC runs as a single process on one machine.
//
// The file holds a "meta" bucket with the format version and a "partitions"
// bucket with one bucket per partition. Each partition bucket has a
// "records" sub-bucket (key -> 8-byte big-endian version + value) and an
// "events" sub-bucket (8-byte big-endian Seq -> data) whose bbolt sequence
// counter assigns Seq. That counter lives in the same transaction as the
// events, so a rolled-back transaction takes its numbers back with it and
// the log stays gap-free across restarts.
//
// Every commit is fsynced before Txn returns. Throughput comes from group
// commit: one committer goroutine takes every Txn that is waiting, runs them
// in one bbolt transaction and syncs once, then takes the ones that arrived
// meanwhile. There is no timer: a lone writer commits at once, and under load
// each group is as large as the queue that formed during the previous fsync.
// (bbolt's DB.Batch waits for a timer or a full group instead, which made 2
// to 32 concurrent writers slower than one; see docs/BENCHMARKS.md.)
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/countymcc/mcc/services/internal/store"
)

// Defaults for Options.
const (
	// DefaultMaxGroup bounds the Txn calls committed together. Larger
	// groups amortize the fsync further but make the first caller wait for
	// more work; 256 keeps a group's commit around a few milliseconds.
	DefaultMaxGroup    = 256
	DefaultLockTimeout = time.Second
)

// Options tunes a Store. The zero value selects the defaults.
type Options struct {
	// MaxGroup is the most Txn calls committed in one bbolt transaction
	// and one fsync.
	MaxGroup int
	// LockTimeout bounds the wait for the file lock. bbolt locks the file
	// for one process; a second process fails after this long instead of
	// hanging.
	LockTimeout time.Duration
}

// Bucket names. They are part of the file format.
var (
	bucketMeta       = []byte("meta")
	bucketPartitions = []byte("partitions")
	bucketRecords    = []byte("records")
	bucketEvents     = []byte("events")
	// keyTrimmed, in a partition bucket, holds the Seq through which events
	// were trimmed.
	keyTrimmed = []byte("trimmed")
	keyFormat  = []byte("format")
)

// formatVersion is the layout described in the package comment.
const formatVersion = "1"

// eventsFillPercent packs event pages densely: event keys only ever grow, so
// bbolt's default half-full split would waste half of every page.
const eventsFillPercent = 0.95

// Store is a store.Store in one bbolt file.
type Store struct {
	db   *bbolt.DB
	path string

	closed atomic.Bool
	// sendMu orders queueing against Close: Txn queues under the read
	// lock, Close marks the store closed under the write lock, so no call
	// is queued after the committer's last drain.
	sendMu sync.RWMutex
	// queue carries Txn calls to the committer goroutine.
	queue    chan *call
	maxGroup int
	// done is closed by Close, to release WaitEvents and the committer;
	// committed is closed by the committer when it has stopped.
	done      chan struct{}
	committed chan struct{}

	// wakeMu guards wake.
	wakeMu sync.Mutex
	// wake holds, per partition with a waiter, a channel that the next
	// commit appending to that partition closes. Only this process opens
	// the file, so in-process notification sees every append.
	wake map[store.Partition]chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open opens or creates the store file at path, with mode 0600.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxGroup < 0 || opts.LockTimeout < 0 {
		return nil, fmt.Errorf("bolt: negative option in %+v", opts)
	}
	if opts.MaxGroup == 0 {
		opts.MaxGroup = DefaultMaxGroup
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: opts.LockTimeout,
		// The hashmap freelist stays fast as the file fragments. Not
		// syncing it saves a page write per commit and costs no
		// durability: bbolt rebuilds the freelist by scanning the file on
		// open, as etcd configures it.
		FreelistType:   bbolt.FreelistMapType,
		NoFreelistSync: true,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("bolt: %s is locked by another process (waited %v): %w: %w",
			path, opts.LockTimeout, store.ErrUnavailable, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		path:      path,
		queue:     make(chan *call, opts.MaxGroup),
		maxGroup:  opts.MaxGroup,
		done:      make(chan struct{}),
		committed: make(chan struct{}),
		wake:      make(map[store.Partition]chan struct{}),
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if created {
		// A new file's directory entry is durable only once its directory
		// is synced; without this a crash could lose a whole new store
		// whose commits were already acknowledged.
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("bolt: open %s: %w", path, err)
		}
	}
	releaseMap(db)
	go s.commitLoop()
	return s, nil
}

// init creates the top-level buckets and checks the format version.
func (s *Store) init() error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keyFormat); {
		case v == nil:
			if err := meta.Put(keyFormat, []byte(formatVersion)); err != nil {
				return err
			}
		case string(v) != formatVersion:
			return fmt.Errorf("file format %q, want %q", v, formatVersion)
		}
		_, err = tx.CreateBucketIfNotExists(bucketPartitions)
		return err
	})
	if err != nil {
		return fmt.Errorf("bolt: init %s: %w", s.path, err)
	}
	return nil
}

// syncDir fsyncs a directory, making the names in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get returns the record at key, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, p store.Partition, key string) (store.Record, error) {
	if err := s.check(ctx, p); err != nil {
		return store.Record{}, err
	}
	if err := store.ValidateKey(key); err != nil {
		return store.Record{}, err
	}
	var (
		rec   store.Record
		found bool
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		rec, found, err = readRecord(tx, p, key)
		return err
	})
	if err != nil {
		return store.Record{}, s.wrap("get", err)
	}
	if !found {
		return store.Record{}, fmt.Errorf("bolt: get %q: %w", key, store.ErrNotFound)
	}
	return rec, nil
}

// List returns up to limit records whose keys start with prefix and sort
// after `after`, in byte order.
func (s *Store) List(ctx context.Context, p store.Partition, prefix, after string, limit int) ([]store.Record, bool, error) {
	if err := s.check(ctx, p); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, fmt.Errorf("bolt: list limit %d is not positive", limit)
	}
	var (
		recs []store.Record
		more bool
	)
	err := s.db.View(func(tx *bbolt.Tx) error {
		rb := subBucket(tx, p, bucketRecords)
		if rb == nil {
			return nil
		}
		pfx := []byte(prefix)
		start := pfx
		if after >= prefix {
			start = []byte(after)
		}
		c := rb.Cursor()
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
			if after != "" && string(k) == after {
				continue
			}
			if len(recs) == limit {
				more = true
				break
			}
			rec, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return nil, false, s.wrap("list", err)
	}
	return recs, more, nil
}

// Txn runs fn inside a group commit and commits its writes and events
// atomically, fsynced before Txn returns.
//
// fn runs inside the shared bbolt transaction, so it sees the latest
// committed state and no other Txn can interleave: a bolt Txn never
// conflicts and never retries. fn works on a store.WriteSet, and only a
// successful fn has its writes copied into the bbolt transaction. A failing
// fn therefore costs the rest of its group nothing. A panic in fn is caught
// and re-raised in the caller's goroutine.
//
// Once queued, a Txn runs even if ctx ends, because its outcome could not be
// reported otherwise. fn must not call the Store: it runs on the committer
// goroutine, which would wait for itself.
func (s *Store) Txn(ctx context.Context, p store.Partition, fn func(tx store.Tx) error) error {
	if err := s.check(ctx, p); err != nil {
		return err
	}
	c := &call{p: p, fn: fn, done: make(chan error, 1)}
	s.sendMu.RLock()
	if s.closed.Load() {
		s.sendMu.RUnlock()
		return fmt.Errorf("bolt: txn: %w", store.ErrClosed)
	}
	s.queue <- c
	s.sendMu.RUnlock()
	err := <-c.done
	r := &c.r
	if r.panicked {
		panic(r.panicValue)
	}
	if r.fnErr != nil {
		return r.fnErr
	}
	if err != nil {
		return s.wrap("txn", err)
	}
	if r.events > 0 {
		s.notify(p)
	}
	return nil
}

// call is one Txn on its way through the committer.
type call struct {
	p    store.Partition
	fn   func(store.Tx) error
	r    txnResult
	done chan error
}

// commitLoop is the committer: it takes the first waiting call, adds every
// other call already queued (up to maxGroup), commits them in one bbolt
// transaction, answers them, and starts again.
func (s *Store) commitLoop() {
	defer close(s.committed)
	group := make([]*call, 0, s.maxGroup)
	for {
		select {
		case c := <-s.queue:
			group = append(group[:0], c)
		case <-s.done:
			// Close holds sendMu while it closes done, so nothing is
			// queued after this point; answer what is left.
			for {
				select {
				case c := <-s.queue:
					c.done <- store.ErrClosed
				default:
					return
				}
			}
		}
		// Let the writers just answered queue their next call before the
		// group closes; without this, the group after a large one is small.
		runtime.Gosched()
	fill:
		for len(group) < s.maxGroup {
			select {
			case c := <-s.queue:
				group = append(group, c)
			default:
				break fill
			}
		}
		s.commit(group)
	}
}

// commit runs a group in one transaction. If bbolt refuses the transaction
// (for example one call wrote a key bbolt cannot store), the calls are
// committed one by one, so only the offending one fails.
func (s *Store) commit(group []*call) {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, c := range group {
			if err := c.r.run(tx, c.p, c.fn); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(group) > 1 {
		for _, c := range group {
			s.commit([]*call{c})
		}
		return
	}
	for _, c := range group {
		c.done <- err
	}
}

// txnResult carries one call's outcome from the committer to the caller.
// The done channel orders these writes before the caller reads them.
type txnResult struct {
	fnErr      error
	panicked   bool
	panicValue any
	events     int
}

// run is one caller's share of a group. It runs again if its group failed
// inside bbolt, so it starts from scratch.
func (r *txnResult) run(tx *bbolt.Tx, p store.Partition, fn func(store.Tx) error) error {
	*r = txnResult{}
	ws := store.NewWriteSet(func(key string) (store.Record, bool, error) {
		return readRecord(tx, p, key)
	})
	err := r.call(fn, ws)
	changes, events, sealErr := ws.Commit()
	switch {
	case r.panicked:
		return nil
	case err != nil:
		r.fnErr = err
		return nil
	case sealErr != nil:
		r.fnErr = sealErr
		return nil
	}
	r.events = len(events)
	return apply(tx, p, changes, events)
}

// call runs fn, turning a panic into r.panicked.
func (r *txnResult) call(fn func(store.Tx) error, tx store.Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			r.panicked, r.panicValue = true, v
		}
	}()
	return fn(tx)
}

// apply copies a successful WriteSet into the bbolt transaction.
func apply(tx *bbolt.Tx, p store.Partition, changes []store.Change, events [][]byte) error {
	writes := false
	for _, c := range changes {
		writes = writes || c.Written
	}
	if !writes && len(events) == 0 {
		return nil
	}
	pb, err := tx.Bucket(bucketPartitions).CreateBucketIfNotExists([]byte(p))
	if err != nil {
		return fmt.Errorf("partition %s: %w", p, err)
	}
	if writes {
		rb, err := pb.CreateBucketIfNotExists(bucketRecords)
		if err != nil {
			return fmt.Errorf("partition %s records: %w", p, err)
		}
		for _, c := range changes {
			switch {
			case !c.Written:
			case c.Deleted:
				err = rb.Delete([]byte(c.Key))
			default:
				err = rb.Put([]byte(c.Key), encodeRecord(c.Version, c.Value))
			}
			if err != nil {
				return fmt.Errorf("partition %s key %q: %w", p, c.Key, err)
			}
		}
	}
	if len(events) > 0 {
		eb, err := pb.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return fmt.Errorf("partition %s events: %w", p, err)
		}
		eb.FillPercent = eventsFillPercent
		for _, data := range events {
			seq, err := eb.NextSequence()
			if err != nil {
				return fmt.Errorf("partition %s events: %w", p, err)
			}
			if err := eb.Put(seqKey(seq), data); err != nil {
				return fmt.Errorf("partition %s event %d: %w", p, seq, err)
			}
		}
	}
	return nil
}

// Events returns up to limit events with Seq > after, in order.
func (s *Store) Events(ctx context.Context, p store.Partition, after uint64, limit int) ([]store.Event, error) {
	if err := s.check(ctx, p); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("bolt: events limit %d is not positive", limit)
	}
	var evs []store.Event
	err := s.db.View(func(tx *bbolt.Tx) error {
		if trimmed := trimmedThrough(tx, p); after != 0 && after < trimmed {
			return fmt.Errorf("partition %s: events through %d were trimmed, asked after %d: %w", p, trimmed, after, store.ErrCompacted)
		}
		eb := subBucket(tx, p, bucketEvents)
		if eb == nil || after == ^uint64(0) {
			return nil
		}
		c := eb.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(evs) < limit; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("partition %s: bad event key %x", p, k)
			}
			evs = append(evs, store.Event{Seq: binary.BigEndian.Uint64(k), Data: bytes.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("events", err)
	}
	return evs, nil
}

// trimmedThrough is the Seq through which p's events were trimmed, 0 if
// none were.
func trimmedThrough(tx *bbolt.Tx, p store.Partition) uint64 {
	pb := tx.Bucket(bucketPartitions).Bucket([]byte(p))
	if pb == nil {
		return 0
	}
	if v := pb.Get(keyTrimmed); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// TrimEvents deletes p's events through `through` and records the mark. It
// is one bbolt write transaction beside the committer's (bbolt serializes
// them).
func (s *Store) TrimEvents(ctx context.Context, p store.Partition, through uint64) error {
	if err := s.check(ctx, p); err != nil {
		return err
	}
	return s.wrap("trim", s.db.Update(func(tx *bbolt.Tx) error {
		pb := tx.Bucket(bucketPartitions).Bucket([]byte(p))
		if pb == nil {
			return nil
		}
		eb := pb.Bucket(bucketEvents)
		if eb == nil {
			return nil
		}
		last := eb.Sequence()
		if last == 0 {
			return nil
		}
		through = min(through, last-1)
		if through <= trimmedThrough(tx, p) {
			return nil
		}
		var doomed [][]byte
		c := eb.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= through; k, _ = c.Next() {
			doomed = append(doomed, bytes.Clone(k))
		}
		for _, k := range doomed {
			if err := eb.Delete(k); err != nil {
				return err
			}
		}
		return pb.Put(keyTrimmed, seqKey(through))
	}))
}

// WaitEvents blocks until p has an event with Seq > after, ctx is done or
// the store is closed.
func (s *Store) WaitEvents(ctx context.Context, p store.Partition, after uint64) error {
	if err := s.check(ctx, p); err != nil {
		return err
	}
	for {
		// Taking the channel before reading the sequence means a commit
		// that lands in between still closes the channel we wait on.
		wake := s.wakeChan(p)
		var last uint64
		err := s.db.View(func(tx *bbolt.Tx) error {
			if eb := subBucket(tx, p, bucketEvents); eb != nil {
				last = eb.Sequence()
			}
			return nil
		})
		if err != nil {
			return s.wrap("wait events", err)
		}
		if last > after {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("bolt: wait events: %w", store.ErrClosed)
		}
	}
}

// wakeChan returns the channel the next append to p closes.
func (s *Store) wakeChan(p store.Partition) chan struct{} {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	ch, ok := s.wake[p]
	if !ok {
		ch = make(chan struct{})
		s.wake[p] = ch
	}
	return ch
}

// notify wakes the waiters of p after a commit that appended events.
func (s *Store) notify(p store.Partition) {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if ch, ok := s.wake[p]; ok {
		close(ch)
		delete(s.wake, p)
	}
}

// Backup writes a copy of the whole store file to w while the store keeps
// serving. The copy is one bbolt read transaction, so it holds exactly the
// commits made before it began. begin is called first with the copy's size
// (an archive header needs it).
func (s *Store) Backup(w io.Writer, begin func(size int64) error) error {
	if s.closed.Load() {
		return fmt.Errorf("bolt: backup: %w", store.ErrClosed)
	}
	return s.wrap("backup", s.db.View(func(tx *bbolt.Tx) error {
		if err := begin(tx.Size()); err != nil {
			return err
		}
		_, err := tx.WriteTo(w)
		return err
	}))
}

// Partitions lists the partition buckets.
func (s *Store) Partitions(ctx context.Context) ([]store.Partition, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("bolt: partitions: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []store.Partition
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketPartitions).ForEachBucket(func(k []byte) error {
			out = append(out, store.Partition(k))
			return nil
		})
	})
	return out, s.wrap("partitions", err)
}

// Ping reports whether the store is open and its file readable.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("bolt: ping: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.wrap("ping", s.db.View(func(*bbolt.Tx) error { return nil }))
}

// Close waits for the group being committed and closes the file. Txn calls
// still queued behind it fail with ErrClosed.
func (s *Store) Close() error {
	s.sendMu.Lock()
	if !s.closed.CompareAndSwap(false, true) {
		s.sendMu.Unlock()
		return fmt.Errorf("bolt: close: %w", store.ErrClosed)
	}
	close(s.done)
	s.sendMu.Unlock()
	<-s.committed
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", s.path, err)
	}
	return nil
}

// check rejects calls on a closed store, with a done ctx or a bad partition.
func (s *Store) check(ctx context.Context, p store.Partition) error {
	if s.closed.Load() {
		return fmt.Errorf("bolt: %w", store.ErrClosed)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	return ctx.Err()
}

// wrap adds context to a bbolt error, and turns bbolt's "not open" (a call
// racing with Close) into store.ErrClosed.
func (s *Store) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("bolt: %s: %w", op, store.ErrClosed)
	}
	return fmt.Errorf("bolt: %s %s: %w", op, s.path, err)
}

// subBucket returns partition p's sub-bucket name, or nil if it does not
// exist yet.
func subBucket(tx *bbolt.Tx, p store.Partition, name []byte) *bbolt.Bucket {
	pb := tx.Bucket(bucketPartitions).Bucket([]byte(p))
	if pb == nil {
		return nil
	}
	return pb.Bucket(name)
}

// readRecord reads key from partition p, copying it out of the mmap.
func readRecord(tx *bbolt.Tx, p store.Partition, key string) (store.Record, bool, error) {
	rb := subBucket(tx, p, bucketRecords)
	if rb == nil {
		return store.Record{}, false, nil
	}
	v := rb.Get([]byte(key))
	if v == nil {
		return store.Record{}, false, nil
	}
	rec, err := decodeRecord([]byte(key), v)
	if err != nil {
		return store.Record{}, false, err
	}
	return rec, true, nil
}

// encodeRecord lays out a record value: version, then data.
func encodeRecord(version uint64, data []byte) []byte {
	b := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(b, version)
	copy(b[8:], data)
	return b
}

// decodeRecord reads a record value, copying data out of the mmap.
func decodeRecord(k, v []byte) (store.Record, error) {
	if len(v) < 8 {
		return store.Record{}, fmt.Errorf("record %q: %d-byte value is shorter than its version", k, len(v))
	}
	data := make([]byte, len(v)-8)
	copy(data, v[8:])
	return store.Record{Key: string(k), Value: data, Version: binary.BigEndian.Uint64(v)}, nil
}

// seqKey is the events bucket key of seq; big-endian sorts numerically.
func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
