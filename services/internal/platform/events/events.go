// Package events is the change feed every MCC service exposes as ListEvents
// and WatchEvents.
//
// A service appends an event in the same store transaction as the change it
// describes, so the feed holds exactly the committed changes, in commit order
// per community. Consumers read it after a cursor, Kubernetes list-watch
// style: delivery is at-least-once, and they de-duplicate by event ID.
package events

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/store"
)

// Change describes one event to append.
type Change struct {
	// Type names the change, `<resource>.<what happened>`.
	Type string
	// Resource is the resource name.
	Resource string
	// Version is the store version of the resource after the change; it
	// becomes the event's resource_etag.
	Version uint64
	// Facilities are the resource names of the facilities that may see the
	// event.
	Facilities []string
	// Snapshot is the resource after the change, without direct patient
	// identifiers.
	Snapshot proto.Message
}

// Append adds the event for change to tx, stamped with the actor and time.
func Append(tx store.Tx, actor auth.Caller, at time.Time, c Change) error {
	ev := &typev1.Event{
		Type:         c.Type,
		Resource:     c.Resource,
		ResourceEtag: Etag(c.Version),
		Time:         timestamppb.New(at),
		Actor:        actor.Actor(),
		Facilities:   compact(c.Facilities),
	}
	if c.Snapshot != nil {
		snap, err := anypb.New(c.Snapshot)
		if err != nil {
			return fmt.Errorf("event snapshot: %w", err)
		}
		ev.Snapshot = snap
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	tx.Append(data)
	return nil
}

// compact sorts facility names and drops duplicates and empty ones.
func compact(names []string) []string {
	out := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "" })
	slices.Sort(out)
	return slices.Compact(out)
}

// Etag is the etag of a resource at a store version. Every service uses it,
// so etags look the same everywhere.
func Etag(version uint64) string { return strconv.FormatUint(version, 10) }

// Feed serves one service's events.
type Feed struct {
	store   store.Store
	service string
	// View, if set, turns the caller into the one whose visibility the
	// feed applies (a service whose events are for other groups than
	// facilities, such as referral coordinators, maps them here).
	View func(auth.Caller) auth.Caller
}

// NewFeed returns the feed of service, whose events are in s.
func NewFeed(s store.Store, service string) *Feed {
	return &Feed{store: s, service: service}
}

// viewer is the caller of ctx as the feed filters for it.
func (f *Feed) viewer(ctx context.Context) (auth.Caller, error) {
	c, ok := auth.CallerFrom(ctx)
	if !ok {
		return auth.Caller{}, apierr.ErrUnauthenticated
	}
	if f.View != nil {
		c = f.View(c)
	}
	return c, nil
}

// ListEvents serves a ListEvents call: one page for the caller of ctx.
func (f *Feed) ListEvents(ctx context.Context, after string, pageSize int32) ([]*typev1.Event, string, error) {
	c, err := f.viewer(ctx)
	if err != nil {
		return nil, "", err
	}
	return f.List(ctx, c, after, pageSize)
}

// WatchEvents serves a WatchEvents call for the caller of ctx.
func (f *Feed) WatchEvents(ctx context.Context, after string, send func(*typev1.Event) error) error {
	c, err := f.viewer(ctx)
	if err != nil {
		return err
	}
	return f.Watch(ctx, c, after, send)
}

// pageDefault and pageMax bound one ListEvents page.
const (
	pageDefault = 100
	pageMax     = 1000
)

// List returns the events after the cursor that the caller may see, and the
// cursor to continue from. The cursor advances past events the caller may not
// see, so a consumer never reads them twice.
func (f *Feed) List(ctx context.Context, c auth.Caller, after string, pageSize int32) ([]*typev1.Event, string, error) {
	p := c.Partition()
	seq, err := f.decodeCursor(p, after)
	if err != nil {
		return nil, "", err
	}
	size := pageDefault
	if pageSize > 0 {
		size = min(int(pageSize), pageMax)
	}
	raw, err := f.store.Events(ctx, p, seq, size)
	if err != nil {
		return nil, "", expired(err)
	}
	out := make([]*typev1.Event, 0, len(raw))
	for _, r := range raw {
		seq = r.Seq
		ev, ok, err := f.decode(c, p, r)
		if err != nil {
			return nil, "", err
		}
		if ok {
			out = append(out, ev)
		}
	}
	return out, f.cursor(p, seq), nil
}

