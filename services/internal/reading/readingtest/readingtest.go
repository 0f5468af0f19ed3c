// Package readingtest runs a remote reading center (imaging, ECG or
// pathology) in tests: the directory on one test gRPC server, the center's
// service on another, each on a bolt store, with a manual clock and a
// small community (a county hospital hosting every center, two townships
// it serves, one it does not, and patients registered at a township).
package readingtest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

// Community is the community of the fixture.
const Community = "urad"

// T0 is Monday 2026-11-23, 09:00 in Urad Middle Banner (UTC+8), within
// working hours.
var T0 = time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)

// Service is a built center service.
type Service interface {
	Register(*grpc.Server)
	FireDeadlines(ctx context.Context) (int, error)
}

// Deps are what a center service is built from.
type Deps struct {
	Store  store.Store
	Clock  clock.Clock
	Peers  *peer.Peers
	PII    *pii.Protector
	Logger *slog.Logger
}

// Build builds the service under test.
type Build func(Deps) (Service, error)

// Fixture is a running center with its directory.
type Fixture struct {
	// Env is the center's test server; As issues tokens for it.
	*servertest.Env
	// Service is the center's service.
	Service Service
	// Store is the center's store.
	Store store.Store
	// Dir is a client of the directory.
	Dir directoryv1.DirectoryServiceClient
	// Batu (a man born 1958-03-14) and Qiqige (a woman born 1967-08-21)
	// are registered at dls; Wang (a man born 1952-11-07) at wjh.
	Batu, Qiqige, Wang string
	// BatuID is Batu's resident ID number.
	BatuID string

	name   string
	policy auth.Policy
	build  Build
	path   string
	dir    *servertest.Env
	pii    *pii.Protector
}

// Config is the shared workflow's configuration the fixture builds with:
// working hours 08:00-12:00 and 14:30-18:00 in UTC+8, deadlines looked
// for every second, 10 minutes for each critical-finding step.
func Config() reading.Config {
	return reading.Config{
		DeadlineInterval: time.Second,
		Calendar:         reading.CalendarConfig{WorkingHours: "08:00-12:00,14:30-18:00", UTCOffset: 8 * time.Hour},
		Critical:         critical.Config{AckTimeout: 10 * time.Minute, EscalationTimeout: 10 * time.Minute},
	}
}

