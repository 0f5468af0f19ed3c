package feed

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

func at(sec int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(sec, 0)) }

// TestMergeKeepsEachSourcesOrder interleaves two sources by time, except
// where a source's own order disagrees with the times (clocks of different
// transactions): then the source's order wins, so per-resource order holds.
func TestMergeKeepsEachSourcesOrder(t *testing.T) {
	ev := func(id string, sec int64) item {
		return item{ev: &typev1.Event{Id: id, Time: at(sec)}, cursor: "c-" + id}
	}
	parts := []part{
		{source: "directory", items: []item{ev("d1", 1), ev("d2", 5), ev("d3", 3)}, end: "c-d9"},
		{source: "lab", items: []item{ev("l1", 2), ev("l2", 4)}, end: "c-l2"},
	}
	start := startOf("urad", "facilities/dls")
	tests := []struct {
		limit   int
		wantIDs []string
		wantAt  map[string]string
	}{
		{10, []string{"d1", "l1", "l2", "d2", "d3"}, map[string]string{"directory": "c-d9", "lab": "c-l2"}},
		{3, []string{"d1", "l1", "l2"}, map[string]string{"directory": "c-d1", "lab": "c-l2"}},
		{1, []string{"d1"}, map[string]string{"directory": "c-d1"}},
	}
	for _, tt := range tests {
		evs, next := merge(start, parts, tt.limit)
		var ids []string
		for _, e := range evs {
			ids = append(ids, e.GetId())
		}
		if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
			t.Errorf("limit %d: ids (-want +got):\n%s", tt.limit, diff)
		}
		if diff := cmp.Diff(tt.wantAt, next.At); diff != "" {
			t.Errorf("limit %d: next position (-want +got):\n%s", tt.limit, diff)
		}
		// Each event's cursor resumes right after it.
		if len(evs) > 1 {
			p, err := decodePosition(evs[1].GetCursor(), "after", "urad", "facilities/dls")
			if err != nil || p.At["directory"] != "c-d1" || p.At["lab"] != "c-l1" {
				t.Errorf("cursor of the second event: %v, %v", p, err)
			}
		}
	}
	// The shared events are not changed.
	if diff := cmp.Diff(&typev1.Event{Id: "d1", Time: at(1)}, parts[0].items[0].ev, protocmp.Transform()); diff != "" {
		t.Errorf("merge changed a shared event:\n%s", diff)
	}
}

func TestMatchesType(t *testing.T) {
	tests := []struct {
		types []string
		typ   string
		want  bool
	}{
		{nil, "facility.created", true},
		{[]string{"facility.created"}, "facility.created", true},
		{[]string{"facility.created"}, "facility.updated", false},
		{[]string{"order.*"}, "order.specimen_received", true},
		{[]string{"order.*"}, "orders.created", false},
		{[]string{"order.*", "referral.accepted"}, "referral.accepted", true},
	}
	for _, tt := range tests {
		if got := matchesType(tt.types, tt.typ); got != tt.want {
			t.Errorf("matchesType(%q, %q) = %v", tt.types, tt.typ, got)
		}
	}
}

// TestConnectionsAreCheckedOnTheResolvedAddress posts to a name that
// resolves to loopback, with loopback forbidden: the URL passes no check
// by itself, but the connection is refused on the address it resolves to,
// as it would be for a name rebound to a metadata address.
func TestConnectionsAreCheckedOnTheResolvedAddress(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	d, err := newDeliverer(Config{DeliveryTimeout: time.Second}, clock.System{})
	if err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	_, err = d.post(context.Background(), url, "whsec_x", &feedv1.Notification{}, 1)
	if !errors.Is(err, errForbidden) {
		t.Fatalf("post to %s: %v, want a refusal", url, err)
	}
	for _, addr := range []string{"169.254.169.254:80", "[fe80::1]:443", "100.100.100.200:80", "0.0.0.0:443"} {
		if err := d.guard.control("tcp", addr, nil); !errors.Is(err, errForbidden) {
			t.Errorf("control(%s) = %v", addr, err)
		}
	}
	if err := d.guard.control("tcp", "10.1.2.3:443", nil); err != nil {
		t.Errorf("a private LAN address: %v", err)
	}
	if err := (guard{allowLoopback: true}).checkIP(netip.MustParseAddr("::1")); err != nil {
		t.Errorf("loopback with the flag: %v", err)
	}
}

func TestBackoffGrowsWithJitterUpToTheMaximum(t *testing.T) {
	c := Config{RetryBase: time.Second, RetryMax: time.Minute}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 7: time.Minute, 100: time.Minute} {
		for range 50 {
			if got := c.backoff(attempt); got < want/2 || got > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, got, want/2, want)
			}
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	p := startOf("urad", "facilities/dls").with("directory", "abc").with("lab", "def")
	got, err := decodePosition(p.encode(), "after", "urad", "facilities/dls")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if p.encode() != got.encode() {
		t.Error("the same position gives another cursor")
	}
}
