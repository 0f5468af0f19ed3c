package sterilization_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/sterilization"
)

// TestChainOfCustody follows one package through two cycles: every step
// moves it, stamps who, where and when, and appends one event; a second
// scan of the same step changes nothing.
func TestChainOfCustody(t *testing.T) {
	f := newFixture(t)
	name := "packages/DLS-0001"
	f.request(t, f.dls, "DLS-0001", "suture")

	type scan struct {
		state sterilizationv1.Package_State
		// clinic is true for a scan at the clinic, false at the CSSD.
		clinic bool
		do     func(ctx context.Context) (*sterilizationv1.Package, error)
	}
	var load string
	scans := []scan{
		{sterilizationv1.Package_STATE_COLLECTED, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.client.CollectPackage(ctx, &sterilizationv1.CollectPackageRequest{Name: name})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_WASHED, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.client.WashPackage(ctx, &sterilizationv1.WashPackageRequest{Name: name})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_DISINFECTED, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.client.DisinfectPackage(ctx, &sterilizationv1.DisinfectPackageRequest{Name: name})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_PACKED, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.client.PackPackage(ctx, &sterilizationv1.PackPackageRequest{Name: name, Material: cotton})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_STERILIZING, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			if load == "" {
				load = f.startLoad(t, "pv1", "DLS-0001").GetName()
			}
			r, err := f.client.GetPackage(ctx, &sterilizationv1.GetPackageRequest{Name: name})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_STORED, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			if got, _ := f.client.GetLoad(ctx, &sterilizationv1.GetLoadRequest{Name: load}); got.GetLoad().GetState() == sterilizationv1.Load_STATE_RUNNING {
				f.release(t, load)
			}
			r, err := f.client.GetPackage(ctx, &sterilizationv1.GetPackageRequest{Name: name})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_DISPATCHED, false, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.dispatchErr("DLS-0001", "")
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_RECEIVED, true, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.client.ReceivePackage(ctx, &sterilizationv1.ReceivePackageRequest{Name: name})
			return r.GetPackage(), err
		}},
		{sterilizationv1.Package_STATE_USED, true, func(ctx context.Context) (*sterilizationv1.Package, error) {
			r, err := f.useErr(ctx, "DLS-0001", f.dlsPatients[0], "doc-dls")
			return r.GetPackage(), err
		}},
	}
	events := len(f.events(t))
	for i, s := range scans {
		f.advance(t, 10*time.Minute)
		ctx, who := f.cssd, "facilities/qrmyy"
		if s.clinic {
			ctx, who = f.dls, "facilities/dls"
		}
		p, err := s.do(ctx)
		if err != nil {
			t.Fatalf("%s: %v", s.state, err)
		}
		if p.GetState() != s.state {
			t.Fatalf("after the %s scan the package is %s", s.state, p.GetState())
		}
		last := p.GetTimeline()[len(p.GetTimeline())-1]
		if last.GetTo() != s.state.String() || last.GetActor().GetFacility() != who || !last.GetTime().AsTime().Equal(f.Clock.Now()) {
			t.Errorf("%s: timeline entry %v, want to %s by %s at %v", s.state, last, s.state, who, f.Clock.Now())
		}
		if len(p.GetTimeline()) != i+2 {
			t.Errorf("%s: %d timeline entries, want %d", s.state, len(p.GetTimeline()), i+2)
		}
		// The same scan again is answered with the package as it is.
		again, err := s.do(ctx)
		if err != nil {
			t.Fatalf("%s scanned twice: %v", s.state, err)
		}
		if diff := cmp.Diff(p, again, protocmp.Transform()); diff != "" {
			t.Errorf("%s scanned twice changed the package:\n%s", s.state, diff)
		}
	}
	// One event per package step, plus the load's own (created, results,
	// released).
	if got, want := len(f.events(t))-events, len(scans)+3; got != want {
		t.Errorf("%d events for the chain, want %d", got, want)
	}

	used := f.get(t, "DLS-0001")
	wantUse := &sterilizationv1.Use{
		Patient: f.dlsPatients[0], Clinician: "practitioners/doc-dls", Facility: "facilities/dls",
		Procedure: &typev1.Code{System: "ICD-9-CM-3", Code: "86.59", Display: "皮肤缝合"}, Time: timestamppb.New(f.Clock.Now()),
	}
	if diff := cmp.Diff(wantUse, used.GetUse(), protocmp.Transform()); diff != "" {
		t.Errorf("use (-want +got):\n%s", diff)
	}
	if used.GetHandover().GetGiver() != "test" || used.GetHandover().GetReceiver() != "送货员小张" || used.GetHandover().GetDestination() != "facilities/dls" {
		t.Errorf("handover %v", used.GetHandover())
	}
	if used.GetPacker() != "test" || used.GetMaterial() != cotton || !used.GetExpireTime().AsTime().Equal(used.GetSterilizeTime().AsTime().Add(14*24*time.Hour)) {
		t.Errorf("packing %v %v, sterilized %v, expires %v", used.GetPacker(), used.GetMaterial(), used.GetSterilizeTime().AsTime(), used.GetExpireTime().AsTime())
	}

	// Collecting it again starts cycle 2; the trace keeps cycle 1 as it
	// ended.
	f.advance(t, time.Hour)
	next, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if p := next.GetPackage(); p.GetCycle() != 2 || p.GetUse() != nil || p.GetLoad() != "" || len(p.GetTimeline()) != 1 || p.GetHolder() != "facilities/qrmyy" {
		t.Errorf("cycle 2 starts as %v", p)
	}
	trace, err := f.client.TracePackage(f.dls, &sterilizationv1.TracePackageRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if len(trace.GetCycles()) != 2 {
		t.Fatalf("trace has %d cycles, want 2", len(trace.GetCycles()))
	}
	first := trace.GetCycles()[0]
	if first.GetCycle() != 1 || first.GetState() != sterilizationv1.Package_STATE_USED || len(first.GetTimeline()) != len(scans)+1 || first.GetUse().GetPatient() != f.dlsPatients[0] {
		t.Errorf("cycle 1 in the trace: %v", first)
	}
	if trace.GetCycles()[1].GetCycle() != 2 {
		t.Errorf("current cycle in the trace: %v", trace.GetCycles()[1])
	}
	// Paged one cycle at a time, the trace gives the same two.
	page, err := f.client.TracePackage(f.cssd, &sterilizationv1.TracePackageRequest{Name: name, PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := f.client.TracePackage(f.cssd, &sterilizationv1.TracePackageRequest{Name: name, PageSize: 1, PageToken: page.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetCycles()) != 1 || len(rest.GetCycles()) != 1 || rest.GetCycles()[0].GetCycle() != 2 || rest.GetNextPageToken() != "" {
		t.Errorf("paged trace: %v then %v", page.GetCycles(), rest.GetCycles())
	}

	// The patient's history lists the package for the clinic that used it,
	// not for another one.
	hist, err := f.client.ListPatientPackages(f.dls, &sterilizationv1.ListPatientPackagesRequest{Patient: f.dlsPatients[0]})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.GetPackages()) != 1 || hist.GetPackages()[0].GetCycle() != 1 || hist.GetPackages()[0].GetName() != name {
		t.Errorf("patient history: %v", hist.GetPackages())
	}
	other, err := f.client.ListPatientPackages(f.wjh, &sterilizationv1.ListPatientPackagesRequest{Patient: f.dlsPatients[0]})
	if err != nil {
		t.Fatal(err)
	}
	if len(other.GetPackages()) != 0 {
		t.Errorf("another clinic sees %d of the patient's packages", len(other.GetPackages()))
	}
}

// illegalMove tries to move a package to a state through the API. States
// that only a load's release (STORED) or the creation (REQUESTED) enter
// have no call that names them: nil.
func (f *fixture) illegalMove(t *testing.T, barcode string, to sterilizationv1.Package_State) func() error {
	name := "packages/" + barcode
	switch to {
	case sterilizationv1.Package_STATE_COLLECTED:
		return func() error {
			_, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: name})
			return err
		}
	case sterilizationv1.Package_STATE_WASHED:
		return func() error {
			_, err := f.client.WashPackage(f.cssd, &sterilizationv1.WashPackageRequest{Name: name})
			return err
		}
	case sterilizationv1.Package_STATE_DISINFECTED:
		return func() error {
			_, err := f.client.DisinfectPackage(f.cssd, &sterilizationv1.DisinfectPackageRequest{Name: name})
			return err
		}
	case sterilizationv1.Package_STATE_PACKED:
		return func() error {
			_, err := f.client.PackPackage(f.cssd, &sterilizationv1.PackPackageRequest{Name: name, Material: nonwoven})
			return err
		}
	case sterilizationv1.Package_STATE_STERILIZING:
		return func() error {
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/gr1", Program: "121℃", Packages: []string{name}})
			return err
		}
	case sterilizationv1.Package_STATE_DISPATCHED:
		return func() error {
			_, err := f.dispatchErr(barcode, "")
			return err
		}
	case sterilizationv1.Package_STATE_RECEIVED:
		return func() error {
			_, err := f.client.ReceivePackage(f.dls, &sterilizationv1.ReceivePackageRequest{Name: name})
			return err
		}
	case sterilizationv1.Package_STATE_USED:
		return func() error {
			_, err := f.useErr(f.dls, barcode, f.dlsPatients[0], "doc-dls")
			return err
		}
	}
	return nil
}

