package feed_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// poll reads the whole feed after cursor without waiting, and returns the
// resources of its events and the cursor after them.
func poll(t *testing.T, client feedv1.FeedServiceClient, ctx context.Context, after string) ([]string, string) {
	t.Helper()
	var names []string
	for {
		resp, err := client.Poll(ctx, &feedv1.PollRequest{After: after, PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			names = append(names, ev.GetType()+" "+ev.GetResource())
		}
		after = resp.GetNextCursor()
		if len(resp.GetEvents()) == 0 {
			return names, after
		}
	}
}

func TestPollShowsEachFacilityItsOwnEvents(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	f.village(t, "dls-1", "dls")
	f.village(t, "wjh-1", "wjh")

	tests := []struct {
		name string
		ctx  context.Context
		want []string
	}{
		{"township dls", f.clinic(t, "dls"), []string{"facility.created facilities/dls", "facility.created facilities/dls-1"}},
		{"township wjh", f.clinic(t, "wjh"), []string{"facility.created facilities/wjh", "facility.created facilities/wjh-1"}},
		{"village dls-1", f.clinic(t, "dls-1"), []string{"facility.created facilities/dls-1"}},
		{"administrator sees the community", f.admin(t), []string{
			"facility.created facilities/qrmyy", "facility.created facilities/dls", "facility.created facilities/wjh",
			"facility.created facilities/dls-1", "facility.created facilities/wjh-1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cursor := poll(t, f.feed, tt.ctx, "")
			if !slices.Equal(got, tt.want) {
				t.Errorf("feed = %q, want %q", got, tt.want)
			}
			// The cursor resumes after everything: nothing is read twice.
			if again, _ := poll(t, f.feed, tt.ctx, cursor); len(again) != 0 {
				t.Errorf("after the end cursor: %q", again)
			}
		})
	}
}

func TestPollWaitsForTheNextEvent(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	ctx := f.clinic(t, "dls")
	_, cursor := poll(t, f.feed, ctx, "")

	type answer struct {
		resp *feedv1.PollResponse
		err  error
		took time.Duration
	}
	done := make(chan answer, 1)
	go func() {
		start := time.Now()
		resp, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(10 * time.Second)})
		done <- answer{resp, err, time.Since(start)}
	}()
	time.Sleep(100 * time.Millisecond)
	f.village(t, "wjh-1", "wjh") // not dls's: the poll keeps waiting
	f.village(t, "dls-1", "dls")
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if len(a.resp.GetEvents()) != 1 || a.resp.GetEvents()[0].GetResource() != "facilities/dls-1" || a.took > 5*time.Second {
		t.Fatalf("after %v: %v", a.took, a.resp.GetEvents())
	}
	// The event carries what the directory recorded: version, time, actor
	// and snapshot.
	ev := a.resp.GetEvents()[0]
	snap := &directoryv1.Facility{}
	if err := ev.GetSnapshot().UnmarshalTo(snap); err != nil || snap.GetDisplayName() != "卫生室 dls-1" || ev.GetResourceEtag() != "1" || ev.GetActor().GetFacility() != "facilities/qrmyy" {
		t.Errorf("event %v (snapshot %v, %v)", ev, snap, err)
	}

	// A wait with nothing to come ends on time, with a cursor.
	start := time.Now()
	resp, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: a.resp.GetNextCursor(), Wait: durationpb.New(300 * time.Millisecond)})
	if err != nil || len(resp.GetEvents()) != 0 || resp.GetNextCursor() == "" || time.Since(start) < 250*time.Millisecond {
		t.Errorf("empty wait: %v, %v after %v", resp, err, time.Since(start))
	}
}

func TestWatchStreamsBacklogThenNewEvents(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	ctx, cancel := context.WithCancel(f.clinic(t, "dls"))
	defer cancel()
	stream, err := f.feed.Watch(ctx, &feedv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetEvent().GetResource() != "facilities/dls" {
		t.Fatalf("backlog: %v, %v", first, err)
	}
	f.village(t, "dls-1", "dls")
	next, err := stream.Recv()
	if err != nil || next.GetEvent().GetResource() != "facilities/dls-1" {
		t.Fatalf("live: %v, %v", next, err)
	}
	// Resuming with the streamed event's cursor starts right after it.
	if rest, _ := poll(t, f.feed, f.clinic(t, "dls"), next.GetEvent().GetCursor()); len(rest) != 0 {
		t.Errorf("after the last streamed event: %q", rest)
	}
}

// wantReason checks a FailedPrecondition's ErrorInfo reason and metadata.
func wantReason(t *testing.T, err error, reason string, metadata map[string]string) {
	t.Helper()
	servertest.WantReason(t, err, reason)
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			for k, v := range metadata {
				if info.GetMetadata()[k] != v {
					t.Errorf("metadata %s = %q, want %q", k, info.GetMetadata()[k], v)
				}
			}
		}
	}
}

