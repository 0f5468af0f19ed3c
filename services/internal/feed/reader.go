package feed

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
	"github.com/countymcc/mcc/services/internal/platform/events"
)

// view is who reads the merged feed, and which of its events they want.
type view struct {
	// caller decides visibility, as in every service's own feed.
	caller auth.Caller
	// types, if not empty, keeps only these event types (`a.b`) and
	// prefixes (`a.*`).
	types []string
	// since, if set, skips events from before it and at it: a new
	// subscription starts with the events committed after its creation,
	// which is not one of them.
	since time.Time
}

// wants reports whether ev belongs in the view: visible to the caller, of a
// wanted type, and recent enough.
func (v view) wants(ev *typev1.Event) bool {
	if !events.Visible(v.caller, ev) {
		return false
	}
	if !v.since.IsZero() && !ev.GetTime().AsTime().After(v.since) {
		return false
	}
	return matchesType(v.types, ev.GetType())
}

// matchesType reports whether typ is one of types, or under one of their
// `prefix.*`. No types matches every type.
func matchesType(types []string, typ string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if prefix, ok := strings.CutSuffix(t, "*"); ok && strings.HasPrefix(typ, prefix) || t == typ {
			return true
		}
	}
	return false
}

// item is one wanted event with the source's cursor right after it.
type item struct {
	ev     *typev1.Event
	cursor string
}

// part is what one read of one source gave.
type part struct {
	source string
	items  []item
	// end is the source cursor after everything read, wanted or not; ""
	// when nothing was read.
	end string
	// more is set when the read stopped before the source's end without
	// finding what it looked for.
	more bool
}

// batch is one read of the merged feed.
type batch struct {
	// events carry the merged feed's cursors.
	events []*typev1.Event
	// next is the position after everything read.
	next        position
	unavailable []string
	// more is set when a source has more to read at once.
	more bool
}

// Bounds of direct reads of a source.
const (
	// directPage is the page size of ListEvents calls.
	directPage = 500
	// directPages bounds the pages one read takes from a source that has
	// no event the reader wants, so a filter that matches little cannot
	// make one call read a whole log. The reader comes back for the rest.
	directPages = 10
	// callTimeout bounds one ListEvents call, so a service that is slow or
	// unreachable holds up the others for at most this long.
	callTimeout = 3 * time.Second
	// directReads bounds the ListEvents calls in flight in the process. A
	// page of events is held in memory while it is filtered, so without a
	// bound a crowd of readers starting from the oldest event (every
	// township's first poll, or all of them again after a restart) holds a
	// page per reader and source at once: 150 readers took 200 MB.
	directReads = 16
)

// read returns up to limit events after pos that v wants, merged from
// every source. A source that cannot be read is named in unavailable and
// keeps its position. A source's CURSOR_EXPIRED fails the whole read: the
// reader must resynchronize rather than skip what it missed.
func (s *Service) read(ctx context.Context, v view, pos position, limit int) (batch, error) {
	community := v.caller.Community
	parts := make([]part, len(s.sources))
	errs := make([]error, len(s.sources))
	var direct []int
	for i, src := range s.sources {
		if t := s.hub.get(community, src.Name); t != nil {
			if items, end, ok := t.read(pos.At[src.Name], v.wants, limit); ok {
				parts[i] = part{source: src.Name, items: items, end: end}
				continue
			}
		}
		direct = append(direct, i)
	}
	if len(direct) > 0 {
		var wg sync.WaitGroup
		for _, i := range direct {
			wg.Go(func() {
				parts[i], errs[i] = s.readSource(ctx, s.sources[i], community, pos.At[s.sources[i].Name], v, limit)
			})
		}
		wg.Wait()
	}
	b := batch{}
	for i, err := range errs {
		if err == nil {
			continue
		}
		if err := s.explain(s.sources[i].Name, err); err != nil {
			return batch{}, err
		}
		if ctx.Err() != nil {
			return batch{}, ctx.Err()
		}
		b.unavailable = append(b.unavailable, s.sources[i].Name)
		s.logger.DebugContext(ctx, "feed: a service could not be read", "source", s.sources[i].Name, "error", err.Error())
	}
	for _, p := range parts {
		b.more = b.more || p.more
	}
	b.events, b.next = merge(pos, parts, limit)
	return b, nil
}

