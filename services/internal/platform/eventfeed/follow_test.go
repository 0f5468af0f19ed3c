package eventfeed_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoregistry"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
)

// service is a service's event log behind a fake connection: event i has
// cursor "i". Its streams send the log after their cursor and then wait
// for more; they can be broken, or made to send nothing (stuck).
type service struct {
	mu      sync.Mutex
	log     []*typev1.Event
	grew    chan struct{} // closed and replaced when the log grows or streams break
	stuck   bool
	broken  int // streams opened before this count fail
	opened  int
	watches []string // the cursor of each Watch
}

func newService() *service { return &service{grew: make(chan struct{})} }

func (s *service) append(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		i := len(s.log) + 1
		s.log = append(s.log, &typev1.Event{Id: fmt.Sprintf("e%d", i), Cursor: strconv.Itoa(i)})
	}
	close(s.grew)
	s.grew = make(chan struct{})
}

// breakStreams fails every stream open now.
func (s *service) breakStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broken = s.opened
	close(s.grew)
	s.grew = make(chan struct{})
}

func (s *service) after(cursor string) []*typev1.Event {
	n := 0
	if cursor != "" {
		n, _ = strconv.Atoi(cursor)
	}
	return s.log[min(n, len(s.log)):]
}

func (s *service) Invoke(_ context.Context, _ string, args, reply any, _ ...grpc.CallOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	evs := s.after(args.(*feedv1.ListEventsRequest).GetAfter())
	reply.(*feedv1.ListEventsResponse).Events = evs[:min(len(evs), int(args.(*feedv1.ListEventsRequest).GetPageSize()))]
	return nil
}

func (s *service) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened++
	return &stream{ctx: ctx, s: s, n: s.opened, stuck: s.stuck}, nil
}

type stream struct {
	ctx    context.Context
	s      *service
	n      int
	stuck  bool
	cursor string
}

func (st *stream) SendMsg(m any) error {
	st.cursor = m.(*feedv1.WatchEventsRequest).GetAfter()
	st.s.mu.Lock()
	st.s.watches = append(st.s.watches, st.cursor)
	st.s.mu.Unlock()
	return nil
}

func (st *stream) RecvMsg(m any) error {
	for {
		st.s.mu.Lock()
		if st.n <= st.s.broken {
			st.s.mu.Unlock()
			return status.Error(codes.Unavailable, "connection lost")
		}
		evs, grew := st.s.after(st.cursor), st.s.grew
		st.s.mu.Unlock()
		if len(evs) > 0 && !st.stuck {
			m.(*feedv1.WatchEventsResponse).Event = evs[0]
			st.cursor = evs[0].GetCursor()
			return nil
		}
		select {
		case <-st.ctx.Done():
			return status.FromContextError(st.ctx.Err()).Err()
		case <-grew:
		}
	}
}

func (st *stream) Header() (metadata.MD, error) { return nil, nil }
func (st *stream) Trailer() metadata.MD         { return nil }
func (st *stream) CloseSend() error             { return nil }
func (st *stream) Context() context.Context     { return st.ctx }

// applied records what a follower applied, as a store would, and its
// batches.
type applied struct {
	mu      sync.Mutex
	ids     []string
	cursor  string
	batches []int
	failed  []error
}

func (a *applied) follower(t *testing.T, svc *service) *eventfeed.Follower {
	src, err := eventfeed.New(protoregistry.GlobalFiles, "lab", svc)
	if err != nil {
		t.Fatal(err)
	}
	return &eventfeed.Follower{
		Source: src,
		Open: func(ctx context.Context) (context.Context, string, error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			return ctx, a.cursor, nil
		},
		Apply: func(_ context.Context, evs []*typev1.Event) error {
			a.mu.Lock()
			defer a.mu.Unlock()
			for _, ev := range evs {
				a.ids = append(a.ids, ev.GetId())
			}
			a.cursor = evs[len(evs)-1].GetCursor()
			a.batches = append(a.batches, len(evs))
			return nil
		},
		Failed: func(_ context.Context, err error) bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.failed = append(a.failed, err)
			return status.Code(err) != codes.PermissionDenied
		},
		MaxBatch: 4, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
	}
}

func (a *applied) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFollowerAppliesInOrderAndResumesAfterTheLastApplied(t *testing.T) {
	svc := newService()
	svc.append(10)
	var a applied
	f := a.follower(t, svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()

	waitFor(t, "10 events applied", func() bool { return a.count() == 10 })
	svc.breakStreams()
	svc.append(5)
	waitFor(t, "15 events applied", func() bool { return a.count() == 15 })
	cancel()
	<-done

	for i, id := range a.ids {
		if want := fmt.Sprintf("e%d", i+1); id != want {
			t.Fatalf("event %d applied is %s, want %s (all: %v)", i, id, want, a.ids)
		}
	}
	for _, n := range a.batches {
		if n > 4 {
			t.Errorf("a batch of %d events, want at most MaxBatch 4", n)
		}
	}
	if len(svc.watches) < 2 || svc.watches[0] != "" || svc.watches[len(svc.watches)-1] != "10" {
		t.Errorf("watches after %q, want the first from the start and the last after 10", svc.watches)
	}
	if len(a.failed) == 0 || status.Code(a.failed[0]) != codes.Unavailable {
		t.Errorf("Failed was told %v, want the broken stream's Unavailable first", a.failed)
	}
}

func TestFollowerStopsWhenFailedSaysSo(t *testing.T) {
	svc := newService()
	var a applied
	f := a.follower(t, svc)
	f.Open = func(ctx context.Context) (context.Context, string, error) {
		return nil, "", status.Error(codes.PermissionDenied, "not this service's")
	}
	done := make(chan struct{})
	go func() { f.Run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run goes on after Failed returned false")
	}
}

func TestFollowerEndsAStalledStream(t *testing.T) {
	svc := newService()
	svc.append(3)
	svc.stuck = true
	var a applied
	f := a.follower(t, svc)
	f.Probe = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)

	// The stuck stream sends nothing although the service has 3 events:
	// the probe ends it with ErrStalled, and the next stream delivers.
	waitFor(t, "a stall found", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.failed) > 0
	})
	svc.mu.Lock()
	svc.stuck = false
	svc.mu.Unlock()
	waitFor(t, "3 events applied", func() bool { return a.count() == 3 })
	a.mu.Lock()
	defer a.mu.Unlock()
	if !errors.Is(a.failed[0], eventfeed.ErrStalled) {
		t.Errorf("the stuck stream ended with %v, want ErrStalled", a.failed[0])
	}
}

func TestFollowerDoesNotProbeAQuietServiceAway(t *testing.T) {
	svc := newService()
	svc.append(2)
	var a applied
	f := a.follower(t, svc)
	f.Probe = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go f.Run(ctx)
	waitFor(t, "2 events applied", func() bool { return a.count() == 2 })
	time.Sleep(100 * time.Millisecond)
	cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.failed) > 0 {
		t.Errorf("a stream with nothing to send was ended: %v", a.failed)
	}
}
