package audit

import (
	"context"
	"sync"
	"time"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
)

// maxGroup is the most records one append transaction carries.
const maxGroup = 256

// writeTimeout bounds one append transaction. It runs detached from the
// caller's context, because it carries other callers' records too.
const writeTimeout = 10 * time.Second

// Writer appends records to the trail with group commit: while one
// transaction of a community is running, the records of other calls queue,
// and the next transaction takes them all. Calls of one process therefore
// never race each other for the chain's head, and a busy process appends
// many records per store round trip.
type Writer struct {
	trail *Trail

	mu sync.Mutex
	// pending holds each community's queued records; a community has a
	// key while its drain goroutine runs, even with an empty queue.
	pending map[string][]*pendingRecord
}

type pendingRecord struct {
	rec  *auditv1.AuditRecord
	done chan error
}

// NewWriter returns a Writer appending to trail.
func NewWriter(trail *Trail) *Writer {
	return &Writer{trail: trail, pending: map[string][]*pendingRecord{}}
}

// Write appends rec to community's chain and returns once it is committed
// (or failed). When no transaction of the community is running, it starts a
// goroutine that commits the queue, batch after batch, until it is empty;
// the callers only wait, so none of them is held up serving the others.
func (w *Writer) Write(ctx context.Context, community string, rec *auditv1.AuditRecord) error {
	p := &pendingRecord{rec: rec, done: make(chan error, 1)}
	w.mu.Lock()
	queue, running := w.pending[community]
	w.pending[community] = append(queue, p)
	if !running {
		go w.drain(context.WithoutCancel(ctx), community)
	}
	w.mu.Unlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		// The record may still be committed; the call fails either way.
		return ctx.Err()
	}
}

// drain commits community's queued records until the queue is empty.
func (w *Writer) drain(ctx context.Context, community string) {
	w.mu.Lock()
	for {
		batch := w.pending[community]
		if len(batch) == 0 {
			delete(w.pending, community)
			w.mu.Unlock()
			return
		}
		if len(batch) > maxGroup {
			batch = batch[:maxGroup]
		}
		w.pending[community] = w.pending[community][len(batch):]
		w.mu.Unlock()
		recs := make([]*auditv1.AuditRecord, len(batch))
		for i, b := range batch {
			recs[i] = b.rec
		}
		tctx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := w.trail.Append(tctx, community, recs)
		cancel()
		for _, b := range batch {
			b.done <- err
		}
		w.mu.Lock()
	}
}
