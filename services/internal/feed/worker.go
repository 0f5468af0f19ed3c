package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/store"
)

// worker delivers one subscription's events, one at a time and in order,
// on its own goroutine: a slow or dead receiver holds up nobody else.
// It delivers only while it holds the subscription's lease, so with
// several replicas one of them delivers; every write of the delivery state
// checks the lease and the state it started from, in the same transaction.
type worker struct {
	s      *Service
	p      store.Partition
	id     string
	holder string

	// leased is until when this worker last took the lease.
	leased time.Time
	secret string
	// queue holds live events read ahead, for the subscription version
	// queueFor, starting right after the state cursor expect.
	queue    []*typev1.Event
	queueFor string
	expect   string
	// lastSent is when the receiver last got something, for heartbeats.
	lastSent time.Time
	// expiredAt is when CURSOR_EXPIRED was last written to the log.
	expiredAt time.Time
}

// batchSize is how many live events a worker reads ahead.
const batchSize = 100

func (w *worker) name() string { return subscriptions.Name(w.id) }

// run steps until ctx ends or the subscription is deleted.
func (w *worker) run(ctx context.Context) {
	w.lastSent = time.Now()
	for ctx.Err() == nil {
		pause, err := w.step(ctx)
		switch {
		case errors.Is(err, errGone):
			return
		case errors.Is(err, errLeaseLost), errors.Is(err, errMoved):
			w.queue, w.leased = nil, time.Time{}
		case err != nil && ctx.Err() == nil:
			w.s.logger.WarnContext(ctx, "feed: webhook delivery step failed", "subscription", w.name(), "error", err.Error())
			pause = max(pause, time.Second)
		}
		sleep(ctx, pause)
	}
}

// step does one thing: wait for an event, send one, or wait for the next
// attempt. It returns how long to pause before the next step.
func (w *worker) step(ctx context.Context) (time.Duration, error) {
	sub, err := subscriptions.Load(ctx, w.s.store, w.p, w.name())
	if errors.Is(err, store.ErrNotFound) {
		return 0, errGone
	}
	if err != nil {
		return 0, err
	}
	ttl := w.s.cfg.LeaseTTL
	if held, err := w.hold(ctx); err != nil || !held {
		w.queue = nil
		return ttl / 3, err
	}
	rec, err := w.s.store.Get(ctx, w.p, stateKey(w.id))
	if err != nil {
		return 0, err
	}
	st, err := decodeState(rec)
	if err != nil {
		return 0, err
	}
	if w.secret == "" {
		if w.secret, err = w.openSecret(ctx); err != nil {
			return 0, err
		}
	}
	head, redo, err := w.head(ctx, sub, st)
	if isCursorExpired(err) {
		return w.s.cfg.RetryMax, w.expired(ctx, err)
	}
	if err != nil || head == nil {
		return 0, err
	}
	if head.GetId() != st.HeadID {
		st.HeadID, st.Attempt, st.FirstFailure, st.NextAttempt = head.GetId(), 0, time.Time{}, time.Time{}
	}
	if wait := st.NextAttempt.Sub(w.s.clock.Now()); wait > 0 {
		return min(wait, ttl/3), nil
	}
	attempt := st.Attempt + 1
	started := time.Now()
	code, perr := w.s.webhook.post(ctx, sub.GetUrl(), w.secret, &feedv1.Notification{Subscription: sub.GetName(), Event: head}, attempt)
	took := time.Since(started)
	if ctx.Err() != nil {
		// Shutting down: nothing is recorded, and the event is sent again
		// after the restart.
		return 0, nil
	}
	w.lastSent = time.Now()
	now := w.s.clock.Now()
	d := &feedv1.Delivery{
		EventId: head.GetId(), EventType: head.GetType(), Attempt: int32(attempt), Manual: redo != "",
		Time: timestamppb.New(now), Duration: durationpb.New(took), HttpStatus: int32(code),
	}
	switch {
	case perr == nil:
		d.Outcome, d.Event = feedv1.Delivery_OUTCOME_DELIVERED, head
	case !st.FirstFailure.IsZero() && now.Sub(st.FirstFailure) >= w.s.cfg.RetryHorizon:
		d.Outcome, d.Event, d.Error = feedv1.Delivery_OUTCOME_DEAD_LETTERED, head, describe(perr)
	default:
		d.Outcome, d.Error = feedv1.Delivery_OUTCOME_FAILED, describe(perr)
		d.NextAttemptTime = timestamppb.New(now.Add(w.s.cfg.backoff(attempt)))
	}
	return 0, w.record(ctx, st, d, head, redo)
}

// describe is the delivery log's text of a failed POST.
func describe(err error) string {
	msg := err.Error()
	if errors.Is(err, errForbidden) {
		return "refused to connect: " + msg
	}
	return msg
}

