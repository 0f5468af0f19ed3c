package sterilization_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/sterilization"
)

// TestBadInput tries each refusal the issue names, and the other bad
// inputs, each against a fresh setup of what it needs.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		// call returns the refused call's error.
		call       func(t *testing.T, f *fixture) error
		wantCode   codes.Code
		wantField  string
		wantReason string
	}{
		{name: "loading a package that is not packed", wantReason: apierr.ReasonInvalidTransition, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "WASH-0001", "suture")
			if _, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: "packages/WASH-0001"}); err != nil {
				t.Fatal(err)
			}
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Packages: []string{"packages/WASH-0001"}})
			return err
		}},
		{name: "a load on a locked sterilizer", wantReason: sterilization.ReasonLocked, call: func(t *testing.T, f *fixture) error {
			load := f.stored(t, f.dls, "suture", "LOCK-0001")
			f.bi(t, load.GetName(), fail)
			f.request(t, f.dls, "LOCK-0002", "suture")
			f.pack(t, "LOCK-0002", nonwoven)
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Packages: []string{"packages/LOCK-0002"}})
			return err
		}},
		{name: "a load before the day's B-D test", wantReason: sterilization.ReasonBowieDick, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "BD-0001", "suture")
			f.pack(t, "BD-0001", nonwoven)
			f.advance(t, 24*time.Hour)
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Packages: []string{"packages/BD-0001"}})
			return err
		}},
		{name: "a load after a failed B-D test", wantReason: sterilization.ReasonBowieDick, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "BD-0002", "suture")
			f.pack(t, "BD-0002", nonwoven)
			f.bowieDick(t, "pv1", fail)
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Packages: []string{"packages/BD-0002"}})
			return err
		}},
		{name: "dispatching a held implant", wantReason: sterilization.ReasonImplantHeld, call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "ortho", "IMP-0001")
			_, err := f.dispatchErr("IMP-0001", "")
			return err
		}},
		{name: "dispatching an expired package", wantReason: sterilization.ReasonExpired, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "EXP-0001", "suture")
			f.pack(t, "EXP-0001", cotton)
			f.release(t, f.startLoad(t, "pv1", "EXP-0001").GetName())
			f.advance(t, 14*24*time.Hour)
			_, err := f.dispatchErr("EXP-0001", "")
			return err
		}},
		{name: "dispatching a recalled package", wantReason: sterilization.ReasonRecalled, call: func(t *testing.T, f *fixture) error {
			load := f.stored(t, f.dls, "suture", "RCL-0001")
			f.bi(t, load.GetName(), fail)
			_, err := f.dispatchErr("RCL-0001", "")
			return err
		}},
		{name: "using an expired package", wantReason: sterilization.ReasonExpired, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "EXP-0002", "suture")
			f.pack(t, "EXP-0002", cotton)
			f.release(t, f.startLoad(t, "pv1", "EXP-0002").GetName())
			f.dispatch(t, "EXP-0002", "")
			f.receive(t, f.dls, "EXP-0002")
			f.advance(t, 15*24*time.Hour)
			_, err := f.useErr(f.dls, "EXP-0002", f.dlsPatients[0], "doc-dls")
			return err
		}},
		{name: "using a recalled package", wantReason: sterilization.ReasonRecalled, call: func(t *testing.T, f *fixture) error {
			load := f.stored(t, f.dls, "suture", "RCL-0002")
			f.dispatch(t, "RCL-0002", "")
			f.receive(t, f.dls, "RCL-0002")
			f.bi(t, load.GetName(), fail)
			_, err := f.useErr(f.dls, "RCL-0002", f.dlsPatients[0], "doc-dls")
			return err
		}},
		{name: "using a package dispatched to another clinic", wantReason: sterilization.ReasonElsewhere, call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "suture", "LEND-0001")
			f.dispatch(t, "LEND-0001", "facilities/wjh")
			f.receive(t, f.wjh, "LEND-0001")
			_, err := f.useErr(f.dls, "LEND-0001", f.dlsPatients[0], "doc-dls")
			return err
		}},
		{name: "using a package of another clinic that never held it", wantCode: codes.NotFound, call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "suture", "OWN-0001")
			f.dispatch(t, "OWN-0001", "")
			f.receive(t, f.dls, "OWN-0001")
			_, err := f.useErr(f.wjh, "OWN-0001", f.wjhPatient, "doc-wjh")
			return err
		}},
		{name: "a BI result for an unknown load", wantCode: codes.NotFound, call: func(t *testing.T, f *fixture) error {
			_, err := f.client.RecordBiologicalResult(f.cssd, &sterilizationv1.RecordBiologicalResultRequest{Name: "sterilizers/pv1/loads/00000042", Result: pass})
			return err
		}},
		{name: "a BI result for a load of an unknown sterilizer", wantCode: codes.NotFound, call: func(t *testing.T, f *fixture) error {
			_, err := f.client.RecordBiologicalResult(f.cssd, &sterilizationv1.RecordBiologicalResultRequest{Name: "sterilizers/nope/loads/00000001", Result: fail})
			return err
		}},
		{name: "a BI result changed after it was recorded", wantReason: sterilization.ReasonResultRecorded, call: func(t *testing.T, f *fixture) error {
			load := f.stored(t, f.dls, "suture", "BI-0001")
			f.bi(t, load.GetName(), pass)
			_, err := f.client.RecordBiologicalResult(f.cssd, &sterilizationv1.RecordBiologicalResultRequest{Name: load.GetName(), Result: fail})
			return err
		}},
		{name: "a BI result without a result", wantField: "result", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.RecordBiologicalResult(f.cssd, &sterilizationv1.RecordBiologicalResultRequest{Name: "sterilizers/pv1/loads/00000001"})
			return err
		}},
		{name: "releasing a load without results", wantReason: sterilization.ReasonResultsNotPassed, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "NOR-0001", "suture")
			f.pack(t, "NOR-0001", nonwoven)
			load := f.startLoad(t, "pv1", "NOR-0001")
			if _, err := f.client.RecordLoadResults(f.cssd, &sterilizationv1.RecordLoadResultsRequest{Name: load.GetName(), Physical: pass}); err != nil {
				t.Fatal(err)
			}
			_, err := f.client.ReleaseLoad(f.cssd, &sterilizationv1.ReleaseLoadRequest{Name: load.GetName()})
			return err
		}},
		{name: "a load without packages", wantField: "packages", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃"})
			return err
		}},
		{name: "a test cycle with packages", wantField: "packages", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Test: true, Packages: []string{"packages/X-0001"}})
			return err
		}},
		{name: "a load of an unknown package", wantField: "packages[0]", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Packages: []string{"packages/NONE-0001"}})
			return err
		}},
		{name: "a load on another CSSD's sterilizer", wantCode: codes.NotFound, call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreateLoad(f.As(t, community, "mzyy", cssdRole), &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/gr1", Program: "121℃", Test: true})
			return err
		}},
		{name: "a package of an unknown set type", wantField: "set_type", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreatePackage(f.dls, &sterilizationv1.CreatePackageRequest{Barcode: "SET-0001", SetType: "setTypes/nope"})
			return err
		}},
		{name: "a barcode taken", wantCode: codes.AlreadyExists, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "DUP-0001", "suture")
			_, err := f.client.CreatePackage(f.wjh, &sterilizationv1.CreatePackageRequest{Barcode: "DUP-0001", SetType: "setTypes/suture"})
			return err
		}},
		{name: "a malformed barcode", wantField: "barcode", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreatePackage(f.dls, &sterilizationv1.CreatePackageRequest{Barcode: "条码", SetType: "setTypes/suture"})
			return err
		}},
		{name: "a request from a clinic no CSSD serves", wantReason: sterilization.ReasonNoCenter, call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreatePackage(f.bywl, &sterilizationv1.CreatePackageRequest{Barcode: "BYWL-0001", SetType: "setTypes/suture"})
			return err
		}},
		{name: "a sterilizer at a facility hosting no CSSD", wantReason: sterilization.ReasonNotCenter, call: func(t *testing.T, f *fixture) error {
			_, err := f.client.CreateSterilizer(f.As(t, community, "dls", cssdRole), &sterilizationv1.CreateSterilizerRequest{SterilizerId: "x1", Sterilizer: &sterilizationv1.Sterilizer{DisplayName: "x", Type: sterilizationv1.Sterilizer_TYPE_GRAVITY}})
			return err
		}},
		{name: "a patient the clinic does not know", wantField: "patient", call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "suture", "PAT-0001")
			f.dispatch(t, "PAT-0001", "")
			f.receive(t, f.dls, "PAT-0001")
			_, err := f.useErr(f.dls, "PAT-0001", f.wjhPatient, "doc-dls")
			return err
		}},
		{name: "a clinician of another clinic", wantField: "clinician", call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "suture", "DOC-0001")
			f.dispatch(t, "DOC-0001", "")
			f.receive(t, f.dls, "DOC-0001")
			_, err := f.useErr(f.dls, "DOC-0001", f.dlsPatients[0], "doc-wjh")
			return err
		}},
		{name: "a dispatch to a clinic no CSSD serves", wantField: "destination", call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "suture", "DST-0001")
			_, err := f.dispatchErr("DST-0001", "facilities/bywl")
			return err
		}},
		{name: "a dispatch without receiver", wantField: "receiver", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.DispatchPackage(f.cssd, &sterilizationv1.DispatchPackageRequest{Name: "packages/X-0001"})
			return err
		}},
		{name: "collecting a package in a running load", wantReason: sterilization.ReasonInLoad, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "RUN-0001", "suture")
			f.pack(t, "RUN-0001", nonwoven)
			f.startLoad(t, "pv1", "RUN-0001")
			_, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: "packages/RUN-0001"})
			return err
		}},
		{name: "an early release without a reason", wantField: "reason", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.ReleasePackageEarly(f.cssd, &sterilizationv1.ReleasePackageEarlyRequest{Name: "packages/X-0001"})
			return err
		}},
		{name: "an early release of a package that is no implant", wantReason: sterilization.ReasonImplantNotHeld, call: func(t *testing.T, f *fixture) error {
			f.stored(t, f.dls, "suture", "NIMP-0001")
			_, err := f.client.ReleasePackageEarly(f.cssd, &sterilizationv1.ReleasePackageEarlyRequest{Name: "packages/NIMP-0001", Reason: "急诊手术"})
			return err
		}},
		{name: "a clinic scanning a CSSD step", wantCode: codes.PermissionDenied, call: func(t *testing.T, f *fixture) error {
			f.request(t, f.dls, "ROLE-0001", "suture")
			_, err := f.client.CollectPackage(f.dls, &sterilizationv1.CollectPackageRequest{Name: "packages/ROLE-0001"})
			return err
		}},
		{name: "a stale etag", wantCode: codes.Aborted, call: func(t *testing.T, f *fixture) error {
			p := f.request(t, f.dls, "ETAG-0001", "suture")
			f.pack(t, "ETAG-0001", nonwoven)
			_, err := f.client.WashPackage(f.cssd, &sterilizationv1.WashPackageRequest{Name: p.GetName(), Etag: p.GetEtag()})
			return err
		}},
		{name: "statistics over more than a year", wantField: "end_day", call: func(t *testing.T, f *fixture) error {
			_, err := f.client.GetStatistics(f.cssd, &sterilizationv1.GetStatisticsRequest{StartDay: "2025-01-01", EndDay: "2026-12-31"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			err := tt.call(t, f)
			switch {
			case tt.wantReason != "":
				servertest.WantReason(t, err, tt.wantReason)
			default:
				servertest.WantError(t, err, tt.wantCode, tt.wantField)
			}
			if strings.Contains(err.Error(), "患者") {
				t.Errorf("a patient's name is in the error: %v", err)
			}
		})
	}
}

