// Package feed is the facility feed: one place where a township health
// center, a county system or an integrator learns everything that concerns
// its facility, merged from the change feeds of every MCC service, by
// long-polling or streaming (Poll, Watch) or through signed webhooks.
//
// The feed keeps no copy of the events. Its cursor is the composite of the
// cursors of every service's own feed, bound to one community and facility,
// so it stays valid across restarts of any process, and retention is the
// services' own: an expired cursor is an error, never a silent gap. The
// services are found generically, as every registered mcc.<name>.v1 service
// with ListEvents and WatchEvents, and read over their peer connections as
// the service role; the feed applies each event's facility rule itself
// (events.Visible), exactly as the services' own feeds do.
package feed

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/server"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "feed"

// Service implements feedv1.FeedServiceServer.
type Service struct {
	feedv1.UnimplementedFeedServiceServer

	store     store.Store
	clock     clock.Clock
	peers     *peer.Peers
	pii       *pii.Protector
	logger    *slog.Logger
	cfg       Config
	retention time.Duration
	feed      *events.Feed

	sources []*eventfeed.Source
	hub     *hub
	// lifetime ends, by stop, when Run does: the process is stopping.
	lifetime context.Context
	stop     context.CancelFunc
	webhook  *deliverer
	metrics  *metrics
	// kick wakes the dispatcher when a subscription changes here.
	kick chan struct{}
	// waiting holds a token for each open long poll and watch, when
	// Config.MaxWaiting bounds them.
	waiting chan struct{}
	// pages shares one ListEvents call among the readers that ask a source
	// for the same page at once, and readSlots bounds the calls in flight
	// (see listPage).
	pages     singleflight.Group
	readSlots chan struct{}
}

var _ feedv1.FeedServiceServer = (*Service)(nil)

// Deps are what the feed service is built from.
type Deps struct {
	Store  store.Store
	Clock  clock.Clock
	Peers  *peer.Peers
	PII    *pii.Protector
	Logger *slog.Logger
	// Retention is how long the services keep their events
	// (-events.retention), for the CURSOR_EXPIRED message.
	Retention time.Duration
	// Metrics, if set, receives the webhook delivery metrics.
	Metrics prometheus.Registerer
}

// New returns the feed service. Its sources are the services registered in
// the process's proto registry that d.Peers has a connection to.
func New(d Deps, cfg Config) (*Service, error) {
	deliver, err := newDeliverer(cfg, d.Clock)
	if err != nil {
		return nil, err
	}
	lifetime, stop := context.WithCancel(context.Background())
	s := &Service{
		store: d.Store, clock: d.Clock, peers: d.Peers, pii: d.PII, logger: d.Logger, cfg: cfg,
		retention: d.Retention, feed: events.NewFeed(d.Store, Name), lifetime: lifetime, stop: stop, webhook: deliver,
		kick: make(chan struct{}, 1), metrics: newMetrics(d.Metrics), readSlots: make(chan struct{}, directReads),
	}
	if cfg.MaxWaiting > 0 {
		s.waiting = make(chan struct{}, cfg.MaxWaiting)
	}
	var missing []string
	s.sources, missing = eventfeed.Discover(protoregistry.GlobalFiles, d.Peers)
	if len(missing) > 0 {
		d.Logger.Info("feed: services without a connection are left out of the feed; their cursor positions are kept", "services", missing)
	}
	s.hub = newHub(lifetime, d.Peers.AsService, cfg.CacheEvents, cfg.CacheIdle, d.Logger)
	go s.hub.sweep()
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) {
	feedv1.RegisterFeedServiceServer(srv, s)
}

// Policy opens every method to every role of the community. Reading the
// feed is what each facility does; a webhook delivers to its URL nothing
// more than the same token could read from the feed, and a subscription an
// administrator made (community-wide) can only be changed by an
// administrator.
func Policy() auth.Policy {
	const svc = "/" + "mcc.feed.v1.FeedService/"
	everyone := auth.AnyRole()
	p := auth.Policy{}
	for _, m := range []string{
		"Poll", "Watch", "CreateSubscription", "GetSubscription", "ListSubscriptions", "UpdateSubscription",
		"DeleteSubscription", "ListDeliveries", "RedeliverEvents", "ListEvents", "WatchEvents",
	} {
		p[svc+m] = everyone
	}
	return p
}