// hold takes or renews the subscription's lease when a third of it has
// passed, and reports whether this worker holds it.
func (w *worker) hold(ctx context.Context) (bool, error) {
	ttl := w.s.cfg.LeaseTTL
	now := w.s.clock.Now()
	if w.leased.Sub(now) > ttl*2/3 {
		return true, nil
	}
	held := false
	err := w.s.store.Txn(ctx, w.p, func(tx store.Tx) error {
		held = false
		l, err := readLease(tx, w.id)
		if err != nil {
			return err
		}
		if l.Holder != w.holder && now.Before(l.Expires) {
			return nil
		}
		held = true
		return tx.Put(leaseKey(w.id), lease{Holder: w.holder, Expires: now.Add(ttl)}.encode())
	})
	if err != nil || !held {
		w.leased = time.Time{}
		return false, err
	}
	w.leased = now.Add(ttl)
	return true, nil
}

// lease is who delivers a subscription, until when.
type lease struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

func (l lease) encode() []byte { return mustJSON(l) }

// readLease returns the lease of a subscription, zero if none.
func readLease(tx store.Tx, id string) (lease, error) {
	rec, err := tx.Get(leaseKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return lease{}, nil
	}
	if err != nil {
		return lease{}, err
	}
	var l lease
	if err := json.Unmarshal(rec.Value, &l); err != nil {
		return lease{}, fmt.Errorf("decode %s: %w", rec.Key, err)
	}
	return l, nil
}

// guardState, inside a transaction that writes the delivery state, checks
// that this worker still holds the lease, that the subscription exists,
// and that the state is still the one the worker read: a write never moves
// the cursor back over another process's deliveries.
func (w *worker) guardState(tx store.Tx, read state, now time.Time) error {
	l, err := readLease(tx, w.id)
	if err != nil {
		return err
	}
	if l.Holder != w.holder || !now.Before(l.Expires) {
		return errLeaseLost
	}
	if _, err := tx.Get(subscriptions.Key(w.name())); errors.Is(err, store.ErrNotFound) {
		return errGone
	} else if err != nil {
		return err
	}
	rec, err := tx.Get(stateKey(w.id))
	if err != nil {
		return err
	}
	cur, err := decodeState(rec)
	if err != nil {
		return err
	}
	if cur.Cursor != read.Cursor {
		return errMoved
	}
	return nil
}

// openSecret reads and unseals the subscription's signing secret. It never
// changes, so a worker reads it once.
func (w *worker) openSecret(ctx context.Context) (string, error) {
	rec, err := w.s.store.Get(ctx, w.p, secretKey(w.id))
	if err != nil {
		return "", err
	}
	return w.s.pii.Open(rec.Value, secretContext(w.p, w.name()))
}

// head returns the event to deliver next: the oldest manual redelivery
// (with its queue key), else the next live event, waiting for one up to a
// third of the lease or until a heartbeat is due. With nothing to deliver
// it sends the heartbeat when due, and saves how far the cursor moved over
// events the subscription does not want.
func (w *worker) head(ctx context.Context, sub *feedv1.Subscription, st state) (*typev1.Event, string, error) {
	recs, _, err := w.s.store.List(ctx, w.p, redoPrefix(w.id), "", 1)
	if err != nil {
		return nil, "", err
	}
	if len(recs) > 0 {
		ev := &typev1.Event{}
		if err := proto.Unmarshal(recs[0].Value, ev); err != nil {
			return nil, "", fmt.Errorf("decode %s: %w", recs[0].Key, err)
		}
		return ev, recs[0].Key, nil
	}
	if w.queueFor != sub.GetEtag() || w.expect != st.Cursor {
		w.queue = nil
	}
	if len(w.queue) > 0 {
		return w.queue[0], "", nil
	}
	pos, err := decodePosition(st.Cursor, "cursor", string(w.p), sub.GetFacility())
	if err != nil {
		return nil, "", fmt.Errorf("the stored cursor of %s: %w", w.name(), err)
	}
	wait := w.s.cfg.LeaseTTL / 3
	hb := sub.GetHeartbeatInterval().AsDuration()
	if hb > 0 {
		wait = max(min(wait, hb-time.Since(w.lastSent)), 0)
	}
	v := view{caller: reader(string(w.p), sub), types: sub.GetEventTypes(), since: st.Since}
	b, err := w.s.next(ctx, v, pos, batchSize, wait)
	if err != nil {
		return nil, "", err
	}
	if len(b.events) > 0 {
		w.queue, w.queueFor, w.expect = b.events, sub.GetEtag(), st.Cursor
		return w.queue[0], "", nil
	}
	if hb > 0 && time.Since(w.lastSent) >= hb {
		w.heartbeat(ctx, sub, st)
	}
	if next := b.next.encode(); next != st.Cursor {
		return nil, "", w.advance(ctx, st, next)
	}
	return nil, "", nil
}

