package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

var subscriptions = resource.Table[*feedv1.Subscription]{
	Collection: "subscriptions",
	Prefix:     "sub/",
	New:        func() *feedv1.Subscription { return &feedv1.Subscription{} },
	Event:      "subscription",
	Mutable:    []string{"url", "event_types", "heartbeat_interval"},
	// A subscription's events concern the facility it belongs to.
	Facilities: func(s *feedv1.Subscription) []string { return []string{s.GetFacility()} },
}

// The other keys of a subscription, next to its resource: the sealed
// secret, the delivery state, the lease, the delivery log with its index
// by event, the queue of manual redeliveries, and the tombstone a deletion
// leaves until all of these are gone.
func secretKey(id string) string          { return "secret/" + id }
func stateKey(id string) string           { return "state/" + id }
func leaseKey(id string) string           { return "lease/" + id }
func logPrefix(id string) string          { return "dlv/" + id + "/" }
func logIndexKey(id, event string) string { return "dlvev/" + id + "/" + event }
func redoPrefix(id string) string         { return "redo/" + id + "/" }
func redoSeqKey(id string) string         { return "redoseq/" + id }
func goneKey(id string) string            { return "gone/" + id }

// minHeartbeat is the shortest heartbeat interval.
const minHeartbeat = time.Second

