package sterilization_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/sterilization"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

const (
	community = "urad"
	cssdRole  = typev1.Role_ROLE_CSSD_OPERATOR
	clinician = typev1.Role_ROLE_CLINICIAN
	admin     = typev1.Role_ROLE_ADMIN

	nonwoven = sterilizationv1.PackagingMaterial_PACKAGING_MATERIAL_NONWOVEN
	cotton   = sterilizationv1.PackagingMaterial_PACKAGING_MATERIAL_COTTON_WRAP
	pass     = sterilizationv1.Result_RESULT_PASS
	fail     = sterilizationv1.Result_RESULT_FAIL
)

// start is 08:30 in the community (UTC+8) on a Monday.
var start = time.Date(2026, 11, 23, 0, 30, 0, 0, time.UTC)

// latePeers lets the service be built before the test server that gives
// its peers their keys and connection: they are set once Start returns,
// before any call.
type latePeers struct{ *peer.Peers }

// fixture is the directory and the sterilization service on one test
// server, with a county: the people's hospital (qrmyy) hosts the CSSD for
// the townships dls and wjh; bywl is served by no CSSD.
type fixture struct {
	*servertest.Env
	client sterilizationv1.SterilizationServiceClient
	dir    directoryv1.DirectoryServiceClient
	store  store.Store

	cssd, dls, wjh, bywl, admin context.Context
	// patients are registered: two at dls, one at wjh.
	dlsPatients []string
	wjhPatient  string
}

func newFixture(t testing.TB) *fixture {
	return newFixtureWith(t, sterilization.Config{UTCOffset: 8 * time.Hour})
}

