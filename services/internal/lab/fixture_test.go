package lab_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

const community = "urad"

// t0 is 09:00 in Urad Middle Banner (UTC+8).
var t0 = time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)

var (
	clinician = typev1.Role_ROLE_CLINICIAN
	tech      = typev1.Role_ROLE_LAB_TECHNOLOGIST
	admin     = typev1.Role_ROLE_ADMIN
)

// swappable lets the test register the lab service on the gRPC server
// before it is built (it needs the server's keys for its peer calls), and
// replace it by a new one after a simulated restart.
type swappable struct{ labv1.LabServiceServer }

// fixture runs the directory and the lab on one test gRPC server, each on
// its own bolt store, with a manual clock.
type fixture struct {
	*servertest.Env
	lab      labv1.LabServiceClient
	dir      directoryv1.DirectoryServiceClient
	svc      *lab.Service
	slot     *swappable
	labStore store.Store
	labPath  string
	peers    *peer.Peers
	cfg      lab.Config
	// batu is a man born 1958-03-14, qiqige a woman born 1967-08-21, both
	// registered at dls; wuyun a girl born 2012-09-16.
	batu, qiqige, wuyun string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dirStore, err := bolt.Open(filepath.Join(t.TempDir(), "directory.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dirStore.Close() })
	prot, err := pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(t0)
	dir := directory.New(dirStore, prot, clk)
	slot := &swappable{}
	policy := directory.Policy()
	policy.Merge(lab.Policy())
	env := servertest.Start(t, clk, policy, func(s *grpc.Server) {
		dir.Register(s)
		labv1.RegisterLabServiceServer(s, slot)
	})
	f := &fixture{
		Env: env, slot: slot, labPath: filepath.Join(t.TempDir(), "lab.db"),
		lab: labv1.NewLabServiceClient(env.Conn), dir: directoryv1.NewDirectoryServiceClient(env.Conn),
		peers: peer.New(lab.Name, env.Keys, clk, map[string]*grpc.ClientConn{directory.Name: env.Conn}),
		cfg: lab.Config{
			MLLPCommunity: community, MLLPFacility: "qrmyy",
			Critical: critical.Config{AckTimeout: 10 * time.Minute, EscalationTimeout: 10 * time.Minute},
		},
	}
	f.openLab(t)
	f.community(t)
	return f
}

// openLab opens the lab's store and builds the service, as a start of mcc
// does.
func (f *fixture) openLab(t testing.TB) {
	t.Helper()
	st, err := bolt.Open(f.labPath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := lab.New(st, f.Clock, f.peers, slog.New(slog.NewTextHandler(io.Discard, nil)), f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.labStore, f.svc = st, svc
	f.slot.LabServiceServer = svc
}

// restart closes the lab's store and opens it again with a new service.
func (f *fixture) restart(t testing.TB) {
	t.Helper()
	if err := f.labStore.Close(); err != nil {
		t.Fatal(err)
	}
	f.openLab(t)
}

// as returns a context with a token for subject at facility.
func (f *fixture) as(t testing.TB, subject, facility string, roles ...typev1.Role) context.Context {
	t.Helper()
	tok, err := f.Keys.Issue(auth.Caller{Subject: subject, Community: community, Facility: "facilities/" + facility, Roles: roles}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return servertest.WithToken(context.Background(), tok)
}

// The people of the tests.
func (f *fixture) doctor(t testing.TB) context.Context { return f.as(t, "doc-han", "dls", clinician) }
func (f *fixture) other(t testing.TB) context.Context  { return f.as(t, "doc-li", "wjh", clinician) }
func (f *fixture) wang(t testing.TB) context.Context   { return f.as(t, "lab-wang", "qrmyy", tech) }
func (f *fixture) liu(t testing.TB) context.Context    { return f.as(t, "lab-liu", "qrmyy", tech) }

// community builds the county hospital with its lab center, two township
// centers it serves, and registers patients at dls.
func (f *fixture) community(t testing.TB) {
	t.Helper()
	ctx := f.as(t, "admin", "qrmyy", admin)
	labCenter := []*directoryv1.CenterAssignment{{Center: typev1.Center_CENTER_LAB, Facility: "facilities/qrmyy"}}
	for _, req := range []*directoryv1.CreateFacilityRequest{
		{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "乌拉特中旗人民医院", Level: typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL}},
		{FacilityId: "dls", Facility: &directoryv1.Facility{DisplayName: "德岭山中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy", Centers: labCenter}},
		{FacilityId: "wjh", Facility: &directoryv1.Facility{DisplayName: "乌加河中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy", Centers: labCenter}},
		{FacilityId: "xhr", Facility: &directoryv1.Facility{DisplayName: "新忽热苏木卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
	} {
		if _, err := f.dir.CreateFacility(ctx, req); err != nil {
			t.Fatalf("create %s: %v", req.GetFacilityId(), err)
		}
	}
	for _, p := range []struct {
		id   string
		name string
		out  *string
	}{
		{"15082419580314201", "巴特尔", &f.batu},
		{"15082419670821302", "其其格", &f.qiqige},
		{"15082420120916202", "乌云", &f.wuyun},
	} {
		resp, err := f.dir.RegisterPatient(f.doctor(t), &directoryv1.RegisterPatientRequest{ResidentId: directory.WithCheckDigit(p.id), DisplayName: p.name})
		if err != nil {
			t.Fatal(err)
		}
		*p.out = resp.GetPatient().GetName()
	}
}

// order places an order from dls.
func (f *fixture) order(t testing.TB, patient string, priority labv1.Priority, tests ...string) *labv1.Order {
	t.Helper()
	resp, err := f.lab.CreateOrder(f.doctor(t), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: patient, Tests: tests, Priority: priority}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetOrder()
}

// collect records a specimen of an order at dls.
func (f *fixture) collect(t testing.TB, o *labv1.Order, barcode string, tests ...string) *labv1.Specimen {
	t.Helper()
	if len(tests) == 0 {
		tests = o.GetTests()
	}
	resp, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: barcode, Specimen: &labv1.Specimen{Order: o.GetName(), Tests: tests, VolumeMl: 3}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetSpecimen()
}

// toState drives a new specimen of o to state through the API.
func (f *fixture) toState(t testing.TB, o *labv1.Order, barcode string, state labv1.Specimen_State) {
	t.Helper()
	f.collect(t, o, barcode)
	name := "specimens/" + barcode
	steps := []struct {
		state labv1.Specimen_State
		do    func() error
	}{
		{labv1.Specimen_STATE_IN_TRANSIT, func() error {
			_, err := f.lab.DispatchSpecimen(f.doctor(t), &labv1.DispatchSpecimenRequest{Name: name, Courier: "物流 老张"})
			return err
		}},
		{labv1.Specimen_STATE_RECEIVED, func() error {
			_, err := f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: name})
			return err
		}},
		{labv1.Specimen_STATE_IN_TESTING, func() error {
			_, err := f.lab.StartTesting(f.wang(t), &labv1.StartTestingRequest{Name: name})
			return err
		}},
		{labv1.Specimen_STATE_DONE, func() error {
			var results []*labv1.ResultInput
			for _, code := range o.GetTests() {
				results = append(results, normal(code))
			}
			if _, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/" + barcode, Results: results}); err != nil {
				return err
			}
			_, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/" + barcode})
			return err
		}},
	}
	if state == labv1.Specimen_STATE_REJECTED {
		if _, err := f.lab.RejectSpecimen(f.wang(t), &labv1.RejectSpecimenRequest{Name: name, Reason: labv1.RejectionReason_REJECTION_REASON_LOST, Action: labv1.RejectionAction_REJECTION_ACTION_RECOLLECT}); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, st := range steps {
		if state < st.state {
			return
		}
		if err := st.do(); err != nil {
			t.Fatalf("to %v: %v", st.state, err)
		}
	}
}

// normal is a normal adult value for the tests the fixtures use.
func normal(code string) *labv1.ResultInput {
	values := map[string]*labv1.ResultInput{
		"2823-3": {Value: 4.1, Unit: "mmol/L"}, "2951-2": {Value: 140, Unit: "mmol/L"}, "2345-7": {Value: 5.2, Unit: "mmol/L"},
		"718-7": {Value: 145, Unit: "g/L"}, "6690-2": {Value: 6.2, Unit: "10*9/L"}, "777-3": {Value: 210, Unit: "10*9/L"},
		"14682-9": {Value: 80, Unit: "umol/L"}, "1742-6": {Value: 20, Unit: "U/L"},
	}
	in, ok := values[code]
	if !ok {
		in = &labv1.ResultInput{Value: 1, Unit: "mmol/L"}
	}
	in.Code = code
	return in
}
