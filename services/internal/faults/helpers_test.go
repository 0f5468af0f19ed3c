//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/mcctest"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// startMCC runs bin as mcctest.Start does, with no rate limit at the
// gateway: the fault tests' clients are the load.
func startMCC(t *testing.T, bin, dataDir string, flags ...string) *mcctest.Process {
	t.Helper()
	return mcctest.Start(t, bin, dataDir, append([]string{"-gateway.rate-limit=0"}, flags...)...)
}

// rss is the process's resident memory in bytes, from /proc.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// adminContext returns ctx with an administrator's token signed with the
// key in dataDir.
func adminContext(t *testing.T, dataDir string) context.Context {
	t.Helper()
	return tokenContext(t, dataDir, "qrmyy", typev1.Role_ROLE_ADMIN)
}

func tokenContext(t *testing.T, dataDir, facility string, role typev1.Role) context.Context {
	t.Helper()
	return servertest.WithToken(context.Background(), token(t, dataDir, facility, role))
}

func token(t *testing.T, dataDir, facility string, role typev1.Role) string {
	t.Helper()
	keys, _, err := auth.LoadKeys(filepath.Join(dataDir, "signing.key"), false, clock.System{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Issue(auth.Caller{Subject: "faults", Community: "demo", Facility: "facilities/" + facility, Roles: []typev1.Role{role}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ledger records the writes the clients made and which were acknowledged.
type ledger struct {
	mu        sync.Mutex
	attempted int
	// acked maps each facility to its last acknowledged version, ackedAt
	// to when that was acknowledged.
	acked   map[string]uint64
	ackedAt map[string]time.Time
}

func newLedger() *ledger { return &ledger{acked: map[string]uint64{}, ackedAt: map[string]time.Time{}} }

func (l *ledger) attempt() {
	l.mu.Lock()
	l.attempted++
	l.mu.Unlock()
}

func (l *ledger) ack(name string, version uint64) {
	l.mu.Lock()
	if version > l.acked[name] {
		l.acked[name] = version
		l.ackedAt[name] = time.Now()
	}
	l.mu.Unlock()
}

func (l *ledger) counts() (attempted, acked int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, v := range l.acked {
		n += int(v)
	}
	return l.attempted, n
}

// writeFacility makes one write of a facility's life: the create at
// version 0, an update of its name after that. It returns the new version.
func writeFacility(ctx context.Context, c directoryv1.DirectoryServiceClient, id string, version uint64) (uint64, error) {
	if version == 0 {
		f, err := c.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: id, RequestId: "create-" + id,
			Facility: &directoryv1.Facility{DisplayName: "卫生室 " + id, Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC}})
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(f.GetFacility().GetEtag(), 10, 64)
	}
	f, err := c.UpdateFacility(ctx, &directoryv1.UpdateFacilityRequest{
		Facility:   &directoryv1.Facility{Name: "facilities/" + id, DisplayName: fmt.Sprintf("卫生室 %s 第%d版", id, version+1), Etag: strconv.FormatUint(version, 10)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
	})
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f.GetFacility().GetEtag(), 10, 64)
}

// checkLedger checks that every acknowledged write is stored, and that
// each facility's stored state is the one its last event describes.
func checkLedger(t *testing.T, ctx context.Context, c directoryv1.DirectoryServiceClient, l *ledger) (lost int) {
	t.Helper()
	lost, _ = checkLedgerReport(t, ctx, c, l, true)
	return lost
}

// checkLedgerReport is checkLedger that, with strict false, reports the
// lost writes instead of failing, with the earliest acknowledgement time
// among them.
func checkLedgerReport(t *testing.T, ctx context.Context, c directoryv1.DirectoryServiceClient, l *ledger, strict bool) (lost int, earliest time.Time) {
	t.Helper()
	stored := map[string]uint64{}
	for _, f := range mcctest.Facilities(t, ctx, c) {
		v, _ := strconv.ParseUint(f.GetEtag(), 10, 64)
		stored[f.GetName()] = v
	}
	last := map[string]string{}
	for _, e := range mcctest.DirectoryEvents(t, ctx, c) {
		last[e.GetResource()] = e.GetResourceEtag()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, v := range l.acked {
		name := "facilities/" + id
		if got := stored[name]; got < v {
			lost += int(v - got)
			if at := l.ackedAt[id]; earliest.IsZero() || at.Before(earliest) {
				earliest = at
			}
			if strict {
				t.Errorf("%s: acknowledged version %d, stored %d", name, v, got)
			}
		}
	}
	for name, v := range stored {
		if last[name] != strconv.FormatUint(v, 10) {
			t.Errorf("%s: stored version %d, last event at version %q (half-transitioned)", name, v, last[name])
		}
	}
	return lost, earliest
}