// advance saves a cursor that moved over unwanted events only.
func (w *worker) advance(ctx context.Context, st state, cursor string) error {
	now := w.s.clock.Now()
	moved := st
	moved.Cursor = cursor
	return w.s.store.Txn(ctx, w.p, func(tx store.Tx) error {
		if err := w.guardState(tx, st, now); err != nil {
			return err
		}
		return tx.Put(stateKey(w.id), moved.encode())
	})
}

// heartbeatType is the event type of heartbeats.
const heartbeatType = "feed.heartbeat"

// heartbeat POSTs a heartbeat. It is not retried: the next one follows
// after the interval, and a receiver that misses them knows the link is
// down. A failure is written to the delivery log.
func (w *worker) heartbeat(ctx context.Context, sub *feedv1.Subscription, st state) {
	now := w.s.clock.Now()
	ev := &typev1.Event{
		Id:     fmt.Sprintf("%s/%s/%d", heartbeatType, w.id, now.UnixNano()),
		Type:   heartbeatType,
		Time:   timestamppb.New(now),
		Cursor: st.Cursor,
	}
	started := time.Now()
	code, err := w.s.webhook.post(ctx, sub.GetUrl(), w.secret, &feedv1.Notification{Subscription: sub.GetName(), Event: ev}, 1)
	w.lastSent = time.Now()
	if err == nil || ctx.Err() != nil {
		return
	}
	w.log(ctx, &feedv1.Delivery{
		EventId: ev.GetId(), EventType: heartbeatType, Outcome: feedv1.Delivery_OUTCOME_FAILED, Attempt: 1,
		Time: timestamppb.New(w.s.clock.Now()), Duration: durationpb.New(time.Since(started)), HttpStatus: int32(code), Error: describe(err),
	})
}

// expired writes CURSOR_EXPIRED to the log, at most once per RetryMax: the
// subscription fell behind the services' retention and delivers nothing
// until it is replaced.
func (w *worker) expired(ctx context.Context, err error) error {
	if time.Since(w.expiredAt) < w.s.cfg.RetryMax {
		return nil
	}
	w.expiredAt = time.Now()
	w.s.logger.WarnContext(ctx, "feed: a subscription fell behind the services' event retention", "subscription", w.name())
	return w.log(ctx, &feedv1.Delivery{Outcome: feedv1.Delivery_OUTCOME_CURSOR_EXPIRED, Time: timestamppb.New(w.s.clock.Now()), Error: err.Error()})
}

// entry names a delivery log entry and encodes it with its key.
func (w *worker) entry(d *feedv1.Delivery) (key string, data []byte, err error) {
	key = logKey(w.id, d.GetTime().AsTime())
	d.Name = w.name() + "/deliveries/" + strings.TrimPrefix(key, logPrefix(w.id))
	data, err = proto.Marshal(d)
	return key, data, err
}

// log writes an entry that changes no delivery state.
func (w *worker) log(ctx context.Context, d *feedv1.Delivery) error {
	key, data, err := w.entry(d)
	if err != nil {
		return err
	}
	return w.s.store.Txn(ctx, w.p, func(tx store.Tx) error { return tx.Create(key, data) })
}

// record writes the outcome of an attempt with the state it leads to, in
// one transaction: a final outcome (delivered, dead-lettered) moves the
// cursor past a live event or removes a manual one from its queue; a
// failure schedules the next attempt.
func (w *worker) record(ctx context.Context, read state, d *feedv1.Delivery, head *typev1.Event, redo string) error {
	key, data, err := w.entry(d)
	if err != nil {
		return err
	}
	final := d.GetOutcome() != feedv1.Delivery_OUTCOME_FAILED
	next := read
	if final {
		next.HeadID, next.Attempt, next.FirstFailure, next.NextAttempt = "", 0, time.Time{}, time.Time{}
		if redo == "" {
			next.Cursor = head.GetCursor()
		}
	} else {
		next.Attempt = int(d.GetAttempt())
		if next.FirstFailure.IsZero() {
			next.FirstFailure = d.GetTime().AsTime()
		}
		next.NextAttempt = d.GetNextAttemptTime().AsTime()
	}
	now := w.s.clock.Now()
	err = w.s.store.Txn(ctx, w.p, func(tx store.Tx) error {
		if err := w.guardState(tx, read, now); err != nil {
			return err
		}
		if final && redo != "" {
			if err := tx.Delete(redo, 0); err != nil {
				return err
			}
		}
		if err := tx.Put(stateKey(w.id), next.encode()); err != nil {
			return err
		}
		if err := tx.Create(key, data); err != nil {
			return err
		}
		if final {
			return tx.Put(logIndexKey(w.id, d.GetEventId()), []byte(key))
		}
		return nil
	})
	if err != nil {
		return err
	}
	w.s.metrics.observe(d, head)
	if final && redo == "" && len(w.queue) > 0 {
		w.queue, w.expect = w.queue[1:], next.Cursor
	}
	return nil
}