// Start runs the directory and the service named name, whose roles are
// policy, and builds the community.
func Start(t testing.TB, name string, policy auth.Policy, build Build) *Fixture {
	t.Helper()
	clk := clock.NewManual(T0)
	dirStore, err := bolt.Open(filepath.Join(t.TempDir(), "directory.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dirStore.Close() })
	protector, err := pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	dir := directory.New(dirStore, protector, clk)
	f := &Fixture{
		name: name, policy: policy, build: build, pii: protector,
		path: filepath.Join(t.TempDir(), name+".db"),
		dir:  servertest.Start(t, clk, directory.Policy(), dir.Register),
	}
	f.Dir = directoryv1.NewDirectoryServiceClient(f.dir.Conn)
	f.community(t)
	f.open(t, clk)
	return f
}

// open opens the service's store and serves a newly built service.
func (f *Fixture) open(t testing.TB, clk *clock.Manual) {
	t.Helper()
	st, err := bolt.Open(f.path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := f.build(Deps{
		Store: st, Clock: clk, PII: f.pii,
		Peers:  peer.New(f.name, f.dir.Keys, clk, map[string]*grpc.ClientConn{directory.Name: f.dir.Conn}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.Store, f.Service = st, svc
	f.Env = servertest.Start(t, clk, f.policy, svc.Register)
}

// Restart closes the service's store and serves a new service on it, as a
// restart of mcc does. Tokens issued before are not valid on the new
// server: issue new ones with As.
func (f *Fixture) Restart(t testing.TB) {
	t.Helper()
	if err := f.Store.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t, f.Clock)
}

// As returns a context whose calls to the service carry a token for
// subject at facility with roles.
func (f *Fixture) As(t testing.TB, subject, facility string, roles ...typev1.Role) context.Context {
	t.Helper()
	tok, err := f.Keys.Issue(auth.Caller{Subject: subject, Community: Community, Facility: "facilities/" + facility, Roles: roles}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return servertest.WithToken(context.Background(), tok)
}

// Doctor is the township clinician of dls who requests exams.
func (f *Fixture) Doctor(t testing.TB) context.Context {
	return f.As(t, "practitioners/doc-dls-han", "dls", typev1.Role_ROLE_CLINICIAN)
}

// Fire advances the clock by d and fires the deadlines due.
func (f *Fixture) Fire(t testing.TB, d time.Duration) {
	t.Helper()
	f.Clock.Advance(d)
	if _, err := f.Service.FireDeadlines(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// community builds the county hospital (qrmyy) hosting every center, the
// townships dls and wjh it serves, xhr which names no center, and the
// patients.
func (f *Fixture) community(t testing.TB) {
	t.Helper()
	admin := f.dirAs(t, "qrmyy", typev1.Role_ROLE_ADMIN)
	var centers []*directoryv1.CenterAssignment
	for c := typev1.Center_CENTER_LAB; c <= typev1.Center_CENTER_STERILIZATION; c++ {
		centers = append(centers, &directoryv1.CenterAssignment{Center: c, Facility: "facilities/qrmyy"})
	}
	county := typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL
	township := typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER
	for _, req := range []*directoryv1.CreateFacilityRequest{
		{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "乌拉特中旗人民医院", Level: county, Centers: centers}},
		{FacilityId: "dls", Facility: &directoryv1.Facility{DisplayName: "德岭山中心卫生院", Level: township, Parent: "facilities/qrmyy", Centers: centers}},
		{FacilityId: "wjh", Facility: &directoryv1.Facility{DisplayName: "乌加河中心卫生院", Level: township, Parent: "facilities/qrmyy", Centers: centers}},
		{FacilityId: "xhr", Facility: &directoryv1.Facility{DisplayName: "新忽热苏木卫生院", Level: township, Parent: "facilities/qrmyy"}},
	} {
		if _, err := f.Dir.CreateFacility(admin, req); err != nil {
			t.Fatalf("facility %s: %v", req.GetFacilityId(), err)
		}
	}
	f.BatuID = directory.WithCheckDigit("15082419580314201")
	for _, p := range []struct {
		id, name, facility string
		out                *string
	}{
		{f.BatuID, "巴特尔", "dls", &f.Batu},
		{directory.WithCheckDigit("15082419670821302"), "其其格", "dls", &f.Qiqige},
		{directory.WithCheckDigit("15082419521107101"), "王建国", "wjh", &f.Wang},
	} {
		resp, err := f.Dir.RegisterPatient(f.dirAs(t, p.facility, typev1.Role_ROLE_CLINICIAN), &directoryv1.RegisterPatientRequest{ResidentId: p.id, DisplayName: p.name})
		if err != nil {
			t.Fatalf("patient: %v", err)
		}
		*p.out = resp.GetPatient().GetName()
	}
}

// Center is a fixture with a client of the service.
type Center[C any] struct {
	*Fixture
	// API is the service's client.
	API    C
	client func(grpc.ClientConnInterface) C
}

// StartCenter is Start with a client of the service, made by client (the
// generated New...ServiceClient).
func StartCenter[C any](t testing.TB, name string, policy auth.Policy, build Build, client func(grpc.ClientConnInterface) C) *Center[C] {
	t.Helper()
	f := Start(t, name, policy, build)
	return &Center[C]{Fixture: f, API: client(f.Conn), client: client}
}

// Restart restarts the service and calls the new one.
func (c *Center[C]) Restart(t testing.TB) {
	t.Helper()
	c.Fixture.Restart(t)
	c.API = c.client(c.Conn)
}

// dirAs returns a context for the directory's server.
func (f *Fixture) dirAs(t testing.TB, facility string, role typev1.Role) context.Context {
	t.Helper()
	tok, err := f.dir.Keys.Issue(auth.Caller{Subject: "setup", Community: Community, Facility: "facilities/" + facility, Roles: []typev1.Role{role}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return servertest.WithToken(context.Background(), tok)
}
