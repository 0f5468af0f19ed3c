package eventfeed

import (
	"context"
	"errors"
	"sync"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// ErrStalled is why a stream ended when the follower's probe found it stuck:
// a whole Probe passed without an event while the source had one after the
// last event applied.
var ErrStalled = errors.New("the event stream stalled: the service has events the stream did not send")

// Follower follows one source's WatchEvents until its context ends,
// reconnecting after the last event it applied. The facility feed's tails
// and the recognition registry follow the services this way.
type Follower struct {
	Source *Source
	// Open returns the context of one stream, carrying the token the
	// source wants, and the cursor to resume after. It is called at every
	// connection.
	Open func(ctx context.Context) (streamCtx context.Context, cursor string, err error)
	// Apply takes the events received together, in order, at most
	// MaxBatch of them. An error ends the stream, and Failed decides.
	Apply func(ctx context.Context, evs []*typev1.Event) error
	// Failed is told why a stream ended (or could not open), and returns
	// false to stop following for good.
	Failed func(ctx context.Context, err error) (retry bool)
	// MaxBatch bounds the events of one Apply (1 if not set).
	MaxBatch int
	// RetryMin and RetryMax bound the wait before reconnecting: it starts
	// at RetryMin, doubles while connections bring nothing, and starts
	// again once one does.
	RetryMin, RetryMax time.Duration
	// Probe, when positive, is how long a stream may go without an event
	// before the follower asks the source for one after the last event
	// applied. If the source has one, the stream is stuck (a lost
	// connection that nothing reset, a watch that stopped sending) and the
	// follower ends it with ErrStalled.
	Probe time.Duration
}

// Run follows the source until ctx ends or Failed says to stop.
func (f *Follower) Run(ctx context.Context) {
	delay := f.RetryMin
	for ctx.Err() == nil {
		progressed, err := f.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			delay = f.RetryMin
		}
		if !f.Failed(ctx, err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, f.RetryMax)
	}
}

// once follows one stream until it fails, and reports whether it applied
// anything.
func (f *Follower) once(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sctx, cursor, err := f.Open(ctx)
	if err != nil {
		return false, err
	}
	stream, err := f.Source.Watch(sctx, cursor)
	if err != nil {
		return false, err
	}
	batch := max(f.MaxBatch, 1)
	received := make(chan *typev1.Event, batch)
	failed := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				failed <- err
				close(received)
				return
			}
			select {
			case received <- resp.GetEvent():
			case <-ctx.Done():
				failed <- ctx.Err()
				close(received)
				return
			}
		}
	}()
	p := &probe{cursor: cursor}
	if f.Probe > 0 {
		go f.watchdog(sctx, cancel, p)
	}
	for {
		ev, ok := <-received
		if !ok {
			err := <-failed
			if p.hasStalled() {
				err = ErrStalled
			}
			return progressed, err
		}
		evs := []*typev1.Event{ev}
	drain:
		for len(evs) < batch {
			select {
			case ev, ok := <-received:
				if !ok {
					break drain
				}
				evs = append(evs, ev)
			default:
				break drain
			}
		}
		p.received()
		if err := f.Apply(ctx, evs); err != nil {
			return progressed, err
		}
		p.applied(evs[len(evs)-1].GetCursor())
		progressed = true
	}
}

// probe is what the watchdog of one stream knows.
type probe struct {
	mu      sync.Mutex
	cursor  string // after the last event applied
	recent  bool   // an event arrived since the watchdog last looked
	stalled bool
}

func (p *probe) received() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recent = true
}

func (p *probe) applied(cursor string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cursor = cursor
}

func (p *probe) hasStalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

// watchdog ends the stream when a whole Probe passes without an event while
// the source has one after the last event applied.
func (f *Follower) watchdog(ctx context.Context, cancel context.CancelFunc, p *probe) {
	tick := time.NewTicker(f.Probe)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		recent, cursor := p.recent, p.cursor
		p.recent = false
		p.mu.Unlock()
		if recent {
			continue
		}
		resp, err := f.Source.List(ctx, cursor, 1)
		if err == nil && len(resp.GetEvents()) > 0 {
			p.mu.Lock()
			p.stalled = true
			p.mu.Unlock()
			cancel()
			return
		}
	}
}
