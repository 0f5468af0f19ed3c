package referral_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/referral"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

const (
	community   = "urad"
	clinician   = typev1.Role_ROLE_CLINICIAN
	coordinator = typev1.Role_ROLE_REFERRAL_COORDINATOR
	admin       = typev1.Role_ROLE_ADMIN
)

var start = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// server lets the referral service be built after the test server starts:
// it needs the server's keys and connection for its calls to the directory.
type server struct {
	referralv1.ReferralServiceServer
}

type fixture struct {
	*servertest.Env
	client   referralv1.ReferralServiceClient
	dir      directoryv1.DirectoryServiceClient
	svc      *referral.Service
	store    store.Store
	dirStore store.Store
	path     string
	checker  referral.AttachmentChecker
	// patients are the demo patients' names by key ("batu" of dls, "wang"
	// of wjh).
	patients map[string]string
}

// config returns the flag defaults, as mcc runs with them.
func config() referral.Config {
	var cfg referral.Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	return cfg
}

// newFixture starts the directory and the referral service on one test
// server, with a small county: two county hospitals, two township centers
// and a village clinic, a doctor at each township, and patients.
func newFixture(t testing.TB, checker referral.AttachmentChecker) *fixture {
	t.Helper()
	dirStore, err := bolt.Open(filepath.Join(t.TempDir(), "directory.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dirStore.Close() })
	f := &fixture{dirStore: dirStore, path: filepath.Join(t.TempDir(), "referral.db"), checker: checker}
	f.open(t, clock.NewManual(start))
	f.seed(t)
	return f
}

// open starts a server on the fixture's stores, as a process start would.
func (f *fixture) open(t testing.TB, clk *clock.Manual) {
	t.Helper()
	st, err := bolt.Open(f.path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	prot, err := pii.LoadProtector(filepath.Join(filepath.Dir(f.path), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	dir := directory.New(f.dirStore, prot, clk)
	policy := auth.Policy{}
	policy.Merge(directory.Policy())
	policy.Merge(referral.Policy())
	holder := &server{}
	env := servertest.Start(t, clk, policy, func(s *grpc.Server) {
		dir.Register(s)
		referralv1.RegisterReferralServiceServer(s, holder)
	})
	peers := peer.New(referral.Name, env.Keys, clk, map[string]*grpc.ClientConn{directory.Name: env.Conn})
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	f.svc, err = referral.New(referral.Deps{Store: st, Clock: clk, Peers: peers, Logger: logger, Attachments: f.checker}, config())
	if err != nil {
		t.Fatal(err)
	}
	holder.ReferralServiceServer = f.svc
	f.Env, f.store = env, st
	f.client = referralv1.NewReferralServiceClient(env.Conn)
	f.dir = directoryv1.NewDirectoryServiceClient(env.Conn)
}

// restart stops using the referral store and opens it again with a new
// service, a new scheduler and the same clock, as after a crash.
func (f *fixture) restart(t testing.TB) {
	t.Helper()
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, f.Clock)
}

// as returns a context whose calls carry a token for facility with roles,
// valid for a year of the test clock, which tests move by days.
func (f *fixture) as(t testing.TB, facility string, roles ...typev1.Role) context.Context {
	t.Helper()
	tok, err := f.Keys.Issue(auth.Caller{Subject: "test", Community: community, Facility: "facilities/" + facility, Roles: roles}, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return servertest.WithToken(context.Background(), tok)
}

func (f *fixture) seed(t testing.TB) {
	t.Helper()
	ctx := f.as(t, "qrmyy", admin)
	const (
		county   = typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL
		township = typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER
		village  = typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC
	)
	for _, fac := range []struct {
		id, name, parent string
		level            typev1.FacilityLevel
	}{
		{"qrmyy", "乌拉特中旗人民医院", "", county},
		{"mzyy", "乌拉特中旗蒙中医医院", "", county},
		{"dls", "德岭山中心卫生院", "qrmyy", township},
		{"wjh", "乌加河中心卫生院", "qrmyy", township},
		{"dls-wl", "德岭山镇乌兰村卫生室", "dls", village},
	} {
		parent := ""
		if fac.parent != "" {
			parent = "facilities/" + fac.parent
		}
		if _, err := f.dir.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: fac.id, Facility: &directoryv1.Facility{DisplayName: fac.name, Level: fac.level, Parent: parent}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ id, facility string }{{"doc-dls-han", "dls"}, {"doc-wjh-li", "wjh"}, {"doc-qrmyy-gao", "qrmyy"}} {
		if _, err := f.dir.CreatePractitioner(ctx, &directoryv1.CreatePractitionerRequest{PractitionerId: p.id, Practitioner: &directoryv1.Practitioner{DisplayName: "医生", Facility: "facilities/" + p.facility, Roles: []typev1.Role{clinician}}}); err != nil {
			t.Fatal(err)
		}
	}
	f.patients = map[string]string{}
	for _, p := range []struct{ key, id, name, facility string }{
		{"batu", "15082419580314201", "巴特尔", "dls"},
		{"qiqige", "15082419670821302", "其其格", "dls"},
		{"wang", "15082419521107101", "王建国", "wjh"},
	} {
		reg, err := f.dir.RegisterPatient(f.as(t, p.facility, clinician), &directoryv1.RegisterPatientRequest{ResidentId: directory.WithCheckDigit(p.id), DisplayName: p.name})
		if err != nil {
			t.Fatal(err)
		}
		f.patients[p.key] = reg.GetPatient().GetName()
	}
	// The county hospital knows batu, whom it will send back down.
	if _, err := f.dir.MatchPatient(f.as(t, "qrmyy", clinician), &directoryv1.MatchPatientRequest{Identifier: &directoryv1.MatchPatientRequest_ResidentId{ResidentId: directory.WithCheckDigit("15082419580314201")}}); err != nil {
		t.Fatal(err)
	}
}

// upReferral is a valid routine up-referral of batu from dls to qrmyy.
func (f *fixture) upReferral() *referralv1.Referral {
	return &referralv1.Referral{
		Direction:        referralv1.Direction_DIRECTION_UP,
		Patient:          f.patients["batu"],
		TargetFacility:   "facilities/qrmyy",
		TargetDepartment: "神经内科",
		Reason:           "反复头晕，需进一步检查",
		Diagnosis:        &typev1.Code{Code: "I63.900x001", Display: "脑梗死"},
		Urgency:          referralv1.Urgency_URGENCY_ROUTINE,
		ClinicalSummary:  "高血压病史十年，近一周头晕加重。",
	}
}

// downReferral is a valid down-referral of batu from qrmyy to dls with a
// plan of three tasks.
func (f *fixture) downReferral() *referralv1.Referral {
	return &referralv1.Referral{
		Direction:             referralv1.Direction_DIRECTION_DOWN,
		Patient:               f.patients["batu"],
		TargetFacility:        "facilities/dls",
		Reason:                "病情稳定，转回社区康复",
		Urgency:               referralv1.Urgency_URGENCY_ROUTINE,
		DischargeSummary:      "脑梗死恢复期，出院。",
		ReceivingPractitioner: "practitioners/doc-dls-han",
		CarePlan: &referralv1.CarePlan{Kind: referralv1.CarePlan_KIND_REHABILITATION, Summary: "康复训练", Tasks: []*referralv1.PlannedTask{
			{Type: referralv1.FollowUp_TYPE_PHONE_CALL, DueInDays: 3, Description: "电话随访"},
			{Type: referralv1.FollowUp_TYPE_VISIT, DueInDays: 7, Description: "上门随访"},
			{Type: referralv1.FollowUp_TYPE_TEST, DueInDays: 30, Description: "复查血脂"},
		}},
	}
}

func (f *fixture) create(t testing.TB, ctx context.Context, r *referralv1.Referral) *referralv1.Referral {
	t.Helper()
	resp, err := f.client.CreateReferral(ctx, &referralv1.CreateReferralRequest{Referral: r})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return resp.GetReferral()
}

func (f *fixture) accept(t testing.TB, r *referralv1.Referral) *referralv1.Referral {
	t.Helper()
	resp, err := f.client.AcceptReferral(f.as(t, "qrmyy", coordinator), &referralv1.AcceptReferralRequest{
		Name: r.GetName(), Etag: r.GetEtag(), Mode: referralv1.Triage_MODE_OUTPATIENT, Department: "神经内科",
		AppointmentTime: timestamppb.New(f.Clock.Now().Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return resp.GetReferral()
}

func (f *fixture) fire(t testing.TB) int {
	t.Helper()
	n, err := f.svc.Fire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) get(t testing.TB, ctx context.Context, name string) *referralv1.Referral {
	t.Helper()
	resp, err := f.client.GetReferral(ctx, &referralv1.GetReferralRequest{Name: name})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return resp.GetReferral()
}

// fakeRecognition answers attachment checks from a table, standing in for
// the recognition service until it exists.
type fakeRecognition struct {
	mu      sync.Mutex
	patient map[string]string
	// recognizable lists the results the receiver may recognize.
	recognizable map[string]bool
	asked        []referral.ResultQuery
}

func (r *fakeRecognition) CheckResults(_ context.Context, q referral.ResultQuery) ([]referral.ResultCheck, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, q)
	var out []referral.ResultCheck
	for _, id := range q.Results {
		ch := referral.ResultCheck{Result: id, OfPatient: r.patient[id] == q.Patient, Recognizable: r.recognizable[id]}
		if !ch.Recognizable {
			ch.Note = "expired"
		}
		out = append(out, ch)
	}
	return out, nil
}