// Run delivers webhooks until ctx ends, then stops following the services.
func (s *Service) Run(ctx context.Context) error {
	defer s.stop()
	return s.dispatch(ctx)
}

// pageDefault and pageMax bound the events of one Poll.
const (
	pageDefault = 100
	pageMax     = 1000
)

// waitMargin is kept between the end of a long poll and the call's
// deadline, so the answer arrives before the deadline cuts the call.
const waitMargin = 500 * time.Millisecond

// Poll returns the next events of the caller's feed, waiting for one if
// there is none yet.
func (s *Service) Poll(ctx context.Context, req *feedv1.PollRequest) (*feedv1.PollResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	pos, err := callerPosition(req.GetAfter(), "after", c)
	if err != nil {
		return nil, err
	}
	wait := req.GetWait().AsDuration()
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)-waitMargin)
	}
	size := pageDefault
	if req.GetPageSize() > 0 {
		size = min(int(req.GetPageSize()), pageMax)
	}
	if wait > 0 {
		release, err := s.admitWaiting()
		if err != nil {
			return nil, err
		}
		defer release()
	}
	b, err := s.next(ctx, view{caller: c}, pos, size, wait)
	if err != nil {
		return nil, err
	}
	return &feedv1.PollResponse{Events: b.events, NextCursor: b.next.encode(), UnavailableSources: b.unavailable}, nil
}

// waitingRetry is the Retry-After of a long poll or watch refused because
// too many are open.
const waitingRetry = 5 * time.Second

// admitWaiting takes a place for a long poll or a watch, or refuses it
// with ResourceExhausted and a RetryInfo when Config.MaxWaiting are open.
// release gives the place back. The mcc_feed_waiting gauge counts the
// places taken.
func (s *Service) admitWaiting() (release func(), err error) {
	if s.waiting != nil {
		select {
		case s.waiting <- struct{}{}:
		default:
			st := status.Newf(codes.ResourceExhausted, "%d long polls and watches of the feed are open in this process, its limit; retry later, or poll without waiting", cap(s.waiting))
			st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(waitingRetry)})
			return nil, st.Err()
		}
	}
	s.metrics.waiting.Inc()
	return func() {
		s.metrics.waiting.Dec()
		if s.waiting != nil {
			<-s.waiting
		}
	}, nil
}

// watchWait is how long one round of Watch waits before it reads again.
const watchWait = 30 * time.Second

// Watch streams the caller's feed: the backlog, then each new event.
func (s *Service) Watch(req *feedv1.WatchRequest, stream grpc.ServerStreamingServer[feedv1.WatchResponse]) error {
	ctx := stream.Context()
	c, err := auth.Require(ctx)
	if err != nil {
		return err
	}
	pos, err := callerPosition(req.GetAfter(), "after", c)
	if err != nil {
		return err
	}
	release, err := s.admitWaiting()
	if err != nil {
		return err
	}
	defer release()
	for {
		b, err := s.next(ctx, view{caller: c}, pos, pageMax, watchWait)
		if err != nil {
			return err
		}
		for _, ev := range b.events {
			if err := stream.Send(&feedv1.WatchResponse{Event: ev}); err != nil {
				return err
			}
		}
		pos = b.next
		if s.lifetime.Err() != nil {
			return server.ErrStopping
		}
	}
}

// ListEvents returns a page of the feed service's own change feed.
func (s *Service) ListEvents(ctx context.Context, req *feedv1.ListEventsRequest) (*feedv1.ListEventsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	evs, next, err := s.feed.List(ctx, c, req.GetAfter(), req.GetPageSize())
	if err != nil {
		return nil, err
	}
	return &feedv1.ListEventsResponse{Events: evs, NextCursor: next}, nil
}

// WatchEvents streams the feed service's own change feed.
func (s *Service) WatchEvents(req *feedv1.WatchEventsRequest, stream grpc.ServerStreamingServer[feedv1.WatchEventsResponse]) error {
	c, err := auth.Require(stream.Context())
	if err != nil {
		return err
	}
	return s.feed.Watch(stream.Context(), c, req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&feedv1.WatchEventsResponse{Event: ev})
	})
}
