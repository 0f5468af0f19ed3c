package feed

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
)

// hub keeps, for each community and source that readers have caught up
// with, a tail: one WatchEvents stream, as the service role, whose latest
// events stay in memory. Two hundred facilities waiting on the feed then
// cost one stream per source and a scan of memory each, instead of a stream
// or a ListEvents call each on every service. A reader whose cursor is not
// in a tail's window (it is behind, or no tail runs) reads the source
// directly; the hub is only ever a shortcut, never the record.
type hub struct {
	// lifetime ends every tail.
	lifetime context.Context
	// asService returns ctx with a service token of community.
	asService func(ctx context.Context, community string) (context.Context, error)
	window    int
	idle      time.Duration
	logger    *slog.Logger

	mu    sync.Mutex
	tails map[tailKey]*tail
	// signals are closed, and replaced, when a tail of their community
	// receives an event.
	signals map[string]chan struct{}
}

// tailKey names the tail of one source in one community.
type tailKey struct{ community, source string }

// newHub returns a hub whose tails keep window events each and stop after
// idle without readers, or when lifetime ends.
func newHub(lifetime context.Context, asService func(context.Context, string) (context.Context, error), window int, idle time.Duration, logger *slog.Logger) *hub {
	return &hub{
		lifetime: lifetime, asService: asService, window: window, idle: idle, logger: logger,
		tails: map[tailKey]*tail{}, signals: map[string]chan struct{}{},
	}
}

// get returns the tail of a source in community, or nil.
func (h *hub) get(community, source string) *tail {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tails[tailKey{community, source}]
}

// ensure starts a tail of src in community after cursor, unless one runs.
// Readers call it when they have read src up to its end at cursor.
func (h *hub) ensure(community string, src *eventfeed.Source, cursor string) {
	if h.window <= 0 || h.lifetime.Err() != nil {
		return
	}
	key := tailKey{community, src.Name}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tails[key] != nil {
		return
	}
	ctx, cancel := context.WithCancel(h.lifetime)
	t := &tail{hub: h, key: key, src: src, cancel: cancel, start: cursor, index: map[string]uint64{cursor: 0}, used: time.Now()}
	h.tails[key] = t
	go t.run(ctx)
}

// remove forgets t once it has stopped.
func (h *hub) remove(t *tail) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.tails[t.key] == t {
		delete(h.tails, t.key)
	}
}

// signal returns a channel that is closed when a tail of community next
// receives an event. Take it before reading, so that an event arriving
// during the read is not missed.
func (h *hub) signal(community string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.signals[community]
	if !ok {
		ch = make(chan struct{})
		h.signals[community] = ch
	}
	return ch
}

// notify wakes the readers of community.
func (h *hub) notify(community string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.signals[community]; ok {
		close(ch)
		delete(h.signals, community)
	}
}

// sweep stops the tails nobody has read for the idle time, until the
// hub's lifetime ends.
func (h *hub) sweep() {
	tick := time.NewTicker(max(h.idle/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-h.lifetime.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		for _, t := range h.tails {
			if t.idleSince(h.idle) {
				t.cancel()
			}
		}
		h.mu.Unlock()
	}
}

// tail is the live window of one source's feed in one community.
type tail struct {
	hub    *hub
	key    tailKey
	src    *eventfeed.Source
	cancel context.CancelFunc
	// start is the cursor the tail began after, at position 0.
	start string

	mu sync.Mutex
	// events are the latest events, oldest first: events[i] is at position
	// base+1+i. Positions count the events received since the start.
	events []*typev1.Event
	base   uint64
	// index maps the source cursors in the window to their positions.
	index map[string]uint64
	used  time.Time
}

// read returns the events after cursor that want accepts, at most limit,
// and the source cursor after the last event it looked at ("" if there was
// none). ok is false when cursor is not in the window: the caller must read
// the source itself.
func (t *tail) read(cursor string, want func(*typev1.Event) bool, limit int) (items []item, end string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.used = time.Now()
	pos, ok := t.index[cursor]
	if !ok || pos < t.base {
		return nil, "", false
	}
	for _, ev := range t.events[pos-t.base:] {
		end = ev.GetCursor()
		if !want(ev) {
			continue
		}
		items = append(items, item{ev: ev, cursor: ev.GetCursor()})
		if len(items) == limit {
			break
		}
	}
	return items, end, true
}

// idleSince reports whether nobody has read the tail for d.
func (t *tail) idleSince(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Since(t.used) > d
}

// add appends ev to the window, dropping the oldest beyond its size.
func (t *tail) add(ev *typev1.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, ev)
	t.index[ev.GetCursor()] = t.base + uint64(len(t.events))
	for len(t.events) > t.hub.window {
		delete(t.index, t.events[0].GetCursor())
		t.events[0] = nil
		t.events = t.events[1:]
		t.base++
		delete(t.index, t.start)
	}
}

// last is the cursor of the newest event, or the start.
func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.events) == 0 {
		return t.start
	}
	return t.events[len(t.events)-1].GetCursor()
}

// Reconnection and staleness bounds of a tail.
const (
	tailRetryMin = 100 * time.Millisecond
	tailRetryMax = 5 * time.Second
	// tailProbe is how long a tail waits without an event before it asks
	// the source directly whether it missed one, which catches a stream
	// stuck on a dead connection.
	tailProbe = time.Minute
	// tailBatch bounds the events a tail adds before it wakes its readers.
	tailBatch = 256
)

// run follows the source until ctx ends or the source refuses for good,
// reconnecting after the newest event received.
func (t *tail) run(ctx context.Context) {
	defer t.hub.remove(t)
	f := &eventfeed.Follower{
		Source: t.src,
		Open: func(ctx context.Context) (context.Context, string, error) {
			sctx, err := t.hub.asService(ctx, t.key.community)
			return sctx, t.last(), err
		},
		Apply: func(_ context.Context, evs []*typev1.Event) error {
			for _, ev := range evs {
				t.add(ev)
			}
			t.hub.notify(t.key.community)
			return nil
		},
		Failed: func(_ context.Context, err error) bool {
			switch status.Code(err) {
			case codes.FailedPrecondition, codes.InvalidArgument, codes.PermissionDenied, codes.Unimplemented, codes.Unauthenticated:
				t.hub.logger.Warn("feed: stopped following a service; readers read it directly", "source", t.src.Name, "error", err.Error())
				return false
			}
			level := t.hub.logger.Debug
			if errors.Is(err, eventfeed.ErrStalled) {
				level = t.hub.logger.Warn
			}
			level("feed: reconnecting to a service's events", "source", t.src.Name, "error", err)
			return true
		},
		MaxBatch: tailBatch, RetryMin: tailRetryMin, RetryMax: tailRetryMax, Probe: tailProbe,
	}
	f.Run(ctx)
}