// Watch sends the events after the cursor that the caller may see, then
// every new one as it is committed, until ctx ends or send fails.
func (f *Feed) Watch(ctx context.Context, c auth.Caller, after string, send func(*typev1.Event) error) error {
	p := c.Partition()
	seq, err := f.decodeCursor(p, after)
	if err != nil {
		return err
	}
	for {
		raw, err := f.store.Events(ctx, p, seq, pageMax)
		if err != nil {
			return expired(err)
		}
		for _, r := range raw {
			seq = r.Seq
			ev, ok, err := f.decode(c, p, r)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := send(ev); err != nil {
				return err
			}
		}
		if len(raw) == pageMax {
			continue
		}
		if err := f.store.WaitEvents(ctx, p, seq); err != nil {
			return err
		}
	}
}

// ReasonCursorExpired is the ErrorInfo reason of a cursor older than the
// feed's retention.
const ReasonCursorExpired = "CURSOR_EXPIRED"

// expired explains a read behind the retention window to the client.
func expired(err error) error {
	if errors.Is(err, store.ErrCompacted) {
		return apierr.Condition(ReasonCursorExpired, "the cursor is older than the events this feed keeps; resynchronize: read the current state of what you follow, then follow the feed again from an empty cursor")
	}
	return err
}

// Retain trims from every partition of s the events committed before
// cutoff, and reports how many partitions it trimmed. It reads each log from
// its oldest event and trims through the last one older than cutoff.
func Retain(ctx context.Context, s store.Store, cutoff time.Time) (int, error) {
	parts, err := s.Partitions(ctx)
	if err != nil {
		return 0, err
	}
	trimmed := 0
	for _, p := range parts {
		through, err := lastBefore(ctx, s, p, cutoff)
		if err != nil {
			return trimmed, err
		}
		if through == 0 {
			continue
		}
		if err := s.TrimEvents(ctx, p, through); err != nil {
			return trimmed, err
		}
		trimmed++
	}
	return trimmed, nil
}

// lastBefore finds the Seq of the last event of p committed before cutoff.
func lastBefore(ctx context.Context, s store.Store, p store.Partition, cutoff time.Time) (uint64, error) {
	var through, after uint64
	for {
		raw, err := s.Events(ctx, p, after, pageMax)
		if err != nil {
			return 0, err
		}
		for _, r := range raw {
			ev := &typev1.Event{}
			if err := proto.Unmarshal(r.Data, ev); err != nil {
				return 0, fmt.Errorf("decode event %d: %w", r.Seq, err)
			}
			if !ev.GetTime().AsTime().Before(cutoff) {
				return through, nil
			}
			through = r.Seq
		}
		if len(raw) < pageMax {
			return through, nil
		}
		after = raw[len(raw)-1].Seq
	}
}

// decode unmarshals a stored event, fills in its ID and cursor, and reports
// whether the caller may see it.
func (f *Feed) decode(c auth.Caller, p store.Partition, r store.Event) (*typev1.Event, bool, error) {
	ev := &typev1.Event{}
	if err := proto.Unmarshal(r.Data, ev); err != nil {
		return nil, false, fmt.Errorf("decode event %d: %w", r.Seq, err)
	}
	if !Visible(c, ev) {
		return nil, false, nil
	}
	ev.Id = fmt.Sprintf("%s/%s/%d", f.service, p, r.Seq)
	ev.Cursor = f.cursor(p, r.Seq)
	return ev, true, nil
}

// Visible reports whether c may see ev: administrators and services see
// every event of their community, others the events that concern their
// facility. The feed service applies the same rule to what it merges.
func Visible(c auth.Caller, ev *typev1.Event) bool {
	return c.SeesCommunity() || slices.Contains(ev.GetFacilities(), c.Facility)
}

// cursor encodes a position in the feed. It names the service and community
// so that a cursor cannot be used on another feed by mistake.
func (f *Feed) cursor(p store.Partition, seq uint64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%s|%s|%d", f.service, p, seq))
}

func (f *Feed) decodeCursor(p store.Partition, cursor string) (uint64, error) {
	if cursor == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	parts := strings.Split(string(b), "|")
	if err != nil || len(parts) != 3 {
		return 0, apierr.Invalid("after", "not a cursor of this feed")
	}
	if parts[0] != f.service || parts[1] != string(p) {
		return 0, apierr.Invalid("after", "the cursor belongs to another feed")
	}
	seq, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return 0, apierr.Invalid("after", "not a cursor of this feed")
	}
	return seq, nil
}

// TypeOf is the type of a stored event ("unknown" if it does not decode),
// for metrics that count events by type.
func TypeOf(data []byte) string {
	ev := &typev1.Event{}
	if err := proto.Unmarshal(data, ev); err != nil || !utf8.ValidString(ev.GetType()) || ev.GetType() == "" {
		return "unknown"
	}
	return ev.GetType()
}
