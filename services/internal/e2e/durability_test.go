package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/mcctest"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// TestAcknowledgedWritesSurviveSIGKILL runs mcc as a real process, writes to
// it from many clients, kills it with SIGKILL in the middle of the storm,
// restarts it on the same data directory and checks that every write it
// acknowledged is there, with its event.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	bin := mcctest.Build(t)
	dir := t.TempDir()

	proc := mcctest.Start(t, bin, dir)
	addr := proc.GRPC
	keys, _, err := auth.LoadKeys(filepath.Join(dir, "signing.key"), false, clock.System{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Issue(auth.Caller{Subject: "e2e", Community: "demo", Facility: "facilities/qrmyy", Roles: []typev1.Role{typev1.Role_ROLE_ADMIN}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := servertest.WithToken(context.Background(), tok)
	client := mcctest.DialDirectory(t, addr)

	const writers = 16
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("f%02d-%05d", w, i)
				_, err := client.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{DisplayName: "卫生室 " + id, Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC}})
				if err != nil {
					return // the process is gone; this write was not acknowledged
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		}()
	}
	// Kill once writes are flowing, while they are still in flight.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 500 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	proc.Kill()
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before the kill")
	}

	addr = mcctest.Start(t, bin, dir).GRPC
	client = mcctest.DialDirectory(t, addr)
	for _, id := range acked {
		if _, err := client.GetFacility(ctx, &directoryv1.GetFacilityRequest{Name: "facilities/" + id}); err != nil {
			t.Errorf("acknowledged facility %s lost: %v", id, err)
		}
	}
	// Every stored facility has exactly its creation event, and no event
	// describes a facility that was not stored.
	stored := map[string]bool{}
	for _, f := range mcctest.Facilities(t, ctx, client) {
		stored[f.GetName()] = true
	}
	events := map[string]int{}
	for _, e := range mcctest.DirectoryEvents(t, ctx, client) {
		events[e.GetResource()]++
	}
	for name := range stored {
		if events[name] != 1 {
			t.Errorf("%s has %d creation events, want 1", name, events[name])
		}
	}
	for name := range events {
		if !stored[name] {
			t.Errorf("event for %s, which is not stored", name)
		}
	}
	t.Logf("%d writes acknowledged before SIGKILL, %d stored after restart", len(acked), len(stored))
}
