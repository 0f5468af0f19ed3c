package store

import (
	"errors"
	"fmt"
	"sync"
)

// MaxKeyLen is the longest key, in bytes, that every backend accepts. It
// keeps keys well inside bbolt's and Redis's limits and makes a key in an
// error message or a log line bounded.
const MaxKeyLen = 512

// ValidateKey reports whether key is a key every backend stores: non-empty
// and at most MaxKeyLen bytes. Any byte is allowed; listing is in byte order.
// The error is plain (not a sentinel): a bad key is a programming error in
// the calling service, not a state of the data.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errors.New("store: empty key")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("store: key of %d bytes is longer than %d", len(key), MaxKeyLen)
	}
	return nil
}

// Change is the net effect of a Txn on one key, as a backend commits it.
type Change struct {
	Key string
	// Base is the version the transaction first saw (0 if the key was absent).
	// An optimistic backend commits only if the key is still at Base.
	Base uint64
	// Written is false for a key the transaction only read.
	Written bool
	// Deleted is true if the key must be absent after the commit. Value and
	// Version are then unused.
	Deleted bool
	Value   []byte
	Version uint64
}

// WriteSet is the Tx that both backends hand to a Txn function. It buffers
// every write in memory, so that a function that returns an error leaves no
// trace in the backend, and it answers reads from its own writes first and
// from the backend's committed state otherwise. Every key it touches is read
// once and remembered with its version: that is the read set an optimistic
// backend validates at commit. Services never use it directly.
//
// WriteSet is safe for concurrent use, although Txn functions rarely need
// that.
type WriteSet struct {
	read func(key string) (Record, bool, error)

	mu      sync.Mutex
	entries map[string]*entry
	order   []string
	events  [][]byte
	err     error
	sealed  bool
}

var _ Tx = (*WriteSet)(nil)

// entry is one key's state inside the transaction.
type entry struct {
	base    uint64
	exists  bool
	value   []byte
	version uint64
	written bool
}

// NewWriteSet returns an empty WriteSet that reads committed state through
// read. read reports found=false for an absent key; an error from read
// (a lost connection, say) is returned to the Txn function and also poisons
// the WriteSet, so the transaction cannot commit even if the function
// ignores the error.
func NewWriteSet(read func(key string) (rec Record, found bool, err error)) *WriteSet {
	return &WriteSet{read: read, entries: make(map[string]*entry)}
}

// Get returns the record at key as the transaction sees it, or ErrNotFound.
func (w *WriteSet) Get(key string) (Record, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, err := w.lookup(key)
	if err != nil {
		return Record{}, err
	}
	if !e.exists {
		return Record{}, fmt.Errorf("store: get %q: %w", key, ErrNotFound)
	}
	return Record{Key: key, Value: clone(e.value), Version: e.version}, nil
}

// Create buffers a new key at version 1, or returns ErrAlreadyExists.
func (w *WriteSet) Create(key string, value []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, err := w.lookup(key)
	if err != nil {
		return err
	}
	if e.exists {
		return fmt.Errorf("store: create %q: %w", key, ErrAlreadyExists)
	}
	e.set(value, 1)
	return nil
}

// Update buffers a new value for key if the transaction sees it at version.
func (w *WriteSet) Update(key string, value []byte, version uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, err := w.lookup(key)
	if err != nil {
		return err
	}
	if !e.exists {
		return fmt.Errorf("store: update %q: %w", key, ErrNotFound)
	}
	if e.version != version {
		return fmt.Errorf("store: update %q at version %d, current is %d: %w", key, version, e.version, ErrConflict)
	}
	e.set(value, version+1)
	return nil
}

// Put buffers a new value for key whatever its version.
func (w *WriteSet) Put(key string, value []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, err := w.lookup(key)
	if err != nil {
		return err
	}
	next := uint64(1)
	if e.exists {
		next = e.version + 1
	}
	e.set(value, next)
	return nil
}

// Delete buffers the removal of key; see Tx.Delete for the version rules.
func (w *WriteSet) Delete(key string, version uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, err := w.lookup(key)
	if err != nil {
		return err
	}
	switch {
	case !e.exists && version == 0:
		return nil
	case !e.exists:
		return fmt.Errorf("store: delete %q: %w", key, ErrNotFound)
	case version != 0 && e.version != version:
		return fmt.Errorf("store: delete %q at version %d, current is %d: %w", key, version, e.version, ErrConflict)
	}
	e.exists, e.value, e.version, e.written = false, nil, 0, true
	return nil
}

// Append buffers an event. The backend assigns its Seq at commit.
func (w *WriteSet) Append(data []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sealed {
		w.poison(errSealed)
		return
	}
	w.events = append(w.events, clone(data))
}

// Commit seals the WriteSet and returns what the backend must commit: one
// Change per key touched, in the order they were first touched, and the
// events in the order they were appended. It returns an error instead if a
// read failed or a key was invalid, even if the Txn function swallowed that
// error. After Commit, every method of the WriteSet fails, so a Tx that
// escapes its Txn function cannot write into a later commit.
func (w *WriteSet) Commit() ([]Change, [][]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sealed = true
	if w.err != nil {
		return nil, nil, w.err
	}
	changes := make([]Change, 0, len(w.order))
	for _, k := range w.order {
		e := w.entries[k]
		changes = append(changes, Change{
			Key:     k,
			Base:    e.base,
			Written: e.written,
			Deleted: !e.exists,
			Value:   e.value,
			Version: e.version,
		})
	}
	return changes, w.events, nil
}

// errSealed reports a Tx used after its Txn function returned.
var errSealed = errors.New("store: Tx used after its Txn function returned")

// lookup returns key's entry, reading it from the backend the first time.
// The caller holds w.mu.
func (w *WriteSet) lookup(key string) (*entry, error) {
	if w.sealed {
		w.poison(errSealed)
		return nil, errSealed
	}
	if err := ValidateKey(key); err != nil {
		w.poison(err)
		return nil, err
	}
	if e, ok := w.entries[key]; ok {
		return e, nil
	}
	rec, found, err := w.read(key)
	if err != nil {
		w.poison(err)
		return nil, err
	}
	e := &entry{}
	if found {
		e.base, e.exists, e.value, e.version = rec.Version, true, rec.Value, rec.Version
	}
	w.entries[key] = e
	w.order = append(w.order, key)
	return e, nil
}

// poison records the first error that must stop the commit.
func (w *WriteSet) poison(err error) {
	if w.err == nil {
		w.err = err
	}
}

// set makes the entry exist with a private copy of value.
func (e *entry) set(value []byte, version uint64) {
	e.exists, e.value, e.version, e.written = true, clone(value), version, true
}

// clone copies b so neither the caller nor the backend can change buffered
// or returned bytes behind the other's back. It never returns nil, so an
// empty value reads back the same on every backend.
func clone(b []byte) []byte {
	c := make([]byte, len(b))
	copy(c, b)
	return c
}