// readSource reads one source directly, after cursor, until it has limit
// wanted events, reaches the end, or has read directPages pages. At the end
// it starts a tail there, so the next read comes from memory. A call that
// fails after others succeeded keeps what they read.
func (s *Service) readSource(ctx context.Context, src *eventfeed.Source, community, cursor string, v view, limit int) (part, error) {
	sctx, err := s.peers.AsService(ctx, community)
	if err != nil {
		return part{}, err
	}
	p := part{source: src.Name}
	for page := range directPages {
		resp, err := s.listPage(ctx, sctx, src, community, cursor)
		if err != nil && page > 0 && ctx.Err() == nil && s.explain(src.Name, err) == nil {
			p.more = true
			return p, nil
		}
		if err != nil {
			return p, err
		}
		for _, ev := range resp.GetEvents() {
			p.end = ev.GetCursor()
			if !v.wants(ev) {
				continue
			}
			p.items = append(p.items, item{ev: ev, cursor: ev.GetCursor()})
			if len(p.items) == limit {
				return p, nil
			}
		}
		if next := resp.GetNextCursor(); next != "" {
			cursor, p.end = next, next
		}
		if len(resp.GetEvents()) < directPage {
			s.hub.ensure(community, src, cursor)
			return p, nil
		}
	}
	p.more = true
	return p, nil
}

// listPage reads the page of src after cursor. Readers asking for the same
// page at once share one call and one response, which they only read (merge
// copies what it returns). The call runs detached from ctx, whose end only
// stops this reader waiting for it, and waits for one of the process's
// directReads slots.
func (s *Service) listPage(ctx, sctx context.Context, src *eventfeed.Source, community, cursor string) (*feedv1.ListEventsResponse, error) {
	key := community + "\x00" + src.Name + "\x00" + cursor
	ch := s.pages.DoChan(key, func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(sctx), callTimeout)
		defer cancel()
		select {
		case s.readSlots <- struct{}{}:
			defer func() { <-s.readSlots }()
		case <-cctx.Done():
			return nil, status.Error(codes.Unavailable, "feed: too many reads of the services' events in flight")
		}
		return src.List(cctx, cursor, directPage)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*feedv1.ListEventsResponse), nil
	}
}

// explain turns a source's refusal of a cursor into the feed's own error,
// which names the source and says what to do. It returns nil for errors
// that only make the source unavailable for now.
func (s *Service) explain(source string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	switch {
	case apierr.Reason(err) == events.ReasonCursorExpired:
		return &apierr.ConditionError{
			Reason: events.ReasonCursorExpired,
			Message: fmt.Sprintf("the cursor is older than the events the %s service keeps (%s); resynchronize: read the current state of what you follow "+
				"(orders, reports, referrals), then follow the feed again without a cursor, which starts at the oldest event kept", source, retentionText(s.retention)),
			Metadata: map[string]string{"source": source},
		}
	case st.Code() == codes.InvalidArgument:
		return apierr.Invalid("after", "not a cursor of the facility feed: its %s position is not valid", source)
	}
	return nil
}

// retentionText says how long events are kept, in days where it can.
func retentionText(d time.Duration) string {
	if d <= 0 {
		return "its retention"
	}
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// merge interleaves the parts by event time into at most limit events,
// never reordering the events of one source, and gives each event the
// merged cursor right after it. The returned position is after everything
// merged, and after what each fully merged source skipped.
func merge(pos position, parts []part, limit int) ([]*typev1.Event, position) {
	next := make([]int, len(parts))
	var out []*typev1.Event
	for len(out) < limit {
		best := -1
		for i, p := range parts {
			if next[i] == len(p.items) {
				continue
			}
			if best < 0 || p.items[next[i]].ev.GetTime().AsTime().Before(parts[best].items[next[best]].ev.GetTime().AsTime()) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		it := parts[best].items[next[best]]
		next[best]++
		pos = pos.with(parts[best].source, it.cursor)
		// The event may be shared with other readers (the tail's
		// window); the copy carries this reader's cursor.
		ev := proto.CloneOf(it.ev)
		ev.Cursor = pos.encode()
		out = append(out, ev)
	}
	for i, p := range parts {
		if next[i] == len(p.items) && p.end != "" {
			pos = pos.with(p.source, p.end)
		}
	}
	return out, pos
}

// recheck bounds a wait for events when no tail would signal them: a
// source that is down, or read directly.
const recheck = time.Second

// next returns the next events after pos that v wants, waiting up to wait
// for the first one. Waiting ends early when ctx does, with its error, and
// when the process stops, with the events so far (none), so that a long
// poll does not hold up the shutdown.
func (s *Service) next(ctx context.Context, v view, pos position, limit int, wait time.Duration) (batch, error) {
	until := time.Now().Add(wait)
	for {
		signal := s.hub.signal(v.caller.Community)
		b, err := s.read(ctx, v, pos, limit)
		if err != nil || len(b.events) > 0 {
			return b, err
		}
		left := time.Until(until)
		if left <= 0 {
			return b, nil
		}
		pos = b.next
		if b.more {
			continue
		}
		timer := time.NewTimer(min(left, recheck))
		select {
		case <-ctx.Done():
			timer.Stop()
			return b, ctx.Err()
		case <-s.lifetime.Done():
			timer.Stop()
			return b, nil
		case <-signal:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// isCursorExpired reports whether err is the feed's CURSOR_EXPIRED.
func isCursorExpired(err error) bool { return apierr.Reason(err) == events.ReasonCursorExpired }