// bi records a load's BI result.
func (f *fixture) bi(t testing.TB, load string, result sterilizationv1.Result) *sterilizationv1.RecordBiologicalResultResponse {
	t.Helper()
	resp, err := f.client.RecordBiologicalResult(f.cssd, &sterilizationv1.RecordBiologicalResultRequest{Name: load, Result: result})
	if err != nil {
		t.Fatalf("BI of %s: %v", load, err)
	}
	return resp
}

// TestImplantHeldUntilBIOrEarlyRelease: an implant waits in store for its
// load's BI; an emergency early release lets it out with a reason, and the
// load tracks the release until the BI result closes it.
func TestImplantHeldUntilBIOrEarlyRelease(t *testing.T) {
	f := newFixture(t)
	load := f.stored(t, f.dls, "ortho", "IMP-0001", "IMP-0002")
	if !load.GetBiologicalIndicator() {
		t.Error("a load with implants is not monitored by a BI")
	}
	if p := f.get(t, "IMP-0001"); !p.GetHeld() || p.GetState() != sterilizationv1.Package_STATE_STORED {
		t.Errorf("implant after release: held %t, %s", p.GetHeld(), p.GetState())
	}
	_, err := f.dispatchErr("IMP-0001", "")
	servertest.WantReason(t, err, sterilization.ReasonImplantHeld)

	early, err := f.client.ReleasePackageEarly(f.cssd, &sterilizationv1.ReleasePackageEarlyRequest{Name: "packages/IMP-0001", Reason: "急诊骨折内固定"})
	if err != nil {
		t.Fatal(err)
	}
	if early.GetPackage().GetHeld() || early.GetPackage().GetEarlyRelease().GetReason() != "急诊骨折内固定" {
		t.Errorf("after early release: %v", early.GetPackage())
	}
	f.dispatch(t, "IMP-0001", "")
	open, err := f.client.ListLoads(f.cssd, &sterilizationv1.ListLoadsRequest{Parent: "sterilizers/-", OpenEarlyReleases: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(open.GetLoads()) != 1 || open.GetLoads()[0].GetName() != load.GetName() || len(open.GetLoads()[0].GetEarlyReleases()) != 1 {
		t.Fatalf("loads with open early releases: %v", open.GetLoads())
	}

	resp := f.bi(t, load.GetName(), pass)
	if r := resp.GetLoad().GetEarlyReleases()[0]; r.GetBiologicalResult() != pass || r.GetPackage() != "packages/IMP-0001" {
		t.Errorf("early release after the BI: %v", r)
	}
	open, err = f.client.ListLoads(f.cssd, &sterilizationv1.ListLoadsRequest{Parent: "sterilizers/pv1", OpenEarlyReleases: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(open.GetLoads()) != 0 {
		t.Errorf("the BI result left %d early releases open", len(open.GetLoads()))
	}
	// The other implant is free now.
	if p := f.get(t, "IMP-0002"); p.GetHeld() {
		t.Error("the implant is still held after its BI passed")
	}
	f.dispatch(t, "IMP-0002", "")
	// Recording the same result again changes nothing.
	if again := f.bi(t, load.GetName(), pass); again.GetLoad().GetEtag() != resp.GetLoad().GetEtag() {
		t.Errorf("a repeated BI result changed the load: etag %s, was %s", again.GetLoad().GetEtag(), resp.GetLoad().GetEtag())
	}
}

// TestFacilitiesSeeOnlyTheirOwn: a clinic sees its packages, the CSSD those
// it processes; everything else is NOT_FOUND, as if it did not exist.
func TestFacilitiesSeeOnlyTheirOwn(t *testing.T) {
	f := newFixture(t)
	f.stored(t, f.dls, "suture", "DLS-0001")
	f.stored(t, f.wjh, "suture", "WJH-0001")
	for name, ctx := range map[string]context.Context{
		"another clinic":    f.wjh,
		"another community": f.As(t, "elsewhere", "dls", clinician),
		"another CSSD":      f.As(t, community, "mzyy", cssdRole),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.client.GetPackage(ctx, &sterilizationv1.GetPackageRequest{Name: "packages/DLS-0001"})
			servertest.WantCode(t, err, codes.NotFound)
			_, err = f.client.TracePackage(ctx, &sterilizationv1.TracePackageRequest{Name: "packages/DLS-0001"})
			servertest.WantCode(t, err, codes.NotFound)
		})
	}
	list := func(ctx context.Context) []string {
		resp, err := f.client.ListPackages(ctx, &sterilizationv1.ListPackagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range resp.GetPackages() {
			names = append(names, p.GetName())
		}
		return names
	}
	if diff := cmp.Diff([]string{"packages/DLS-0001"}, list(f.dls)); diff != "" {
		t.Errorf("dls lists (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"packages/DLS-0001", "packages/WJH-0001"}, list(f.cssd)); diff != "" {
		t.Errorf("the CSSD lists (-want +got):\n%s", diff)
	}
	// The feed shows a clinic only its own packages' events.
	evs, err := f.client.ListEvents(f.wjh, &sterilizationv1.ListEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.GetEvents() {
		if e.GetResource() == "packages/DLS-0001" {
			t.Errorf("wjh sees %s of a dls package", e.GetType())
		}
	}
	if len(evs.GetEvents()) == 0 {
		t.Error("wjh sees none of its own events")
	}
}

// TestInventoryExpiringWithin: a clinic's inventory, and what expires
// soon, by the material's shelf life.
func TestInventoryExpiringWithin(t *testing.T) {
	f := newFixture(t)
	for _, p := range []struct {
		barcode  string
		material sterilizationv1.PackagingMaterial
	}{{"INV-COTTON", cotton}, {"INV-NONWOVEN", nonwoven}, {"INV-STORE", nonwoven}} {
		f.request(t, f.dls, p.barcode, "suture")
		f.pack(t, p.barcode, p.material)
	}
	f.release(t, f.startLoad(t, "pv1", "INV-COTTON", "INV-NONWOVEN", "INV-STORE").GetName())
	for _, b := range []string{"INV-COTTON", "INV-NONWOVEN"} {
		f.dispatch(t, b, "")
		f.receive(t, f.dls, b)
	}
	f.advance(t, 10*24*time.Hour)
	names := func(ctx context.Context, days int32) []string {
		resp, err := f.client.ListInventory(ctx, &sterilizationv1.ListInventoryRequest{ExpiresWithinDays: days})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range resp.GetPackages() {
			out = append(out, p.GetName())
		}
		return out
	}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		days int32
		want []string
	}{
		{"the clinic's inventory", f.dls, 0, []string{"packages/INV-COTTON", "packages/INV-NONWOVEN"}},
		{"what expires within 7 days", f.dls, 7, []string{"packages/INV-COTTON"}},
		{"the CSSD's store", f.cssd, 0, []string{"packages/INV-STORE"}},
		{"another clinic's", f.wjh, 0, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, names(tt.ctx, tt.days)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	f.advance(t, 5*24*time.Hour)
	p := f.get(t, "INV-COTTON")
	if !p.GetExpired() {
		t.Error("the cotton package is not shown expired after 15 days")
	}
	// Using it leaves the inventory; an expired package cannot be used.
	_, err := f.useErr(f.dls, "INV-COTTON", f.dlsPatients[0], "doc-dls")
	servertest.WantReason(t, err, sterilization.ReasonExpired)
	f.use(t, f.dls, "INV-NONWOVEN", f.dlsPatients[0], "doc-dls")
	if diff := cmp.Diff([]string{"packages/INV-COTTON"}, names(f.dls, 0)); diff != "" {
		t.Errorf("inventory after a use (-want +got):\n%s", diff)
	}
}

// TestStatisticsAndCosts counts dispatches per facility and day with their
// turnaround, loads and their pass rates, and charges set type prices.
func TestStatisticsAndCosts(t *testing.T) {
	f := newFixture(t)
	for _, b := range []string{"ST-DLS-1", "ST-DLS-2"} {
		f.request(t, f.dls, b, "suture")
	}
	f.request(t, f.wjh, "ST-WJH-1", "ortho")
	for _, b := range []string{"ST-DLS-1", "ST-DLS-2", "ST-WJH-1"} {
		f.pack(t, b, nonwoven)
	}
	load := f.startLoad(t, "pv1", "ST-DLS-1", "ST-DLS-2", "ST-WJH-1")
	f.release(t, load.GetName())
	f.bi(t, load.GetName(), pass)
	f.request(t, f.dls, "ST-FAIL", "suture")
	f.pack(t, "ST-FAIL", nonwoven)
	failed := f.startLoad(t, "pv1", "ST-FAIL")
	if _, err := f.client.RecordLoadResults(f.cssd, &sterilizationv1.RecordLoadResultsRequest{Name: failed.GetName(), Physical: fail}); err != nil {
		t.Fatal(err)
	}
	f.advance(t, 2*time.Hour)
	for _, b := range []string{"ST-DLS-1", "ST-DLS-2", "ST-WJH-1"} {
		f.dispatch(t, b, "")
	}
	day := start.Add(8 * time.Hour).Format(time.DateOnly)
	stats, err := f.client.GetStatistics(f.cssd, &sterilizationv1.GetStatisticsRequest{StartDay: day, EndDay: day})
	if err != nil {
		t.Fatal(err)
	}
	want := &sterilizationv1.GetStatisticsResponse{
		Days: []*sterilizationv1.FacilityDay{
			{Day: day, Facility: "facilities/dls", Packages: 2, MeanTurnaround: stats.GetDays()[0].GetMeanTurnaround()},
			{Day: day, Facility: "facilities/wjh", Packages: 1, MeanTurnaround: stats.GetDays()[1].GetMeanTurnaround()},
		},
		Facilities: []*sterilizationv1.FacilityDay{
			{Facility: "facilities/dls", Packages: 2, MeanTurnaround: stats.GetDays()[0].GetMeanTurnaround()},
			{Facility: "facilities/wjh", Packages: 1, MeanTurnaround: stats.GetDays()[1].GetMeanTurnaround()},
		},
		Loads: &sterilizationv1.LoadStatistics{Loads: 2, Released: 1, Failed: 1, PassRate: 0.5, BiologicalPassed: 1, BiologicalPassRate: 1},
	}
	if diff := cmp.Diff(want, stats, protocmp.Transform()); diff != "" {
		t.Errorf("statistics (-want +got):\n%s", diff)
	}
	if d := stats.GetDays()[0].GetMeanTurnaround().AsDuration(); d < 2*time.Hour || d > 3*time.Hour {
		t.Errorf("mean turnaround %v, want about 2h from collection to dispatch", d)
	}
	costs, err := f.client.GetCostSummary(f.cssd, &sterilizationv1.GetCostSummaryRequest{StartDay: day, EndDay: day})
	if err != nil {
		t.Fatal(err)
	}
	wantCosts := &sterilizationv1.GetCostSummaryResponse{
		Facilities: []*sterilizationv1.FacilityCost{
			{Facility: "facilities/dls", Packages: 2, AmountFen: 7000, SetTypes: []*sterilizationv1.SetTypeCost{{SetType: "setTypes/suture", Packages: 2, AmountFen: 7000}}},
			{Facility: "facilities/wjh", Packages: 1, AmountFen: 12000, SetTypes: []*sterilizationv1.SetTypeCost{{SetType: "setTypes/ortho", Packages: 1, AmountFen: 12000}}},
		},
		TotalFen: 19000,
	}
	if diff := cmp.Diff(wantCosts, costs, protocmp.Transform()); diff != "" {
		t.Errorf("costs (-want +got):\n%s", diff)
	}
	// A clinic sees its own figures only, and no load figures.
	mine, err := f.client.GetCostSummary(f.wjh, &sterilizationv1.GetCostSummaryRequest{StartDay: day, EndDay: day})
	if err != nil {
		t.Fatal(err)
	}
	if len(mine.GetFacilities()) != 1 || mine.GetTotalFen() != 12000 {
		t.Errorf("wjh's costs: %v", mine)
	}
	clinicStats, err := f.client.GetStatistics(f.wjh, &sterilizationv1.GetStatisticsRequest{StartDay: day, EndDay: day})
	if err != nil {
		t.Fatal(err)
	}
	if len(clinicStats.GetDays()) != 1 || clinicStats.GetLoads().GetLoads() != 0 {
		t.Errorf("wjh's statistics: %v", clinicStats)
	}
}

// TestNoDeleteAPI: traceability records are kept; the service has no
// method that deletes.
func TestNoDeleteAPI(t *testing.T) {
	methods := sterilizationv1.File_mcc_sterilization_v1_sterilization_proto.Services().Get(0).Methods()
	for i := 0; i < methods.Len(); i++ {
		if name := string(methods.Get(i).Name()); strings.HasPrefix(name, "Delete") || strings.HasPrefix(name, "Purge") {
			t.Errorf("%s deletes traceability records", name)
		}
	}
}

// TestShelfLifeFlag parses the configurable expiry table.
func TestShelfLifeFlag(t *testing.T) {
	table := sterilization.DefaultShelfLife()
	if err := table.Set("cotton_wrap=7d,paper_plastic=2160h"); err != nil {
		t.Fatal(err)
	}
	if got, want := table.String(), "cotton_wrap=7d,nonwoven=180d,paper_plastic=90d"; got != want {
		t.Errorf("table %q, want %q", got, want)
	}
	for _, bad := range []string{"silk=3d", "cotton_wrap", "cotton_wrap=-1d", "nonwoven=soon"} {
		if err := table.Set(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	// A material the table does not know cannot be packed.
	f := newFixtureWith(t, sterilization.Config{ShelfLife: sterilization.ShelfLife{cotton: 14 * 24 * time.Hour}, UTCOffset: 8 * time.Hour})
	f.request(t, f.dls, "MAT-0001", "suture")
	_, err := f.client.PackPackage(f.cssd, &sterilizationv1.PackPackageRequest{Name: "packages/MAT-0001", Material: nonwoven})
	servertest.WantField(t, err, "material")
}