// driveTo takes a new package of dls to a state along the chain.
func (f *fixture) driveTo(t *testing.T, barcode string, state sterilizationv1.Package_State) {
	t.Helper()
	f.request(t, f.dls, barcode, "suture")
	path := []sterilizationv1.Package_State{
		sterilizationv1.Package_STATE_COLLECTED, sterilizationv1.Package_STATE_WASHED, sterilizationv1.Package_STATE_DISINFECTED,
		sterilizationv1.Package_STATE_PACKED, sterilizationv1.Package_STATE_STERILIZING, sterilizationv1.Package_STATE_STORED,
		sterilizationv1.Package_STATE_DISPATCHED, sterilizationv1.Package_STATE_RECEIVED, sterilizationv1.Package_STATE_USED,
	}
	var load string
	for _, s := range path {
		if state == sterilizationv1.Package_STATE_REQUESTED {
			return
		}
		switch s {
		case sterilizationv1.Package_STATE_STERILIZING:
			load = f.startLoad(t, "pv1", barcode).GetName()
		case sterilizationv1.Package_STATE_STORED:
			f.release(t, load)
		default:
			if err := f.illegalMove(t, barcode, s)(); err != nil {
				t.Fatalf("drive %s to %s: %v", barcode, s, err)
			}
		}
		if s == state {
			return
		}
	}
}

