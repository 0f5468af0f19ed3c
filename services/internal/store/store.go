// Package store is the persistence interface every MCC service writes through.
//
// A Store holds one service's data. Its keys are grouped in partitions, one per
// medical community: a Txn is atomic over any keys of one partition, and each
// partition has an append-only event log written in the same transaction as
// the state it describes (the outbox pattern). In Redis all keys of a
// partition share one hash tag, so the same code runs on Redis Cluster.
//
// The interface is deliberately small, so that one conformance suite
// (storetest.Run) covers it completely on every backend.
package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// Sentinel errors. Backends wrap them with %w; callers test them with
// errors.Is. The RPC layer maps them to gRPC codes in one table.
var (
	// ErrNotFound reports that a key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists reports that Create found the key already present.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict reports a compare-and-swap on a stale version, or a
	// transaction that kept losing races until its retries ran out.
	ErrConflict = errors.New("version conflict")
	// ErrClosed reports a call on a closed store.
	ErrClosed = errors.New("store closed")
	// ErrCompacted reports a read of events that retention has already
	// removed: the cursor is older than the log. The reader must
	// resynchronize from the current state and start over.
	ErrCompacted = errors.New("events compacted")
	// ErrUnavailable reports that the backend could not be reached, or could
	// not confirm durability (for example too few Redis replicas acknowledged
	// a write). The outcome of a write that fails this way is unknown, so
	// callers retry it with the same request_id.
	ErrUnavailable = errors.New("store unavailable")
)

// Partition names a group of keys that can change together in one Txn, and
// that share one event log. MCC uses the medical community ID.
type Partition string

// partitionPattern keeps partition names safe inside file names, bucket names
// and Redis hash tags (no braces).
var partitionPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate reports whether p is a well-formed partition name.
func (p Partition) Validate() error {
	if !partitionPattern.MatchString(string(p)) {
		return fmt.Errorf("store: invalid partition name %q", string(p))
	}
	return nil
}

// Record is a stored value with its version.
type Record struct {
	Key   string
	Value []byte
	// Version is 1 after the key is created and grows by one on every write.
	// It is the basis of etags and compare-and-swap.
	Version uint64
}

// Event is one entry of a partition's event log.
type Event struct {
	// Seq is the event's position in its partition's log: 1 for the first
	// event, then strictly increasing by one, with no gaps, forever. It
	// survives restarts and is what feed cursors are made of.
	Seq  uint64
	Data []byte
}

// Store is one service's persistent state. All methods are safe for
// concurrent use.
type Store interface {
	// Get returns the record at key, or ErrNotFound.
	Get(ctx context.Context, p Partition, key string) (Record, error)

	// List returns up to limit records of partition p whose keys start with
	// prefix and sort strictly after the key `after` (byte order). It reports
	// whether more matching records follow. An empty `after` starts at the
	// beginning of the prefix.
	List(ctx context.Context, p Partition, prefix, after string, limit int) (recs []Record, more bool, err error)

	// Txn runs fn and commits its writes and event appends atomically. If fn
	// returns an error, nothing is written and Txn returns that error
	// unchanged. fn may be run more than once (backends retry it when a
	// concurrent commit invalidated what it read), so it must have no side
	// effects other than through tx and its own return values.
	Txn(ctx context.Context, p Partition, fn func(tx Tx) error) error

	// Events returns up to limit events of partition p with Seq > after, in
	// order, or ErrCompacted if events after `after` were trimmed. After 0
	// means from the oldest event still kept: a new reader starts there.
	Events(ctx context.Context, p Partition, after uint64, limit int) ([]Event, error)

	// TrimEvents removes the events of partition p with Seq <= through, for
	// retention. The last event is always kept, so the log never forgets
	// where it ends. Afterwards Events with an `after` below the trimmed
	// point fails with ErrCompacted, so no reader skips events without
	// knowing; Seq numbering carries on.
	TrimEvents(ctx context.Context, p Partition, through uint64) error

	// WaitEvents blocks until partition p has an event with Seq > after, or
	// until ctx is done (then it returns ctx.Err()). It sees events committed
	// by any process sharing the store, not only this one. A nil return means
	// Events may have something new; it does not promise it.
	WaitEvents(ctx context.Context, p Partition, after uint64) error

	// Partitions lists, in byte order, every partition a Txn has written
	// to, including through other processes sharing the store. Background
	// work that spans communities (deadline scanners) starts from it. It
	// may also list a partition whose transactions all failed.
	Partitions(ctx context.Context) ([]Partition, error)

	// Ping reports whether the backend is reachable and usable.
	Ping(ctx context.Context) error

	// Close releases the store. Calls after Close return ErrClosed.
	Close() error
}

// Tx is the view of one partition inside Txn. Reads see the transaction's
// own earlier writes.
type Tx interface {
	// Get returns the record at key, or ErrNotFound.
	Get(key string) (Record, error)
	// Create writes a new key at version 1, or returns ErrAlreadyExists.
	Create(key string, value []byte) error
	// Update overwrites key if its current version is version, or returns
	// ErrConflict (or ErrNotFound if the key is absent).
	Update(key string, value []byte, version uint64) error
	// Put writes key whatever its current version, creating it if absent.
	// Use it for keys no caller compares, such as index entries.
	Put(key string, value []byte) error
	// Delete removes key if its current version is version, or returns
	// ErrConflict (ErrNotFound if absent). Version 0 deletes whatever the
	// version, and is not an error if the key is absent.
	Delete(key string, version uint64) error
	// Append adds an event to the partition's log. Its Seq is assigned at
	// commit.
	Append(data []byte)
}

// Get, Create, Update and Delete below are the single-key operations, each
// one a small Txn, so that every backend gets them from the same code.

// Create writes a new key at version 1, or returns ErrAlreadyExists.
func Create(ctx context.Context, s Store, p Partition, key string, value []byte) (Record, error) {
	err := s.Txn(ctx, p, func(tx Tx) error { return tx.Create(key, value) })
	if err != nil {
		return Record{}, err
	}
	return Record{Key: key, Value: value, Version: 1}, nil
}

// Update overwrites key if its current version is version (compare-and-swap).
func Update(ctx context.Context, s Store, p Partition, key string, value []byte, version uint64) (Record, error) {
	err := s.Txn(ctx, p, func(tx Tx) error { return tx.Update(key, value, version) })
	if err != nil {
		return Record{}, err
	}
	return Record{Key: key, Value: value, Version: version + 1}, nil
}

// Delete removes key if its current version is version; see Tx.Delete.
func Delete(ctx context.Context, s Store, p Partition, key string, version uint64) error {
	return s.Txn(ctx, p, func(tx Tx) error { return tx.Delete(key, version) })
}
