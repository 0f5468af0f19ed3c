package feed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/store"
)

// ListDeliveries lists a subscription's delivery log, newest first.
func (s *Service) ListDeliveries(ctx context.Context, req *feedv1.ListDeliveriesRequest) (*feedv1.ListDeliveriesResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.loadVisible(ctx, c, req.GetParent()); err != nil {
		return nil, err
	}
	id := subscriptions.ID(req.GetParent())
	filter := fmt.Sprintf("deliveries|%s|%d|%s", id, req.GetOutcome(), req.GetEventId())
	after, err := paging.Decode(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	var out []*feedv1.Delivery
	last, err := paging.Scan(ctx, s.store, c.Partition(), logPrefix(id), after, paging.Size(req.GetPageSize()), func(rec store.Record) (bool, error) {
		d := &feedv1.Delivery{}
		if err := proto.Unmarshal(rec.Value, d); err != nil {
			return false, fmt.Errorf("decode %s: %w", rec.Key, err)
		}
		if req.GetOutcome() != 0 && d.GetOutcome() != req.GetOutcome() || req.GetEventId() != "" && d.GetEventId() != req.GetEventId() {
			return false, nil
		}
		out = append(out, d)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	resp := &feedv1.ListDeliveriesResponse{Deliveries: out}
	if last != "" {
		resp.NextPageToken = paging.Encode(last, filter)
	}
	return resp, nil
}

// Bounds of one RedeliverEvents call.
const (
	// redeliverMax is how many events one call queues.
	redeliverMax = 1000
	// redeliverScan is how many log entries one call reads.
	redeliverScan = 50000
)

// RedeliverEvents queues events of the log for delivery again, one by ID
// or all those finally delivered (or dead-lettered) in a time range. They
// go out before the next live event, oldest first, through the same
// retries; the log marks them manual.
func (s *Service) RedeliverEvents(ctx context.Context, req *feedv1.RedeliverEventsRequest) (*feedv1.RedeliverEventsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	byID := req.GetEventId() != ""
	byRange := req.GetStartTime() != nil || req.GetEndTime() != nil
	switch {
	case byID == byRange:
		return nil, apierr.Invalid("event_id", "set event_id, or start_time and end_time")
	case byRange && (req.GetStartTime() == nil || req.GetEndTime() == nil):
		return nil, apierr.Invalid("end_time", "a range needs start_time and end_time")
	case byRange && !req.GetStartTime().AsTime().Before(req.GetEndTime().AsTime()):
		return nil, apierr.Invalid("end_time", "must be after start_time")
	}
	if _, err := s.loadVisible(ctx, c, req.GetName()); err != nil {
		return nil, err
	}
	p := c.Partition()
	id := subscriptions.ID(req.GetName())
	var evs []*typev1.Event
	resp := &feedv1.RedeliverEventsResponse{}
	if byID {
		ev, err := s.loggedEvent(ctx, p, id, req.GetEventId())
		if err != nil {
			return nil, err
		}
		evs = []*typev1.Event{ev}
	} else {
		var next time.Time
		evs, next, err = s.loggedRange(ctx, p, id, req.GetStartTime().AsTime(), req.GetEndTime().AsTime())
		if err != nil {
			return nil, err
		}
		if !next.IsZero() {
			resp.NextStartTime = timestamppb.New(next)
		}
	}
	if err := s.queue(ctx, p, id, evs); err != nil {
		return nil, err
	}
	resp.Queued = int32(len(evs))
	s.wake()
	return resp, nil
}

// loggedEvent returns the event of the last final log entry about eventID.
func (s *Service) loggedEvent(ctx context.Context, p store.Partition, id, eventID string) (*typev1.Event, error) {
	idx, err := s.store.Get(ctx, p, logIndexKey(id, eventID))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("event %s in the delivery log of subscriptions/%s: %w", eventID, id, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	rec, err := s.store.Get(ctx, p, string(idx.Value))
	if err != nil {
		return nil, err
	}
	d := &feedv1.Delivery{}
	if err := proto.Unmarshal(rec.Value, d); err != nil {
		return nil, fmt.Errorf("decode %s: %w", rec.Key, err)
	}
	return d.GetEvent(), nil
}

// loggedRange returns the events finally delivered or dead-lettered in
// [start, end), oldest first and once each, at most redeliverMax; next is
// where to continue when there were more.
func (s *Service) loggedRange(ctx context.Context, p store.Partition, id string, start, end time.Time) ([]*typev1.Event, time.Time, error) {
	type entry struct {
		at time.Time
		ev *typev1.Event
	}
	var found []entry
	scanned := 0
	for r, err := range store.Scan(ctx, s.store, p, logPrefix(id), logPrefix(id)+invertedTime(end)+"~", scanPage) {
		if err != nil {
			return nil, time.Time{}, err
		}
		if scanned++; scanned > redeliverScan {
			return nil, time.Time{}, apierr.Invalid("start_time", "the range holds more than %d log entries; ask for a shorter one", redeliverScan)
		}
		d := &feedv1.Delivery{}
		if err := proto.Unmarshal(r.Value, d); err != nil {
			return nil, time.Time{}, fmt.Errorf("decode %s: %w", r.Key, err)
		}
		at := d.GetTime().AsTime()
		if at.Before(start) {
			break
		}
		if d.GetEvent() != nil {
			found = append(found, entry{at: at, ev: d.GetEvent()})
		}
	}
	// The log is newest first; deliver oldest first, each event once.
	slices.Reverse(found)
	seen := map[string]bool{}
	var out []*typev1.Event
	for _, e := range found {
		if seen[e.ev.GetId()] {
			continue
		}
		if len(out) == redeliverMax {
			return out, e.at, nil
		}
		seen[e.ev.GetId()] = true
		out = append(out, e.ev)
	}
	return out, time.Time{}, nil
}

// queue appends events to a subscription's redelivery queue, in order.
func (s *Service) queue(ctx context.Context, p store.Partition, id string, evs []*typev1.Event) error {
	data := make([][]byte, len(evs))
	for i, ev := range evs {
		b, err := proto.Marshal(ev)
		if err != nil {
			return err
		}
		data[i] = b
	}
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		var seq uint64
		rec, err := tx.Get(redoSeqKey(id))
		switch {
		case err == nil:
			fmt.Sscan(string(rec.Value), &seq)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		for _, b := range data {
			seq++
			if err := tx.Put(fmt.Sprintf("%s%020d", redoPrefix(id), seq), b); err != nil {
				return err
			}
		}
		return tx.Put(redoSeqKey(id), fmt.Append(nil, seq))
	})
}