// TestEveryIllegalMoveIsRefused walks every move the chain's table forbids
// and tries it through the API: FAILED_PRECONDITION, INVALID_TRANSITION,
// and nothing changes. A repeated scan (from = to) is not a move but a
// duplicate, answered with the package as it is.
func TestEveryIllegalMoveIsRefused(t *testing.T) {
	f := newFixture(t)
	m := sterilization.PackageMachine()
	barcodes := map[sterilizationv1.Package_State]string{}
	for _, mv := range m.Illegal() {
		if _, ok := barcodes[mv.From]; !ok {
			barcodes[mv.From] = "ILL-" + mv.From.String()[len("STATE_"):]
			f.driveTo(t, barcodes[mv.From], mv.From)
		}
	}
	tried, direct := 0, 0
	for _, mv := range m.Illegal() {
		t.Run(mv.String(), func(t *testing.T) {
			barcode := barcodes[mv.From]
			before := f.get(t, barcode)
			if before.GetState() != mv.From {
				t.Fatalf("the package is %s, want %s", before.GetState(), mv.From)
			}
			try := f.illegalMove(t, barcode, mv.To)
			if try == nil {
				// Nothing in the API names this move; the table refuses it.
				direct++
				var cond *apierr.ConditionError
				if err := m.Check(mv.From, mv.To); !errors.As(err, &cond) || cond.Reason != apierr.ReasonInvalidTransition {
					t.Errorf("machine check: %v", err)
				}
				return
			}
			tried++
			err := try()
			if mv.From == mv.To && mv.To != sterilizationv1.Package_STATE_STERILIZING {
				if err != nil {
					t.Fatalf("a repeated scan: %v", err)
				}
			} else {
				servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
			}
			if diff := cmp.Diff(before, f.get(t, barcode), protocmp.Transform()); diff != "" {
				t.Errorf("the refused move changed the package:\n%s", diff)
			}
		})
	}
	if tried+direct != len(m.Illegal()) || tried < direct {
		t.Errorf("%d moves tried through the API and %d only in the table, of %d", tried, direct, len(m.Illegal()))
	}
}

// TestLoadMovesAreChecked walks the load table's illegal moves that the API
// can name: releasing a load that is not running.
func TestLoadMovesAreChecked(t *testing.T) {
	f := newFixture(t)
	m := sterilization.LoadMachine()
	loads := map[sterilizationv1.Load_State]string{}
	f.stored(t, f.dls, "suture", "REL-0001")
	loads[sterilizationv1.Load_STATE_RELEASED] = f.get(t, "REL-0001").GetLoad()
	f.request(t, f.dls, "FAIL-0001", "suture")
	f.pack(t, "FAIL-0001", nonwoven)
	failed := f.startLoad(t, "pv1", "FAIL-0001").GetName()
	if _, err := f.client.RecordLoadResults(f.cssd, &sterilizationv1.RecordLoadResultsRequest{Name: failed, Physical: pass, Chemical: fail}); err != nil {
		t.Fatal(err)
	}
	loads[sterilizationv1.Load_STATE_FAILED] = failed
	for _, mv := range m.Illegal() {
		if mv.To != sterilizationv1.Load_STATE_RELEASED || loads[mv.From] == "" {
			continue
		}
		t.Run(mv.String(), func(t *testing.T) {
			_, err := f.client.ReleaseLoad(f.cssd, &sterilizationv1.ReleaseLoadRequest{Name: loads[mv.From]})
			servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
		})
	}
	// The failed load sent its package back to be reprocessed, in a new
	// cycle.
	if p := f.get(t, "FAIL-0001"); p.GetState() != sterilizationv1.Package_STATE_COLLECTED || p.GetCycle() != 2 {
		t.Errorf("package of a failed load: %s, cycle %d", p.GetState(), p.GetCycle())
	}
	_, err := f.client.RecordLoadResults(f.cssd, &sterilizationv1.RecordLoadResultsRequest{Name: failed, Chemical: pass})
	servertest.WantReason(t, err, sterilization.ReasonLoadNotRunning)
	servertest.WantCode(t, err, codes.FailedPrecondition)
}