func newFixtureWith(t testing.TB, cfg sterilization.Config) *fixture {
	t.Helper()
	dirStore, err := bolt.Open(filepath.Join(t.TempDir(), "directory.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dirStore.Close() })
	st, err := bolt.Open(filepath.Join(t.TempDir(), "sterilization.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	prot, err := pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(start)
	peers := &latePeers{}
	svc, err := sterilization.New(st, clk, peers, slog.New(slog.NewJSONHandler(io.Discard, nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := directory.New(dirStore, prot, clk)
	policy := directory.Policy()
	policy.Merge(sterilization.Policy())
	env := servertest.Start(t, clk, policy, func(s *grpc.Server) {
		dir.Register(s)
		svc.Register(s)
	})
	peers.Peers = peer.New(sterilization.Name, env.Keys, clk, map[string]*grpc.ClientConn{directory.Name: env.Conn})
	f := &fixture{
		Env:    env,
		client: sterilizationv1.NewSterilizationServiceClient(env.Conn),
		dir:    directoryv1.NewDirectoryServiceClient(env.Conn),
		store:  st,
	}
	f.tokens(t)
	f.county(t)
	return f
}

// tokens issues the callers' tokens, valid for an hour from the clock.
func (f *fixture) tokens(t testing.TB) {
	f.cssd = f.As(t, community, "qrmyy", cssdRole)
	f.dls = f.As(t, community, "dls", clinician)
	f.wjh = f.As(t, community, "wjh", clinician)
	f.bywl = f.As(t, community, "bywl", clinician)
	f.admin = f.As(t, community, "qrmyy", admin)
}

// advance moves the clock and renews the tokens.
func (f *fixture) advance(t testing.TB, d time.Duration) {
	f.Clock.Advance(d)
	f.tokens(t)
}

// county builds the directory of the test community.
func (f *fixture) county(t testing.TB) {
	t.Helper()
	served := []*directoryv1.CenterAssignment{{Center: typev1.Center_CENTER_STERILIZATION, Facility: "facilities/qrmyy"}}
	for _, req := range []*directoryv1.CreateFacilityRequest{
		{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "乌拉特中旗人民医院", Level: typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL}},
		{FacilityId: "dls", Facility: &directoryv1.Facility{DisplayName: "德岭山中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy", Centers: served}},
		{FacilityId: "wjh", Facility: &directoryv1.Facility{DisplayName: "乌加河中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy", Centers: served}},
		{FacilityId: "bywl", Facility: &directoryv1.Facility{DisplayName: "巴音乌兰苏木卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
	} {
		if _, err := f.dir.CreateFacility(f.admin, req); err != nil {
			t.Fatalf("facility %s: %v", req.GetFacilityId(), err)
		}
	}
	for id, facility := range map[string]string{"doc-dls": "dls", "doc-wjh": "wjh"} {
		if _, err := f.dir.CreatePractitioner(f.admin, &directoryv1.CreatePractitionerRequest{PractitionerId: id, Practitioner: &directoryv1.Practitioner{
			DisplayName: id, Facility: "facilities/" + facility, Roles: []typev1.Role{clinician},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id17 := range []string{"15082419580314201", "15082419670821302", "15082419521107101"} {
		ctx := f.dls
		if i == 2 {
			ctx = f.wjh
		}
		resp, err := f.dir.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{ResidentId: directory.WithCheckDigit(id17), DisplayName: fmt.Sprintf("患者%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			f.wjhPatient = resp.GetPatient().GetName()
		} else {
			f.dlsPatients = append(f.dlsPatients, resp.GetPatient().GetName())
		}
	}
	for _, st := range []*sterilizationv1.CreateSetTypeRequest{
		{SetTypeId: "suture", SetType: &sterilizationv1.SetType{DisplayName: "清创缝合包", PriceFen: 3500, Instruments: []*sterilizationv1.Instrument{{DisplayName: "持针器", Quantity: 1}, {DisplayName: "组织剪", Quantity: 2}}}},
		{SetTypeId: "ortho", SetType: &sterilizationv1.SetType{DisplayName: "骨科内固定器械包", PriceFen: 12000, Implant: true}},
	} {
		if _, err := f.client.CreateSetType(f.cssd, st); err != nil {
			t.Fatal(err)
		}
	}
	for id, typ := range map[string]sterilizationv1.Sterilizer_Type{"pv1": sterilizationv1.Sterilizer_TYPE_PRE_VACUUM, "gr1": sterilizationv1.Sterilizer_TYPE_GRAVITY} {
		if _, err := f.client.CreateSterilizer(f.cssd, &sterilizationv1.CreateSterilizerRequest{SterilizerId: id, Sterilizer: &sterilizationv1.Sterilizer{DisplayName: id, Type: typ}}); err != nil {
			t.Fatal(err)
		}
	}
	f.bowieDick(t, "pv1", pass)
}

// bowieDick records today's B-D test of a sterilizer.
func (f *fixture) bowieDick(t testing.TB, sterilizer string, result sterilizationv1.Result) {
	t.Helper()
	if _, err := f.client.CreateBowieDickTest(f.cssd, &sterilizationv1.CreateBowieDickTestRequest{
		Parent: "sterilizers/" + sterilizer, BowieDickTest: &sterilizationv1.BowieDickTest{Result: result},
	}); err != nil {
		t.Fatal(err)
	}
}

// request creates a package of a clinic, of the suture set unless told.
func (f *fixture) request(t testing.TB, clinic context.Context, barcode, setType string) *sterilizationv1.Package {
	t.Helper()
	resp, err := f.client.CreatePackage(clinic, &sterilizationv1.CreatePackageRequest{Barcode: barcode, SetType: "setTypes/" + setType})
	if err != nil {
		t.Fatalf("request %s: %v", barcode, err)
	}
	return resp.GetPackage()
}

// pack takes a collected or requested package to PACKED.
func (f *fixture) pack(t testing.TB, barcode string, material sterilizationv1.PackagingMaterial) {
	t.Helper()
	name := "packages/" + barcode
	steps := []func() error{
		func() error {
			_, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: name})
			return err
		},
		func() error {
			_, err := f.client.WashPackage(f.cssd, &sterilizationv1.WashPackageRequest{Name: name})
			return err
		},
		func() error {
			_, err := f.client.DisinfectPackage(f.cssd, &sterilizationv1.DisinfectPackageRequest{Name: name})
			return err
		},
		func() error {
			_, err := f.client.PackPackage(f.cssd, &sterilizationv1.PackPackageRequest{Name: name, Material: material})
			return err
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("%s step %d: %v", barcode, i, err)
		}
	}
}

// startLoad starts a load of packed packages on a sterilizer.
func (f *fixture) startLoad(t testing.TB, sterilizer string, barcodes ...string) *sterilizationv1.Load {
	t.Helper()
	names := make([]string, len(barcodes))
	for i, b := range barcodes {
		names[i] = "packages/" + b
	}
	resp, err := f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/" + sterilizer, Program: "134℃ 4min", Packages: names, Test: len(names) == 0})
	if err != nil {
		t.Fatalf("load of %v: %v", barcodes, err)
	}
	return resp.GetLoad()
}

// release records passing physical and chemical results and releases.
func (f *fixture) release(t testing.TB, load string) {
	t.Helper()
	if _, err := f.client.RecordLoadResults(f.cssd, &sterilizationv1.RecordLoadResultsRequest{Name: load, Physical: pass, Chemical: pass}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.ReleaseLoad(f.cssd, &sterilizationv1.ReleaseLoadRequest{Name: load}); err != nil {
		t.Fatalf("release %s: %v", load, err)
	}
}

// stored requests, reprocesses and sterilizes packages of a clinic in one
// released load on pv1, and returns the load.
func (f *fixture) stored(t testing.TB, clinic context.Context, setType string, barcodes ...string) *sterilizationv1.Load {
	t.Helper()
	for _, b := range barcodes {
		f.request(t, clinic, b, setType)
		f.pack(t, b, nonwoven)
	}
	load := f.startLoad(t, "pv1", barcodes...)
	f.release(t, load.GetName())
	return load
}

// dispatch dispatches a stored package to its owner, or to destination.
func (f *fixture) dispatch(t testing.TB, barcode, destination string) {
	t.Helper()
	if _, err := f.dispatchErr(barcode, destination); err != nil {
		t.Fatalf("dispatch %s: %v", barcode, err)
	}
}

func (f *fixture) dispatchErr(barcode, destination string) (*sterilizationv1.DispatchPackageResponse, error) {
	return f.client.DispatchPackage(f.cssd, &sterilizationv1.DispatchPackageRequest{Name: "packages/" + barcode, Destination: destination, Receiver: "送货员小张"})
}

// receive records the receipt at a clinic.
func (f *fixture) receive(t testing.TB, clinic context.Context, barcode string) {
	t.Helper()
	if _, err := f.client.ReceivePackage(clinic, &sterilizationv1.ReceivePackageRequest{Name: "packages/" + barcode}); err != nil {
		t.Fatalf("receive %s: %v", barcode, err)
	}
}

// use records the use of a package at a clinic on a patient.
func (f *fixture) use(t testing.TB, clinic context.Context, barcode, patient, clinicianID string) {
	t.Helper()
	if _, err := f.useErr(clinic, barcode, patient, clinicianID); err != nil {
		t.Fatalf("use %s: %v", barcode, err)
	}
}

func (f *fixture) useErr(clinic context.Context, barcode, patient, clinicianID string) (*sterilizationv1.UsePackageResponse, error) {
	return f.client.UsePackage(clinic, &sterilizationv1.UsePackageRequest{
		Name: "packages/" + barcode, Patient: patient, Clinician: "practitioners/" + clinicianID,
		Procedure: &typev1.Code{System: "ICD-9-CM-3", Code: "86.59", Display: "皮肤缝合"},
	})
}

// get returns a package as the CSSD sees it.
func (f *fixture) get(t testing.TB, barcode string) *sterilizationv1.Package {
	t.Helper()
	resp, err := f.client.GetPackage(f.cssd, &sterilizationv1.GetPackageRequest{Name: "packages/" + barcode})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetPackage()
}

// events returns every event of the feed, as an administrator sees it.
func (f *fixture) events(t testing.TB) []*typev1.Event {
	t.Helper()
	var out []*typev1.Event
	after := ""
	for {
		resp, err := f.client.ListEvents(f.admin, &sterilizationv1.ListEventsRequest{After: after, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetEvents()...)
		if len(resp.GetEvents()) == 0 {
			return out
		}
		after = resp.GetNextCursor()
	}
}
