package feed_test

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// webhookFixture is a fixture whose feed trusts the receivers' test
// certificate.
func webhookFixture(t *testing.T, tune func(*feed.Config)) (*fixture, *receiver) {
	t.Helper()
	rcv := newReceiver(t)
	cfg := testConfig()
	cfg.CAFile = rcv.CAFile
	if tune != nil {
		tune(&cfg)
	}
	f := newFixture(t, cfg)
	f.county(t)
	return f, rcv
}

// subscribe creates a subscription of dls to url and returns its name and
// secret. Without settings it takes the directory's facility events, so the
// test's other subscriptions are not in it.
func (f *fixture) subscribe(t *testing.T, url string, sub *feedv1.Subscription) (string, string) {
	t.Helper()
	if sub == nil {
		sub = &feedv1.Subscription{EventTypes: []string{"facility.*"}}
	}
	sub.Url = url
	resp, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{Subscription: sub})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetSubscription().GetName(), resp.GetSecret()
}

// verified decodes the requests of a receiver, checking each signature
// as a receiver must, and returns their notifications.
func verified(t *testing.T, secret string, reqs []request) []*feedv1.Notification {
	t.Helper()
	var out []*feedv1.Notification
	for _, r := range reqs {
		if err := feed.Verify(secret, r.header, r.body, time.Now(), feed.ReplayTolerance); err != nil {
			t.Fatalf("delivery %s: %v", r.header.Get(feed.HeaderID), err)
		}
		n := &feedv1.Notification{}
		if err := protojson.Unmarshal(r.body, n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// resources lists the resources of the notifications that are not
// heartbeats, with each event's ID once.
func resources(ns []*feedv1.Notification) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range ns {
		if n.GetEvent().GetType() == "feed.heartbeat" || seen[n.GetEvent().GetId()] {
			continue
		}
		seen[n.GetEvent().GetId()] = true
		out = append(out, n.GetEvent().GetResource())
	}
	return out
}

func TestWebhookDeliversSignedEventsInOrder(t *testing.T) {
	f, rcv := webhookFixture(t, nil)
	name, secret := f.subscribe(t, rcv.URL+"/hook", &feedv1.Subscription{EventTypes: []string{"facility.*"}})
	for _, v := range []string{"dls-1", "wjh-1", "dls-2", "dls-3"} {
		f.village(t, v, v[:3])
	}
	want := []string{"facilities/dls-1", "facilities/dls-2", "facilities/dls-3"}
	waitFor(t, 10*time.Second, "three deliveries", func() bool { return len(resources(verified(t, secret, rcv.got()))) >= 3 })
	got := verified(t, secret, rcv.got())
	if r := resources(got); !slices.Equal(r, want) {
		t.Errorf("delivered %q, want %q (events before the subscription, of other facilities and of other types are not)", r, want)
	}
	first := rcv.got()[0]
	if first.header.Get(feed.HeaderSubscription) != name || first.header.Get(feed.HeaderAttempt) != "1" || first.header.Get(feed.HeaderID) != got[0].GetEvent().GetId() {
		t.Errorf("headers %v", first.header)
	}

	t.Run("a forged, altered or replayed delivery fails verification", func(t *testing.T) {
		tests := []struct {
			name   string
			secret string
			body   []byte
			now    time.Time
			want   error
		}{
			{"wrong secret", "whsec_other", first.body, time.Now(), feed.ErrBadSignature},
			{"altered body", secret, append(slices.Clone(first.body), ' '), time.Now(), feed.ErrBadSignature},
			{"replayed after 6 minutes", secret, first.body, time.Now().Add(6 * time.Minute), feed.ErrStale},
		}
		for _, tt := range tests {
			if err := feed.Verify(tt.secret, first.header, tt.body, tt.now, feed.ReplayTolerance); !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
	})

	t.Run("the delivery log lists each delivery with its event", func(t *testing.T) {
		// The log entry is written once the receiver has answered.
		log := f.waitLog(t, name, "", 3)
		var logged []string
		for _, d := range log.GetDeliveries() {
			logged = append(logged, d.GetEvent().GetResource())
			if d.GetHttpStatus() != 200 || d.GetAttempt() != 1 {
				t.Errorf("entry %v", d)
			}
		}
		slices.Reverse(logged) // newest first
		if !slices.Equal(logged, want) {
			t.Errorf("log %q, want %q", logged, want)
		}
		_, err := f.feed.ListDeliveries(f.clinic(t, "wjh"), &feedv1.ListDeliveriesRequest{Parent: name})
		servertest.WantCode(t, err, codes.NotFound) // another facility's subscription
	})
}

func TestFailingReceiversAreRetriedThenDeadLettered(t *testing.T) {
	tests := []struct {
		name   string
		answer func(request) int
	}{
		{"500", func(request) int { return http.StatusInternalServerError }},
		// It never answers while the sender waits; once the sender hangs
		// up it answers an error, which can race into the sender's last
		// read.
		{"hangs past the timeout", func(r request) int { <-r.ctx.Done(); return http.StatusServiceUnavailable }},
		{"answers after the timeout", func(request) int { time.Sleep(300 * time.Millisecond); return http.StatusOK }},
		{"redirects", func(request) int { return http.StatusTemporaryRedirect }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, bad := webhookFixture(t, func(c *feed.Config) { c.DeliveryTimeout = 150 * time.Millisecond })
			good := newReceiver(t)
			slow := newReceiver(t)
			slow.setAnswer(func(request) int { time.Sleep(50 * time.Millisecond); return http.StatusOK })
			badName, badSecret := f.subscribe(t, bad.URL, nil)
			_, goodSecret := f.subscribe(t, good.URL, nil)
			_, slowSecret := f.subscribe(t, slow.URL, nil)
			bad.setAnswer(tt.answer)

			f.village(t, "dls-1", "dls")
			// The healthy and the slow receivers are not held up.
			waitFor(t, 5*time.Second, "the healthy receivers", func() bool {
				return len(resources(verified(t, goodSecret, good.got()))) == 1 && len(resources(verified(t, slowSecret, slow.got()))) == 1
			})
			// The failing one is retried with growing waits, then the
			// event is dead-lettered and delivery moves on.
			deadline := time.Now().Add(20 * time.Second)
			for {
				log, err := f.feed.ListDeliveries(f.clinic(t, "dls"), &feedv1.ListDeliveriesRequest{Parent: badName, Outcome: feedv1.Delivery_OUTCOME_DEAD_LETTERED})
				if err == nil && len(log.GetDeliveries()) > 0 {
					break
				}
				if time.Now().After(deadline) {
					all, _ := f.feed.ListDeliveries(f.clinic(t, "dls"), &feedv1.ListDeliveriesRequest{Parent: badName})
					t.Fatalf("no dead letter after 20s; %d posts; log (newest first): %v", len(bad.got()), all.GetDeliveries())
				}
				time.Sleep(10 * time.Millisecond)
			}
			attempts := bad.got()
			if len(attempts) < 3 {
				t.Fatalf("%d attempts before the dead letter", len(attempts))
			}
			for i, r := range attempts {
				if r.header.Get(feed.HeaderAttempt) != strconv.Itoa(i+1) {
					t.Errorf("attempt %d has header %q", i+1, r.header.Get(feed.HeaderAttempt))
				}
				if i > 1 && r.at.Sub(attempts[i-1].at) < 5*time.Millisecond {
					t.Errorf("attempt %d followed %d after %v: no backoff", i+1, i, r.at.Sub(attempts[i-1].at))
				}
			}
			verified(t, badSecret, attempts)
			log, err := f.feed.ListDeliveries(f.clinic(t, "dls"), &feedv1.ListDeliveriesRequest{Parent: badName})
			if err != nil {
				t.Fatal(err)
			}
			failed := 0
			for _, d := range log.GetDeliveries() {
				switch d.GetOutcome() {
				case feedv1.Delivery_OUTCOME_FAILED:
					failed++
					if d.GetError() == "" || d.GetNextAttemptTime() == nil {
						t.Errorf("failed entry without error or next attempt: %v", d)
					}
				case feedv1.Delivery_OUTCOME_DEAD_LETTERED:
					if d.GetEvent().GetResource() != "facilities/dls-1" {
						t.Errorf("dead letter %v", d)
					}
				}
			}
			if failed < 2 {
				t.Errorf("%d failed attempts logged", failed)
			}

			// Once the receiver recovers, the next event goes through.
			bad.setAnswer(func(request) int { return http.StatusOK })
			f.village(t, "dls-2", "dls")
			waitFor(t, 5*time.Second, "delivery after recovery", func() bool {
				r := resources(verified(t, badSecret, bad.got()))
				return len(r) == 2 && r[1] == "facilities/dls-2"
			})
		})
	}
}

func TestRedeliverOneEventAndARange(t *testing.T) {
	f, rcv := webhookFixture(t, nil)
	name, secret := f.subscribe(t, rcv.URL, nil)
	start := time.Now()
	for _, v := range []string{"dls-1", "dls-2", "dls-3"} {
		f.village(t, v, "dls")
	}
	waitFor(t, 5*time.Second, "three deliveries", func() bool { return len(rcv.got()) == 3 })
	f.waitLog(t, name, "", 3)
	end := time.Now().Add(time.Second)
	firstID := verified(t, secret, rcv.got())[0].GetEvent().GetId()

	resp, err := f.feed.RedeliverEvents(f.clinic(t, "dls"), &feedv1.RedeliverEventsRequest{Name: name, EventId: firstID})
	if err != nil || resp.GetQueued() != 1 {
		t.Fatalf("redeliver one: %v, %v", resp, err)
	}
	waitFor(t, 5*time.Second, "the redelivery", func() bool { return len(rcv.got()) == 4 })
	if n := verified(t, secret, rcv.got()[3:])[0]; n.GetEvent().GetId() != firstID {
		t.Errorf("redelivered %s, want %s", n.GetEvent().GetId(), firstID)
	}

	resp, err = f.feed.RedeliverEvents(f.clinic(t, "dls"), &feedv1.RedeliverEventsRequest{Name: name, StartTime: timestamppb.New(start), EndTime: timestamppb.New(end)})
	if err != nil || resp.GetQueued() != 3 {
		t.Fatalf("redeliver a range: %v, %v", resp, err)
	}
	waitFor(t, 5*time.Second, "the range", func() bool { return len(rcv.got()) == 7 })
	if got := resources(verified(t, secret, rcv.got()[4:])); !slices.Equal(got, []string{"facilities/dls-1", "facilities/dls-2", "facilities/dls-3"}) {
		t.Errorf("range redelivered %q", got)
	}
	log := f.waitLog(t, name, firstID, 3)
	manual := 0
	for _, d := range log.GetDeliveries() {
		if d.GetManual() {
			manual++
		}
	}
	if len(log.GetDeliveries()) != 3 || manual != 2 {
		t.Errorf("log of %s: %d entries, %d manual; want 3 and 2", firstID, len(log.GetDeliveries()), manual)
	}

	for _, tt := range []struct {
		name  string
		req   *feedv1.RedeliverEventsRequest
		field string
	}{
		{"neither", &feedv1.RedeliverEventsRequest{Name: name}, "event_id"},
		{"both", &feedv1.RedeliverEventsRequest{Name: name, EventId: firstID, StartTime: timestamppb.New(start), EndTime: timestamppb.New(end)}, "event_id"},
		{"half a range", &feedv1.RedeliverEventsRequest{Name: name, StartTime: timestamppb.New(start)}, "end_time"},
		{"a range backwards", &feedv1.RedeliverEventsRequest{Name: name, StartTime: timestamppb.New(end), EndTime: timestamppb.New(start)}, "end_time"},
	} {
		_, err := f.feed.RedeliverEvents(f.clinic(t, "dls"), tt.req)
		servertest.WantField(t, err, tt.field)
	}
	_, err = f.feed.RedeliverEvents(f.clinic(t, "dls"), &feedv1.RedeliverEventsRequest{Name: name, EventId: "directory/urad/999"})
	servertest.WantCode(t, err, codes.NotFound)
}

// waitLog waits until the delivery log of sub has n entries (about
// eventID, if set), and returns them.
func (f *fixture) waitLog(t *testing.T, sub, eventID string, n int) *feedv1.ListDeliveriesResponse {
	t.Helper()
	var log *feedv1.ListDeliveriesResponse
	waitFor(t, 5*time.Second, "the delivery log", func() bool {
		var err error
		log, err = f.feed.ListDeliveries(f.clinic(t, "dls"), &feedv1.ListDeliveriesRequest{Parent: sub, EventId: eventID})
		return err == nil && len(log.GetDeliveries()) >= n
	})
	return log
}

func TestHeartbeats(t *testing.T) {
	f, rcv := webhookFixture(t, nil)
	_, secret := f.subscribe(t, rcv.URL, &feedv1.Subscription{HeartbeatInterval: durationpb.New(time.Second)})
	waitFor(t, 5*time.Second, "a heartbeat", func() bool { return len(rcv.got()) > 0 })
	hb := verified(t, secret, rcv.got())[0].GetEvent()
	if hb.GetType() != "feed.heartbeat" || hb.GetCursor() == "" {
		t.Errorf("heartbeat %v", hb)
	}
	// The heartbeat's cursor is a feed cursor of the facility.
	if _, err := f.feed.Poll(f.clinic(t, "dls"), &feedv1.PollRequest{After: hb.GetCursor()}); err != nil {
		t.Errorf("the heartbeat's cursor: %v", err)
	}
}

func TestWebhookURLsAreCheckedAgainstSSRF(t *testing.T) {
	f := newFixture(t, func() feed.Config { c := testConfig(); c.AllowLoopback = false; return c }())
	f.county(t)
	tests := []struct {
		name string
		url  string
		ok   bool
	}{
		{"plain http", "http://10.1.2.3/hook", false},
		{"link-local", "https://169.254.10.1/hook", false},
		{"cloud metadata", "https://169.254.169.254/latest/meta-data/", false},
		{"Alibaba Cloud metadata", "https://100.100.100.200/latest/meta-data/", false},
		{"AWS IPv6 metadata", "https://[fd00:ec2::254]/", false},
		{"IPv6 link-local", "https://[fe80::1]/hook", false},
		{"metadata behind NAT64", "https://[64:ff9b::a9fe:a9fe]/", false},
		{"metadata as IPv4-mapped IPv6", "https://[::ffff:169.254.169.254]/", false},
		{"unspecified", "https://0.0.0.0/hook", false},
		{"multicast", "https://224.0.0.1/hook", false},
		{"broadcast", "https://255.255.255.255/hook", false},
		{"loopback without the flag", "https://127.0.0.1:8443/hook", false},
		{"localhost without the flag", "https://localhost/hook", false},
		{"user information", "https://user:pw@10.1.2.3/hook", false},
		{"not a URL", "https://%zz", false},
		{"no host", "https:///hook", false},
		{"private LAN of a county hospital", "https://10.20.30.40:8443/his/mcc", true},
		{"private LAN 192.168", "https://192.168.1.10/hook", true},
		{"public address", "https://203.0.113.7/hook", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{Subscription: &feedv1.Subscription{Url: tt.url}})
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			servertest.WantField(t, err, "subscription.url")
		})
	}

	t.Run("an update is checked too", func(t *testing.T) {
		created, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{Subscription: &feedv1.Subscription{Url: "https://10.0.0.9/hook"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.feed.UpdateSubscription(f.clinic(t, "dls"), &feedv1.UpdateSubscriptionRequest{Subscription: &feedv1.Subscription{
			Name: created.GetSubscription().GetName(), Url: "https://169.254.169.254/",
		}})
		servertest.WantField(t, err, "subscription.url")
	})
}

func TestSubscriptionsBelongToTheirFacility(t *testing.T) {
	f := newFixture(t, testConfig())
	f.county(t)
	first, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{RequestId: "sub-1", Subscription: &feedv1.Subscription{Url: "https://10.0.0.1/hook"}})
	if err != nil {
		t.Fatal(err)
	}
	sub := first.GetSubscription()
	if sub.GetFacility() != "facilities/dls" || sub.GetCommunityWide() || first.GetSecret() == "" {
		t.Fatalf("created %v", first)
	}
	// A retry with the same request ID returns the same subscription and
	// secret, and creates nothing.
	again, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{RequestId: "sub-1", Subscription: &feedv1.Subscription{Url: "https://10.0.0.1/hook"}})
	if err != nil || again.GetSubscription().GetName() != sub.GetName() || again.GetSecret() != first.GetSecret() {
		t.Fatalf("retry: %v, %v", again, err)
	}
	list, err := f.feed.ListSubscriptions(f.clinic(t, "dls"), &feedv1.ListSubscriptionsRequest{})
	if err != nil || len(list.GetSubscriptions()) != 1 {
		t.Fatalf("list: %v, %v", list, err)
	}
	// The secret is never shown again.
	got, err := f.feed.GetSubscription(f.clinic(t, "dls"), &feedv1.GetSubscriptionRequest{Name: sub.GetName()})
	if err != nil || strings.Contains(protojson.Format(got), first.GetSecret()) {
		t.Fatalf("get: %v, %v", got, err)
	}

	other := f.clinic(t, "wjh")
	_, err = f.feed.GetSubscription(other, &feedv1.GetSubscriptionRequest{Name: sub.GetName()})
	servertest.WantCode(t, err, codes.NotFound)
	_, err = f.feed.UpdateSubscription(other, &feedv1.UpdateSubscriptionRequest{Subscription: &feedv1.Subscription{Name: sub.GetName(), Url: "https://10.6.6.6/"}})
	servertest.WantCode(t, err, codes.NotFound)
	_, err = f.feed.DeleteSubscription(other, &feedv1.DeleteSubscriptionRequest{Name: sub.GetName()})
	servertest.WantCode(t, err, codes.NotFound)
	if list, _ := f.feed.ListSubscriptions(other, &feedv1.ListSubscriptionsRequest{}); len(list.GetSubscriptions()) != 0 {
		t.Errorf("another facility lists %v", list.GetSubscriptions())
	}

	// An administrator's subscription is community-wide, and only
	// administrators may change it.
	adm, err := f.feed.CreateSubscription(f.admin(t), &feedv1.CreateSubscriptionRequest{Subscription: &feedv1.Subscription{Url: "https://10.0.0.2/hook"}})
	if err != nil || !adm.GetSubscription().GetCommunityWide() {
		t.Fatalf("admin: %v, %v", adm, err)
	}
	_, err = f.feed.DeleteSubscription(f.clinic(t, "qrmyy"), &feedv1.DeleteSubscriptionRequest{Name: adm.GetSubscription().GetName()})
	servertest.WantCode(t, err, codes.NotFound)

	updated, err := f.feed.UpdateSubscription(f.clinic(t, "dls"), &feedv1.UpdateSubscriptionRequest{
		Subscription: &feedv1.Subscription{Name: sub.GetName(), EventTypes: []string{"order.*"}, Etag: sub.GetEtag()},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"event_types"}},
	})
	if err != nil || updated.GetSubscription().GetUrl() != sub.GetUrl() || !slices.Equal(updated.GetSubscription().GetEventTypes(), []string{"order.*"}) {
		t.Fatalf("update: %v, %v", updated, err)
	}
	_, err = f.feed.DeleteSubscription(f.clinic(t, "dls"), &feedv1.DeleteSubscriptionRequest{Name: sub.GetName(), Etag: sub.GetEtag()})
	servertest.WantCode(t, err, codes.Aborted) // stale etag
	if _, err := f.feed.DeleteSubscription(f.clinic(t, "dls"), &feedv1.DeleteSubscriptionRequest{Name: sub.GetName()}); err != nil {
		t.Fatal(err)
	}
	_, err = f.feed.GetSubscription(f.clinic(t, "dls"), &feedv1.GetSubscriptionRequest{Name: sub.GetName()})
	servertest.WantCode(t, err, codes.NotFound)
}

