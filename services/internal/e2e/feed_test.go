package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/app"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/mcctest"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

// feedEvent is an event as the REST feed returns it.
type feedEvent struct {
	ID       string `json:"id"`
	Cursor   string `json:"cursor"`
	Type     string `json:"type"`
	Resource string `json:"resource"`
	Time     string `json:"time"`
	Snapshot struct {
		DisplayName string `json:"displayName"`
	} `json:"snapshot"`
}

// township is a township health center's HIS following its feed over
// REST, as docs/INTEGRATION.md tells it to: it keeps its cursor, drops
// events it has seen (delivery is at-least-once), and checks that each
// service's events come in order.
type township struct {
	sys    *system
	token  string
	cursor string
	seen   map[string]bool
	// last is the newest sequence number seen per service, from event IDs
	// (`<service>/<community>/<seq>`).
	last   map[string]int
	events []feedEvent
}

func newTownship(sys *system, token string) *township {
	return &township{sys: sys, token: token, seen: map[string]bool{}, last: map[string]int{}}
}

// poll makes one GET /v1/feed call and takes in its events.
func (c *township) poll(t *testing.T, wait string, pageSize int) int {
	t.Helper()
	q := url.Values{"after": {c.cursor}, "wait": {wait}, "pageSize": {strconv.Itoa(pageSize)}}
	r := c.sys.do(t, "GET", "/v1/feed?"+q.Encode(), c.token, "").want(t, 200)
	var page struct {
		Events     []feedEvent `json:"events"`
		NextCursor string      `json:"nextCursor"`
	}
	if err := json.Unmarshal([]byte(r.raw), &page); err != nil {
		t.Fatal(err)
	}
	for _, ev := range page.Events {
		if c.seen[ev.ID] {
			continue
		}
		c.seen[ev.ID] = true
		parts := strings.Split(ev.ID, "/")
		seq, err := strconv.Atoi(parts[len(parts)-1])
		if err != nil {
			t.Fatalf("event ID %q", ev.ID)
		}
		if seq <= c.last[parts[0]] {
			t.Fatalf("%s came after %s/%d: out of order", ev.ID, parts[0], c.last[parts[0]])
		}
		c.last[parts[0]] = seq
		c.events = append(c.events, ev)
	}
	if page.NextCursor == "" {
		t.Fatal("no next cursor")
	}
	c.cursor = page.NextCursor
	return len(page.Events)
}

// catchUp reads small pages until the feed is empty.
func (c *township) catchUp(t *testing.T) {
	t.Helper()
	for c.poll(t, "0s", 7) > 0 {
	}
}

// villages lists the display names of the facility events taken in since
// index from.
func (c *township) villages(from int) []string {
	var out []string
	for _, ev := range c.events[from:] {
		if ev.Type == "facility.created" {
			out = append(out, ev.Snapshot.DisplayName)
		}
	}
	return out
}