// state is where a subscription's deliveries stand. It changes only after
// a delivery succeeded, failed or was dead-lettered, so a process killed
// in the middle of a POST sends the same event again after its restart.
type state struct {
	// Cursor is the merged feed position after the last event delivered
	// or dead-lettered.
	Cursor string `json:"cursor"`
	// Since skips the events from before the subscription was created.
	Since time.Time `json:"since,omitzero"`
	// HeadID is the event being retried, with its attempts so far, the
	// time of its first failure and when it is tried next.
	HeadID       string    `json:"head,omitempty"`
	Attempt      int       `json:"attempt,omitempty"`
	FirstFailure time.Time `json:"first_failure,omitzero"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
}

func (st state) encode() []byte { return mustJSON(st) }

// mustJSON encodes the small records of this package (state, lease), which
// hold only strings, integers and times and so always marshal.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeState(rec store.Record) (state, error) {
	var st state
	if err := json.Unmarshal(rec.Value, &st); err != nil {
		return state{}, fmt.Errorf("decode %s: %w", rec.Key, err)
	}
	return st, nil
}

// visible reports whether c may see and manage sub: administrators see
// every subscription of the community; others those of their facility,
// except community-wide ones, which only administrators may change.
func visible(c auth.Caller, sub *feedv1.Subscription) bool {
	return c.SeesCommunity() || sub.GetFacility() == c.Facility && !sub.GetCommunityWide()
}

// reader is the caller whose rights a subscription's deliveries have: its
// facility, and the whole community for one an administrator made.
func reader(community string, sub *feedv1.Subscription) auth.Caller {
	c := auth.Caller{Subject: sub.GetName(), Community: community, Facility: sub.GetFacility()}
	if sub.GetCommunityWide() {
		c.Roles = []typev1.Role{typev1.Role_ROLE_ADMIN}
	}
	return c
}

// secretContext binds a sealed secret to its community and subscription.
func secretContext(p store.Partition, name string) string {
	return string(p) + "/" + name + "/secret"
}

// checkSettings checks the fields of a subscription that protovalidate
// cannot: the URL against the guard (which may resolve the host, so it
// runs outside any transaction) and the heartbeat's lower bound.
func (s *Service) checkSettings(ctx context.Context, sub *feedv1.Subscription, checkURL bool) error {
	if checkURL {
		if err := s.webhook.guard.checkURL(ctx, sub.GetUrl()); err != nil {
			return apierr.Invalid("subscription.url", "%s", err.Error())
		}
	}
	if hb := sub.GetHeartbeatInterval().AsDuration(); hb != 0 && hb < minHeartbeat {
		return apierr.Invalid("subscription.heartbeat_interval", "must be 0 (none) or at least %s", minHeartbeat)
	}
	return nil
}

// CreateSubscription subscribes a webhook to the caller's feed.
func (s *Service) CreateSubscription(ctx context.Context, req *feedv1.CreateSubscriptionRequest) (*feedv1.CreateSubscriptionResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	p := c.Partition()
	sub := proto.CloneOf(req.GetSubscription())
	if err := s.checkSettings(ctx, sub, true); err != nil {
		return nil, err
	}
	id := req.GetSubscriptionId()
	if id == "" {
		id = uuid.NewString()
	}
	sub.Name = subscriptions.Name(id)
	sub.Facility = c.Facility
	sub.CommunityWide = c.SeesCommunity()
	now := s.clock.Now()
	st := state{Cursor: startOf(c.Community, c.Facility).encode(), Since: now}
	if req.GetStartCursor() != "" {
		pos, err := callerPosition(req.GetStartCursor(), "start_cursor", c)
		if err != nil {
			return nil, err
		}
		st = state{Cursor: pos.encode()}
	}
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	sealed, err := s.pii.Seal(secret, secretContext(p, sub.GetName()))
	if err != nil {
		return nil, err
	}
	var out *feedv1.Subscription
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		if name, found, err := idem.Lookup(tx, c, req.GetRequestId()); err != nil || found {
			if err != nil {
				return err
			}
			// A retry returns the first call's subscription and secret.
			if out, _, err = subscriptions.Get(tx, name); err != nil {
				return err
			}
			rec, err := tx.Get(secretKey(subscriptions.ID(name)))
			sealed = rec.Value
			return err
		}
		if _, err := tx.Get(goneKey(id)); err == nil {
			return apierr.Condition("SUBSCRIPTION_BEING_DELETED", "%s was deleted and is still being cleaned up; choose another subscription_id or retry in a minute", sub.GetName())
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		created := proto.CloneOf(sub)
		resource.Stamp(created, now, true)
		if err := subscriptions.Create(tx, created); err != nil {
			return err
		}
		if err := tx.Create(secretKey(id), sealed); err != nil {
			return err
		}
		if err := tx.Put(stateKey(id), st.encode()); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, req.GetRequestId(), created.GetName()); err != nil {
			return err
		}
		out = created
		return events.Append(tx, c, now, subscriptions.Change("subscription.created", created, 1))
	})
	if err != nil {
		return nil, err
	}
	if secret, err = s.pii.Open(sealed, secretContext(p, out.GetName())); err != nil {
		return nil, fmt.Errorf("open the secret of %s: %w", out.GetName(), err)
	}
	s.wake()
	return &feedv1.CreateSubscriptionResponse{Subscription: out, Secret: secret}, nil
}

// GetSubscription returns a subscription the caller may see.
func (s *Service) GetSubscription(ctx context.Context, req *feedv1.GetSubscriptionRequest) (*feedv1.GetSubscriptionResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	sub, err := s.loadVisible(ctx, c, req.GetName())
	if err != nil {
		return nil, err
	}
	return &feedv1.GetSubscriptionResponse{Subscription: sub}, nil
}

// loadVisible reads a subscription, which is NotFound unless the caller
// may see it: whether another facility's subscription exists must not leak.
func (s *Service) loadVisible(ctx context.Context, c auth.Caller, name string) (*feedv1.Subscription, error) {
	sub, err := subscriptions.Load(ctx, s.store, c.Partition(), name)
	if err != nil {
		return nil, err
	}
	if !visible(c, sub) {
		return nil, fmt.Errorf("%s: %w", name, store.ErrNotFound)
	}
	return sub, nil
}

// ListSubscriptions lists the subscriptions the caller may see.
func (s *Service) ListSubscriptions(ctx context.Context, req *feedv1.ListSubscriptionsRequest) (*feedv1.ListSubscriptionsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := subscriptions.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), c.Facility, func(sub *feedv1.Subscription) bool {
		return visible(c, sub)
	})
	if err != nil {
		return nil, err
	}
	return &feedv1.ListSubscriptionsResponse{Subscriptions: list, NextPageToken: next}, nil
}

// UpdateSubscription changes a subscription's URL, event types or
// heartbeat.
func (s *Service) UpdateSubscription(ctx context.Context, req *feedv1.UpdateSubscriptionRequest) (*feedv1.UpdateSubscriptionResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	in := req.GetSubscription()
	if err := s.checkSettings(ctx, in, len(paths) == 0 || slices.Contains(paths, "url")); err != nil {
		return nil, err
	}
	out, err := subscriptions.StandardUpdate(ctx, s.store, c, in, req.GetUpdateMask(), s.clock.Now(), func(_ store.Tx, sub *feedv1.Subscription) error {
		if !visible(c, sub) {
			return fmt.Errorf("%s: %w", sub.GetName(), store.ErrNotFound)
		}
		if sub.GetUrl() == "" {
			return apierr.Invalid("subscription.url", "cannot be cleared")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.wake()
	return &feedv1.UpdateSubscriptionResponse{Subscription: out}, nil
}

// DeleteSubscription removes a subscription. Its worker stops at its next
// step; the dispatcher removes its log and queue in the background, from
// the tombstone written here.
func (s *Service) DeleteSubscription(ctx context.Context, req *feedv1.DeleteSubscriptionRequest) (*feedv1.DeleteSubscriptionResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		sub, version, err := subscriptions.Get(tx, req.GetName())
		if err != nil {
			return err
		}
		if !visible(c, sub) {
			return fmt.Errorf("%s: %w", req.GetName(), store.ErrNotFound)
		}
		if err := resource.CheckEtag(req.GetName(), req.GetEtag(), version); err != nil {
			return err
		}
		if err := tx.Delete(subscriptions.Key(req.GetName()), version); err != nil {
			return err
		}
		if err := tx.Put(goneKey(subscriptions.ID(req.GetName())), nil); err != nil {
			return err
		}
		return events.Append(tx, c, now, subscriptions.Change("subscription.deleted", sub, version+1))
	})
	if err != nil {
		return nil, err
	}
	s.wake()
	return &feedv1.DeleteSubscriptionResponse{}, nil
}

// wake makes the dispatcher look at the subscriptions now.
func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// errGone reports a subscription deleted while its worker ran.
var errGone = errors.New("subscription deleted")