// TestOneReplicaDeliversEachSubscription runs three feed services on one
// store, as replicas do in Redis mode: the lease lets one of them deliver,
// so each event reaches the receiver once.
func TestOneReplicaDeliversEachSubscription(t *testing.T) {
	f, rcv := webhookFixture(t, nil)
	conns := map[string]*grpc.ClientConn{directory.Name: f.Conn, feed.Name: f.Conn}
	f.service(t, f.cfg, conns)
	f.service(t, f.cfg, conns)
	_, secret := f.subscribe(t, rcv.URL, nil)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { f.village(t, "dls-"+strconv.Itoa(i), "dls") })
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "ten deliveries", func() bool { return len(rcv.got()) >= 10 })
	time.Sleep(300 * time.Millisecond)
	got := verified(t, secret, rcv.got())
	if len(got) != 10 || len(resources(got)) != 10 {
		t.Errorf("%d deliveries of %d events, want 10 of 10", len(got), len(resources(got)))
	}
}

// TestStartCursorLeavesNoGap moves a client from polling to a webhook: the
// subscription starts at the client's last feed cursor, so the events
// committed in between are delivered.
func TestStartCursorLeavesNoGap(t *testing.T) {
	f, rcv := webhookFixture(t, nil)
	_, cursor := poll(t, f.feed, f.clinic(t, "dls"), "")
	f.village(t, "dls-1", "dls")
	resp, err := f.feed.CreateSubscription(f.clinic(t, "dls"), &feedv1.CreateSubscriptionRequest{
		StartCursor: cursor, Subscription: &feedv1.Subscription{Url: rcv.URL, EventTypes: []string{"facility.created"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the gap's event", func() bool { return len(rcv.got()) == 1 })
	if got := resources(verified(t, resp.GetSecret(), rcv.got())); !slices.Equal(got, []string{"facilities/dls-1"}) {
		t.Errorf("delivered %q", got)
	}
	_, err = f.feed.CreateSubscription(f.clinic(t, "wjh"), &feedv1.CreateSubscriptionRequest{StartCursor: cursor, Subscription: &feedv1.Subscription{Url: rcv.URL}})
	servertest.WantField(t, err, "start_cursor")
}
