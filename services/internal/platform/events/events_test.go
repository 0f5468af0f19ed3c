package events_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

var (
	day0   = time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)
	admin  = auth.Caller{Subject: "a", Community: "urad", Facility: "facilities/qrmyy", Roles: []typev1.Role{typev1.Role_ROLE_ADMIN}}
	clinic = auth.Caller{Subject: "c", Community: "urad", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
)

func appendAt(t *testing.T, s store.Store, at time.Time, facility string) {
	t.Helper()
	err := s.Txn(context.Background(), "urad", func(tx store.Tx) error {
		return events.Append(tx, admin, at, events.Change{Type: "thing.created", Resource: "things/x", Version: 1, Facilities: []string{facility}})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRetainAndExpiredCursors(t *testing.T) {
	ctx := context.Background()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "e.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	feed := events.NewFeed(s, "thing")
	for d := range 40 {
		appendAt(t, s, day0.AddDate(0, 0, d), "facilities/dls")
	}
	first, cursor, err := feed.List(ctx, admin, "", 3)
	if err != nil || len(first) != 3 {
		t.Fatalf("first page: %v, %v", first, err)
	}

	// Keep 30 days: the first 10 days go.
	n, err := events.Retain(ctx, s, day0.AddDate(0, 0, 40).AddDate(0, 0, -30))
	if err != nil || n != 1 {
		t.Fatalf("Retain = %d, %v", n, err)
	}
	_, _, err = feed.List(ctx, admin, cursor, 10)
	var cond *apierr.ConditionError
	if !errors.As(err, &cond) || cond.Reason != events.ReasonCursorExpired {
		t.Fatalf("a cursor from before retention: %v, want %s", err, events.ReasonCursorExpired)
	}
	// A consumer starting afresh begins at the oldest event kept.
	fresh, _, err := feed.List(ctx, clinic, "", 100)
	if err != nil || len(fresh) != 30 || !fresh[0].GetTime().AsTime().Equal(day0.AddDate(0, 0, 10)) {
		t.Fatalf("fresh start: %d events from %v, %v; want 30 from day 10", len(fresh), fresh[0].GetTime().AsTime(), err)
	}
	// Retain again changes nothing.
	if n, err := events.Retain(ctx, s, day0.AddDate(0, 0, 10)); err != nil || n != 0 {
		t.Errorf("second Retain = %d, %v", n, err)
	}
}

func TestFacilityFiltering(t *testing.T) {
	ctx := context.Background()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "e.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	feed := events.NewFeed(s, "thing")
	appendAt(t, s, day0, "facilities/dls")
	appendAt(t, s, day0, "facilities/wjh")
	appendAt(t, s, day0, "facilities/dls")
	mine, next, err := feed.List(ctx, clinic, "", 100)
	if err != nil || len(mine) != 2 {
		t.Fatalf("clinic sees %d events, %v; want 2", len(mine), err)
	}
	all, allNext, err := feed.List(ctx, admin, "", 100)
	if err != nil || len(all) != 3 || next != allNext {
		t.Fatalf("admin sees %d, cursors %q and %q; want 3 and the same end cursor", len(all), next, allNext)
	}
}