func villageNames(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

func (s *system) createVillage(t *testing.T, admin, name, parent string) {
	t.Helper()
	s.do(t, "POST", "/v1/facilities?facility_id="+name, admin,
		fmt.Sprintf(`{"displayName":%q,"level":"FACILITY_LEVEL_VILLAGE_CLINIC","parent":"facilities/%s"}`, name, parent)).want(t, 200)
}

// TestTownshipCatchesUpAfterBeingOffline plays a township HIS that follows
// its feed, goes offline over a "weekend" while the county keeps working
// and mcc restarts, then comes back with its saved cursor and reads
// everything it missed, in order, with no gap and nothing of another
// facility.
func TestTownshipCatchesUpAfterBeingOffline(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			dir, flags := t.TempDir(), backend.flags(t)
			sys, stop := startStoppable(t, dir, flags...)
			admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
			for _, f := range []struct{ id, body string }{
				{"qrmyy", `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`},
				{"dls", `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`},
				{"wjh", `{"displayName":"乌加河中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`},
			} {
				sys.do(t, "POST", "/v1/facilities?facility_id="+f.id, admin, f.body).want(t, 200)
			}
			c := newTownship(sys, sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN))
			c.catchUp(t)
			if len(c.events) != 1 || c.events[0].Resource != "facilities/dls" {
				t.Fatalf("first read: %+v", c.events)
			}

			// Online, a long poll answers as soon as the event commits.
			got := make(chan time.Duration, 1)
			go func() {
				start := time.Now()
				c.poll(t, "20s", 100)
				got <- time.Since(start)
			}()
			time.Sleep(200 * time.Millisecond)
			sys.createVillage(t, admin, "dls-001", "dls")
			if took := <-got; took > 5*time.Second || !slices.Equal(c.villages(1), villageNames("dls", 1, 1)) {
				t.Fatalf("long poll took %v and got %q", took, c.villages(1))
			}

			// Offline: the county keeps working, and mcc restarts.
			offline := len(c.events)
			for i := 2; i <= 40; i++ {
				sys.createVillage(t, admin, fmt.Sprintf("dls-%03d", i), "dls")
				if i%4 == 0 {
					sys.createVillage(t, admin, fmt.Sprintf("wjh-%03d", i), "wjh")
				}
				if i == 20 {
					stop()
					sys, stop = startStoppable(t, dir, flags...)
					admin = sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
					c.sys = sys
				}
			}

			// Back online with the saved cursor.
			c.catchUp(t)
			if got, want := c.villages(offline), villageNames("dls", 2, 40); !slices.Equal(got, want) {
				t.Errorf("caught up with %q, want %q", got, want)
			}
			for _, ev := range c.events {
				if strings.HasPrefix(ev.Resource, "facilities/wjh") {
					t.Errorf("another facility's event: %+v", ev)
				}
			}
		})
	}
}

// hookReceiver is a webhook receiver over HTTPS that can hang.
type hookReceiver struct {
	*httptest.Server
	caFile string

	mu     sync.Mutex
	hang   bool
	hung   chan struct{}
	posts  []*feedv1.Notification
	header []http.Header
}