func TestBadCursors(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	_, dlsCursor := poll(t, f.feed, f.clinic(t, "dls"), "")
	stranger := f.As(t, "elsewhere", "dls", clinician)
	_, strangerCursor := poll(t, f.feed, stranger, "")

	tests := []struct {
		name   string
		ctx    context.Context
		cursor string
	}{
		{"another facility's cursor", f.clinic(t, "wjh"), dlsCursor},
		{"another community's cursor", f.clinic(t, "dls"), strangerCursor},
		{"not base64", f.clinic(t, "dls"), "not a cursor!"},
		{"base64 of something else", f.clinic(t, "dls"), base64.RawURLEncoding.EncodeToString([]byte(`{"v":9}`))},
		{"a service's own cursor", f.clinic(t, "dls"), base64.RawURLEncoding.EncodeToString([]byte("directory|urad|3"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.feed.Poll(tt.ctx, &feedv1.PollRequest{After: tt.cursor})
			servertest.WantField(t, err, "after")
			stream, err := f.feed.Watch(tt.ctx, &feedv1.WatchRequest{After: tt.cursor})
			if err == nil {
				_, err = stream.Recv()
			}
			servertest.WantField(t, err, "after")
		})
	}

	t.Run("a valid cursor with a forged position of a service", func(t *testing.T) {
		forged := base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"c":"urad","f":"facilities/dls","s":{"directory":"bm9wZQ"}}`))
		_, err := f.feed.Poll(f.clinic(t, "dls"), &feedv1.PollRequest{After: forged})
		servertest.WantField(t, err, "after")
	})
}

func TestExpiredCursorSaysHowToResynchronize(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	ctx := f.admin(t)
	first, err := f.feed.Poll(ctx, &feedv1.PollRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.village(t, "dls-1", "dls")
	// Retention trims everything older than a cutoff in the future: all
	// but the newest event.
	if _, err := events.Retain(context.Background(), f.dirStore, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, err = f.feed.Poll(ctx, &feedv1.PollRequest{After: first.GetNextCursor()})
	wantReason(t, err, events.ReasonCursorExpired, map[string]string{"source": directory.Name})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "resynchronize") || !strings.Contains(msg, "without a cursor") || !strings.Contains(msg, "30 days") {
		t.Errorf("message %q does not say how to resynchronize", msg)
	}
	stream, err := f.feed.Watch(ctx, &feedv1.WatchRequest{After: first.GetNextCursor()})
	if err == nil {
		_, err = stream.Recv()
	}
	wantReason(t, err, events.ReasonCursorExpired, nil)

	// Starting over works: the feed begins at the oldest event kept.
	got, _ := poll(t, f.feed, ctx, "")
	if len(got) == 0 || got[len(got)-1] != "facility.created facilities/dls-1" {
		t.Errorf("after resynchronizing: %q", got)
	}
}

// TestASourceThatIsDownOrMissingLosesNothing reads with a feed service whose
// directory connection is dead, and with one that has none, between reads
// of a working one: the other sources keep flowing, and the directory's
// events of the meantime all come once it is back.
func TestASourceThatIsDownOrMissingLosesNothing(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	c := caller("dls")
	ctx := auth.WithCaller(context.Background(), c)
	_, cursor := poll(t, f.feed, f.clinic(t, "dls"), "")

	for _, tt := range []struct {
		name    string
		village string
		conns   map[string]*grpc.ClientConn
		want    []string
	}{
		{"directory down", "v-down", map[string]*grpc.ClientConn{directory.Name: deadConn(t), feed.Name: f.Conn}, []string{directory.Name}},
		{"directory not deployed", "v-missing", map[string]*grpc.ClientConn{feed.Name: f.Conn}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			broken, _ := f.service(t, testConfig(), tt.conns)
			f.village(t, tt.village, "dls")
			sub, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{Subscription: &feedv1.Subscription{Url: "https://10.0.0.1/hook"}})
			if err != nil {
				t.Fatal(err)
			}
			// The broken service answers at once with what it can read,
			// and says which service it could not.
			resp, err := broken.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetEvents()) != 1 || resp.GetEvents()[0].GetResource() != sub.GetSubscription().GetName() {
				t.Fatalf("events %v", resp.GetEvents())
			}
			if !slices.Equal(resp.GetUnavailableSources(), tt.want) {
				t.Errorf("unavailable %q, want %q", resp.GetUnavailableSources(), tt.want)
			}
			// The working service, from the broken one's cursor, still
			// has the village the broken one could not read, and only it.
			got, next := poll(t, f.feed, f.clinic(t, "dls"), resp.GetNextCursor())
			if !slices.Equal(got, []string{"facility.created facilities/" + tt.village}) {
				t.Fatalf("after the outage: %q", got)
			}
			cursor = next
		})
	}
}

func TestSubscriptionEventsAreInTheFeed(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	sub, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{Subscription: &feedv1.Subscription{Url: "https://10.0.0.1/hook"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := poll(t, f.feed, f.clinic(t, "dls"), "")
	if !slices.Contains(got, "subscription.created "+sub.GetSubscription().GetName()) {
		t.Errorf("feed %q has no subscription.created", got)
	}
	if other, _ := poll(t, f.feed, f.clinic(t, "wjh"), ""); slices.Contains(other, "subscription.created "+sub.GetSubscription().GetName()) {
		t.Errorf("another facility sees the subscription: %q", other)
	}
}

// TestPerSourceOrderUnderConcurrentWrites writes from several clients while
// a reader follows the feed with long polls, and checks that each
// resource's versions arrive in order and that none is missing.
func TestPerSourceOrderUnderConcurrentWrites(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	const writers, updates = 4, 25
	done := make(chan error, writers)
	for w := range writers {
		go func() {
			id := "v" + string(rune('a'+w))
			_, err := f.dir.CreateFacility(f.admin(t), &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{
				DisplayName: id, Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC, Parent: "facilities/dls",
			}})
			for i := 0; err == nil && i < updates; i++ {
				_, err = f.dir.UpdateFacility(f.admin(t), &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{
					Name: "facilities/" + id, DisplayName: id + " v" + string(rune('0'+i%10)), Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC, Parent: "facilities/dls",
				}})
			}
			done <- err
		}()
	}
	ctx := f.clinic(t, "dls")
	versions := map[string]int{}
	cursor, total := "", 0
	want := 1 + writers*(1+updates)
	for until := time.Now().Add(20 * time.Second); total < want && time.Now().Before(until); {
		resp, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(2 * time.Second), PageSize: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			v := 0
			for _, c := range ev.GetResourceEtag() {
				v = v*10 + int(c-'0')
			}
			if v != versions[ev.GetResource()]+1 {
				t.Fatalf("%s: version %d after %d", ev.GetResource(), v, versions[ev.GetResource()])
			}
			versions[ev.GetResource()] = v
			total++
		}
		cursor = resp.GetNextCursor()
	}
	for range writers {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if total != want {
		t.Errorf("read %d events, want %d", total, want)
	}
}

func TestFeedNeedsAToken(t *testing.T) {
	f := newFixture(t, testConfig())
	_, err := f.feed.Poll(context.Background(), &feedv1.PollRequest{})
	servertest.WantCode(t, err, codes.Unauthenticated)
	_, err = f.feed.Poll(f.clinic(t, "dls"), &feedv1.PollRequest{Wait: durationpb.New(2 * time.Minute)})
	servertest.WantField(t, err, "wait")
}

// TestLongPollsAreBounded: beyond -feed.max-waiting open long polls and
// watches, more are refused at once with ResourceExhausted and a retry
// delay, while polls that do not wait are served; a place freed is taken
// again.
func TestLongPollsAreBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxWaiting = 1
	f := newFixture(t, cfg)
	f.county(t)
	ctx := f.clinic(t, "dls")
	_, cursor := poll(t, f.feed, ctx, "")

	// The first long poll takes the one place.
	done := make(chan error, 1)
	go func() {
		_, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(10 * time.Second)})
		done <- err
	}()
	waitFor(t, 5*time.Second, "the first long poll to take its place", func() bool { return f.svc.Waiting() == 1 })
	refused := func(err error) bool {
		if status.Code(err) != codes.ResourceExhausted {
			return false
		}
		for _, d := range status.Convert(err).Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
				return true
			}
		}
		t.Errorf("refused without a RetryInfo: %v", err)
		return true
	}
	// While it holds the place, a second is refused.
	_, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(50 * time.Millisecond)})
	if !refused(err) {
		t.Fatalf("a second long poll beyond the bound: %v, want ResourceExhausted", err)
	}
	stream, err := f.feed.Watch(ctx, &feedv1.WatchRequest{After: cursor})
	if err == nil {
		_, err = stream.Recv()
	}
	if !refused(err) {
		t.Errorf("a watch beyond the bound: %v, want ResourceExhausted", err)
	}
	if _, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor}); err != nil {
		t.Errorf("a poll without a wait: %v", err)
	}

	// The event ends the first poll; its place is free again.
	f.village(t, "dls-1", "dls")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(100 * time.Millisecond)}); err != nil {
		t.Errorf("a long poll after the place was freed: %v", err)
	}
	if n := f.svc.Waiting(); n != 0 {
		t.Errorf("mcc_feed_waiting = %d after every long poll ended, want 0", n)
	}
}

// TestStoppingEndsLongPollsAndWatches: when the feed stops, as it does
// when its process shuts down, an open long poll is answered at once with
// its page and cursor and an open watch ends UNAVAILABLE, which clients
// retry; neither holds up the shutdown.
func TestStoppingEndsLongPollsAndWatches(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	ctx, cancel := context.WithTimeout(f.clinic(t, "dls"), 30*time.Second)
	defer cancel()
	_, cursor := poll(t, f.feed, ctx, "")
	type answer struct {
		resp *feedv1.PollResponse
		err  error
	}
	polled := make(chan answer, 1)
	go func() {
		resp, err := f.feed.Poll(ctx, &feedv1.PollRequest{After: cursor, Wait: durationpb.New(50 * time.Second)})
		polled <- answer{resp, err}
	}()
	stream, err := f.feed.Watch(ctx, &feedv1.WatchRequest{After: cursor})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the long poll and the watch to be open", func() bool { return f.svc.Waiting() == 2 })

	f.stopSvc()
	select {
	case a := <-polled:
		if a.err != nil || len(a.resp.GetEvents()) != 0 || a.resp.GetNextCursor() == "" {
			t.Errorf("the long poll open at the stop: %v, %v; want no events and a cursor", a.resp, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll outlived the feed's stop by 10 s")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("the watch open at the stop ended with %v, want UNAVAILABLE", err)
	}
}

// TestDirectReadsAreSharedAndBounded has many readers read the directory's
// events directly at once, through a connection that makes every ListEvents
// call slow, so calls overlap. Readers at the same position share one call;
// readers at different positions never have more than 16 calls in flight.
func TestDirectReadsAreSharedAndBounded(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	for i := range 40 {
		f.village(t, fmt.Sprintf("dls-%02d", i), "dls")
	}
	var calls, inFlight, most atomic.Int64
	slow := f.Dial(t, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == directoryv1.DirectoryService_ListEvents_FullMethodName {
			calls.Add(1)
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(20 * time.Millisecond)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}))
	svc, _ := f.service(t, testConfig(), map[string]*grpc.ClientConn{directory.Name: slow, feed.Name: f.Conn})
	ctx := auth.WithCaller(context.Background(), caller("dls"))

	// The positions after each of the first 40 events dls sees.
	all, err := svc.Poll(ctx, &feedv1.PollRequest{PageSize: 40})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetEvents()) != 40 {
		t.Fatalf("%d events, want 40", len(all.GetEvents()))
	}

	readAll := func(after func(i int) string) []int {
		calls.Store(0)
		most.Store(0)
		got := make([]int, len(all.GetEvents()))
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() {
				resp, err := svc.Poll(ctx, &feedv1.PollRequest{After: after(i), PageSize: 100})
				if err != nil {
					t.Error(err)
					return
				}
				got[i] = len(resp.GetEvents())
			})
		}
		wg.Wait()
		return got
	}

	// 40 readers from the start: each gets every event, and they shared
	// the directory's page.
	for i, n := range readAll(func(int) string { return "" }) {
		if n < 40 {
			t.Errorf("reader %d from the start got %d events, want at least 40", i, n)
		}
	}
	if n := calls.Load(); n > 10 {
		t.Errorf("40 readers at one position made %d ListEvents calls, want them shared", n)
	}

	// 40 readers at 40 positions: each gets what follows its own, with at
	// most 16 calls in flight.
	for i, n := range readAll(func(i int) string { return all.GetEvents()[i].GetCursor() }) {
		if n < 40-1-i {
			t.Errorf("reader after event %d got %d events, want at least %d", i, n, 40-1-i)
		}
	}
	if m := most.Load(); m > 16 {
		t.Errorf("%d ListEvents calls in flight, want at most 16", m)
	}
	t.Logf("at 40 positions: %d calls, at most %d in flight", calls.Load(), most.Load())
}