func newHookReceiver(t *testing.T, secret *string) *hookReceiver {
	t.Helper()
	r := &hookReceiver{hung: make(chan struct{}, 1)}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		if err := feed.Verify(*secret, req.Header, body, time.Now(), feed.ReplayTolerance); err != nil {
			r.mu.Unlock()
			t.Errorf("delivery fails verification: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		n := &feedv1.Notification{}
		if err := protojson.Unmarshal(body, n); err != nil {
			t.Errorf("delivery body: %v", err)
		}
		r.posts = append(r.posts, n)
		r.header = append(r.header, req.Header.Clone())
		hang := r.hang
		r.mu.Unlock()
		if hang {
			select {
			case r.hung <- struct{}{}:
			default:
			}
			<-req.Context().Done()
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	r.Server.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	r.StartTLS()
	t.Cleanup(r.Close)
	r.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(r.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// delivered lists the resources of the notifications, each event once.
func (r *hookReceiver) delivered() (resources []string, posts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, n := range r.posts {
		if !seen[n.GetEvent().GetId()] {
			seen[n.GetEvent().GetId()] = true
			resources = append(resources, n.GetEvent().GetResource())
		}
	}
	return resources, len(r.posts)
}

func (r *hookReceiver) setHang(h bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hang = h
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for until := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(until) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// TestWebhookDeliveryIsRedeliveredAfterSIGKILL kills mcc with SIGKILL while
// a receiver holds a delivery open, restarts it, and checks that the event
// is delivered again, and all those after it, in order: the cursor had not
// moved.
func TestWebhookDeliveryIsRedeliveredAfterSIGKILL(t *testing.T) {
	bin := mcctest.Build(t)
	dir := t.TempDir()
	var secret string
	rcv := newHookReceiver(t, &secret)
	rcv.setHang(true)
	flags := []string{"-feed.allow-loopback", "-feed.webhook-ca-file=" + rcv.caFile, "-feed.lease-ttl=6s", "-feed.scan-interval=100ms",
		"-feed.retry-base=50ms", "-feed.retry-max=200ms", "-feed.delivery-timeout=2s"}
	proc := mcctest.Start(t, bin, dir, flags...)
	addr := proc.GRPC
	keys, _, err := auth.LoadKeys(filepath.Join(dir, "signing.key"), false, clock.System{})
	if err != nil {
		t.Fatal(err)
	}
	as := func(facility string, role typev1.Role) context.Context {
		tok, err := keys.Issue(auth.Caller{Subject: "e2e", Community: "demo", Facility: "facilities/" + facility, Roles: []typev1.Role{role}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return servertest.WithToken(context.Background(), tok)
	}
	conn := func(addr string) *grpc.ClientConn {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := conn(addr)
	dir1, feeds := directoryv1.NewDirectoryServiceClient(c), feedv1.NewFeedServiceClient(c)
	admin := as("qrmyy", typev1.Role_ROLE_ADMIN)
	create := func(client directoryv1.DirectoryServiceClient, id, parent string, level typev1.FacilityLevel) {
		t.Helper()
		_, err := client.CreateFacility(admin, &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{DisplayName: id, Level: level, Parent: parent}})
		if err != nil {
			t.Fatal(err)
		}
	}
	create(dir1, "qrmyy", "", typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL)
	create(dir1, "dls", "facilities/qrmyy", typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER)
	sub, err := feeds.CreateSubscription(as("dls", typev1.Role_ROLE_CLINICIAN), &feedv1.CreateSubscriptionRequest{
		Subscription: &feedv1.Subscription{Url: rcv.URL + "/mcc", EventTypes: []string{"facility.created"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	secret = sub.GetSecret()
	want := villageNames("facilities/dls", 1, 5)
	for _, name := range want {
		create(dir1, strings.TrimPrefix(name, "facilities/"), "facilities/dls", typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC)
	}
	select {
	case <-rcv.hung:
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery arrived")
	}
	proc.Kill()

	rcv.setHang(false)
	addr = mcctest.Start(t, bin, dir, flags...).GRPC
	eventually(t, 20*time.Second, "every event after the restart", func() bool {
		got, _ := rcv.delivered()
		return len(got) == len(want)
	})
	got, posts := rcv.delivered()
	if !slices.Equal(got, want) {
		t.Errorf("delivered %q, want %q", got, want)
	}
	rcv.mu.Lock()
	first, again := rcv.posts[0].GetEvent().GetId(), rcv.posts[1].GetEvent().GetId()
	attempt := rcv.header[1].Get(feed.HeaderAttempt)
	rcv.mu.Unlock()
	if first != again || attempt != "1" || posts != len(want)+1 {
		t.Errorf("the killed delivery of %s was followed by %s (attempt %s), %d posts in all; want it again as attempt 1, %d posts",
			first, again, attempt, posts, len(want)+1)
	}
	log, err := feedv1.NewFeedServiceClient(conn(addr)).ListDeliveries(as("dls", typev1.Role_ROLE_CLINICIAN), &feedv1.ListDeliveriesRequest{Parent: sub.GetSubscription().GetName()})
	if err != nil || len(log.GetDeliveries()) != len(want) {
		t.Errorf("delivery log: %v, %v", log, err)
	}
}

// TestRedisReplicasShareTheDeliveries runs two mcc processes on one Redis,
// as replicas do: each event reaches the receiver once while both run, and
// when one stops the other takes the subscription over.
func TestRedisReplicasShareTheDeliveries(t *testing.T) {
	addr := redistest.Start(t)
	// The replicas share keys made beforehand, as a Secret would give them.
	keysDir := t.TempDir()
	if out, err := mcc(t, "keys", "-dir", keysDir); err != nil {
		t.Fatalf("keys: %v %s", err, out)
	}
	flags := []string{"-store=redis", "-redis-addr=" + addr, "-redis.prefix=" + redistest.Prefix(t),
		"-auth.signing-key=" + filepath.Join(keysDir, "signing.key"), "-pii.key=" + filepath.Join(keysDir, "pii.key"),
		"-feed.allow-loopback", "-feed.lease-ttl=1s", "-feed.delivery-timeout=300ms", "-feed.scan-interval=100ms"}
	var secret string
	rcv := newHookReceiver(t, &secret)
	flags = append(flags, "-feed.webhook-ca-file="+rcv.caFile)
	a, stopA := startStoppable(t, t.TempDir(), flags...)
	b := startIn(t, t.TempDir(), flags...)
	b.dataDir = keysDir
	a.dataDir = keysDir
	admin := a.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	a.do(t, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sub := a.do(t, "POST", "/v1/subscriptions", a.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_CLINICIAN),
		fmt.Sprintf(`{"url":%q,"eventTypes":["facility.created"]}`, rcv.URL)).want(t, 200)
	secret = sub.str(t, "secret")
	for i := 1; i <= 10; i++ {
		a.createVillage(t, admin, fmt.Sprintf("v-%03d", i), "qrmyy")
	}
	eventually(t, 20*time.Second, "ten deliveries", func() bool { got, _ := rcv.delivered(); return len(got) == 10 })
	time.Sleep(300 * time.Millisecond)
	if got, posts := rcv.delivered(); posts != 10 {
		t.Errorf("%d posts for %d events with two replicas running; want each once", posts, len(got))
	}
	stopA()
	for i := 11; i <= 15; i++ {
		b.createVillage(t, admin, fmt.Sprintf("v-%03d", i), "qrmyy")
	}
	eventually(t, 20*time.Second, "the other replica's deliveries", func() bool { got, _ := rcv.delivered(); return len(got) == 15 })
	if got, _ := rcv.delivered(); !slices.Equal(got, villageNames("facilities/v", 1, 15)) {
		t.Errorf("delivered %q", got)
	}
}

// TestFeedTailPrintsTheFeedLive runs `mcc feed tail --facility dls` against
// a running system and reads the events it prints as they happen.
func TestFeedTailPrintsTheFeedLive(t *testing.T) {
	sys := start(t)
	admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	sys.do(t, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sys.do(t, "POST", "/v1/facilities?facility_id=dls", admin, `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`).want(t, 200)

	out, w := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		env := app.Env{Getenv: func(string) string { return "" }, Stdout: w, Stderr: io.Discard}
		done <- app.Run(ctx, []string{"feed", "tail", "--facility", "dls", "-addr", sys.grpc, "-data-dir", sys.dataDir}, env)
		w.Close()
	}()
	lines := bufio.NewScanner(out)
	next := func() feedEvent {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("mcc feed tail stopped: %v", lines.Err())
		}
		var ev feedEvent
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		return ev
	}
	if ev := next(); ev.Resource != "facilities/dls" {
		t.Errorf("first line %+v", ev)
	}
	sys.createVillage(t, admin, "dls-001", "dls")
	if ev := next(); ev.Resource != "facilities/dls-001" || ev.Cursor == "" {
		t.Errorf("live line %+v", ev)
	}
	cancel()
	go io.Copy(io.Discard, out)
	if err := <-done; err != nil {
		t.Errorf("mcc feed tail ended with %v", err)
	}
}

// TestLongPollBoundOverREST: beyond -feed.max-waiting a long poll over REST
// is answered 429 at once, with a Retry-After, and a poll that does not
// wait is still served.
func TestLongPollBoundOverREST(t *testing.T) {
	sys := start(t, "-feed.max-waiting=1")
	tok := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	get := func(ctx context.Context, path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", sys.url+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		return http.DefaultClient.Do(req)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first long poll takes the one place; the gauge says when.
	first := make(chan struct{})
	go func() {
		defer close(first)
		if resp, err := get(ctx, "/v1/feed?wait=20s"); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 10*time.Second, "the first long poll to hold its place", func() bool {
		return strings.Contains(sys.do(t, "GET", "/metrics", "", "").want(t, 200).raw, "\nmcc_feed_waiting 1\n")
	})
	// While it holds it, a second is refused.
	resp, err := get(context.Background(), "/v1/feed?wait=0.2s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second long poll: %d, want 429 while the first waits", resp.StatusCode)
	}
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want 5", got)
	}
	resp, err = get(context.Background(), "/v1/feed")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a poll without a wait: %d, want 200", resp.StatusCode)
	}
	cancel()
	<-first
}
