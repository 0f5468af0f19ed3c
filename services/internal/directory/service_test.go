package directory_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/google/go-cmp/cmp"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

const (
	community = "urad"
	admin     = typev1.Role_ROLE_ADMIN
	clinician = typev1.Role_ROLE_CLINICIAN
)

var (
	// A valid resident ID of a man born 1958-03-14 in Urad Middle Banner.
	batu = directory.WithCheckDigit("15082419580314201")
	// A valid resident ID of a woman.
	qiqige = directory.WithCheckDigit("15082419670821302")
)

type fixture struct {
	*servertest.Env
	client directoryv1.DirectoryServiceClient
	store  store.Store
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "directory.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	prot, err := pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	svc := directory.New(st, prot, clk)
	env := servertest.Start(t, clk, directory.Policy(), func(s *grpc.Server) { svc.Register(s) })
	return &fixture{Env: env, client: directoryv1.NewDirectoryServiceClient(env.Conn), store: st}
}

func (f *fixture) admin(t *testing.T) context.Context { return f.As(t, community, "qrmyy", admin) }

// county creates the county hospital and a township under it.
func (f *fixture) county(t *testing.T) {
	t.Helper()
	ctx := f.admin(t)
	for _, req := range []*directoryv1.CreateFacilityRequest{
		{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "乌拉特中旗人民医院", Level: typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL}},
		{FacilityId: "dls", Facility: &directoryv1.Facility{
			DisplayName: "德岭山中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy",
			Centers: []*directoryv1.CenterAssignment{{Center: typev1.Center_CENTER_LAB, Facility: "facilities/qrmyy"}},
		}},
		{FacilityId: "wjh", Facility: &directoryv1.Facility{DisplayName: "乌加河中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
	} {
		if _, err := f.client.CreateFacility(ctx, req); err != nil {
			t.Fatalf("create %s: %v", req.GetFacilityId(), err)
		}
	}
}

func TestCreateAndGetFacility(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	got, err := f.client.GetFacility(f.As(t, community, "dls", clinician), &directoryv1.GetFacilityRequest{Name: "facilities/dls"})
	if err != nil {
		t.Fatal(err)
	}
	want := &directoryv1.Facility{
		Name: "facilities/dls", DisplayName: "德岭山中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER,
		Community: community, Parent: "facilities/qrmyy", Active: true, Etag: "1",
		Centers: []*directoryv1.CenterAssignment{{Center: typev1.Center_CENTER_LAB, Facility: "facilities/qrmyy"}},
	}
	if diff := cmp.Diff(want, got.GetFacility(), protocmp.Transform(), protocmp.IgnoreFields(&directoryv1.Facility{}, "create_time", "update_time")); diff != "" {
		t.Errorf("facility (-want +got):\n%s", diff)
	}
	if !got.GetFacility().GetCreateTime().AsTime().Equal(f.Clock.Now()) {
		t.Errorf("create_time = %v, want the clock's %v", got.GetFacility().GetCreateTime().AsTime(), f.Clock.Now())
	}
}

func TestCreateFacilityErrors(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	ctx := f.admin(t)
	tests := []struct {
		name      string
		ctx       context.Context
		req       *directoryv1.CreateFacilityRequest
		wantCode  codes.Code
		wantField string
	}{
		{name: "duplicate id", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "dls", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2}}, wantCode: codes.AlreadyExists},
		{name: "unknown parent", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x1", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2, Parent: "facilities/nope"}}, wantField: "facility.parent"},
		{name: "self as parent", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x2", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2, Parent: "facilities/x2"}}, wantField: "facility.parent"},
		{name: "unknown center host", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x3", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2, Centers: []*directoryv1.CenterAssignment{{Center: 1, Facility: "facilities/nope"}}}}, wantField: "facility.centers[0].facility"},
		{name: "center twice", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x4", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2, Centers: []*directoryv1.CenterAssignment{{Center: 1, Facility: "facilities/qrmyy"}, {Center: 1, Facility: "facilities/qrmyy"}}}}, wantField: "facility.centers[1].center"},
		{name: "bad id", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "Bad ID", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2}}, wantField: "facility_id"},
		{name: "no display name", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x5", Facility: &directoryv1.Facility{Level: 2}}, wantField: "facility"},
		{name: "no level", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x6", Facility: &directoryv1.Facility{DisplayName: "x"}}, wantField: "facility"},
		{name: "undefined level", ctx: ctx, req: &directoryv1.CreateFacilityRequest{FacilityId: "x7", Facility: &directoryv1.Facility{DisplayName: "x", Level: 99}}, wantField: "facility.level"},
		{name: "clinician may not create", ctx: f.As(t, community, "dls", clinician), req: &directoryv1.CreateFacilityRequest{FacilityId: "x8", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2}}, wantCode: codes.PermissionDenied},
		{name: "no token", ctx: context.Background(), req: &directoryv1.CreateFacilityRequest{FacilityId: "x9", Facility: &directoryv1.Facility{DisplayName: "x", Level: 2}}, wantCode: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.CreateFacility(tt.ctx, tt.req)
			servertest.WantError(t, err, tt.wantCode, tt.wantField)
		})
	}
}

func TestCreateFacilityIsIdempotentByRequestID(t *testing.T) {
	f := newFixture(t)
	ctx := f.admin(t)
	req := &directoryv1.CreateFacilityRequest{FacilityId: "qrmyy", RequestId: "r-1", Facility: &directoryv1.Facility{DisplayName: "人民医院", Level: 1}}
	first, err := f.client.CreateFacility(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.client.CreateFacility(ctx, req)
	if err != nil {
		t.Fatalf("retry with the same request_id: %v", err)
	}
	if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
		t.Errorf("retry returned a different facility:\n%s", diff)
	}
	evs, err := f.client.ListEvents(ctx, &directoryv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.GetEvents()) != 1 {
		t.Errorf("%d events after a create and its retry, want 1", len(evs.GetEvents()))
	}
	// Without the request ID, the same create is a duplicate.
	req.RequestId = ""
	_, err = f.client.CreateFacility(ctx, req)
	servertest.WantCode(t, err, codes.AlreadyExists)
}

func TestCommunitiesAreIsolated(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	other := f.As(t, "another-county", "qrmyy", admin)
	_, err := f.client.GetFacility(other, &directoryv1.GetFacilityRequest{Name: "facilities/dls"})
	servertest.WantCode(t, err, codes.NotFound)
	list, err := f.client.ListFacilities(other, &directoryv1.ListFacilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetFacilities()) != 0 {
		t.Errorf("another community lists %d facilities", len(list.GetFacilities()))
	}
	evs, err := f.client.ListEvents(other, &directoryv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.GetEvents()) != 0 {
		t.Errorf("another community sees %d events", len(evs.GetEvents()))
	}
}

func TestListFacilitiesPagesAndFilters(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	ctx := f.admin(t)
	for i := range 7 {
		_, err := f.client.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{
			FacilityId: fmt.Sprintf("v%02d", i),
			Facility:   &directoryv1.Facility{DisplayName: "卫生室", Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC, Parent: "facilities/dls"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	token := ""
	for pages := 0; ; pages++ {
		resp, err := f.client.ListFacilities(ctx, &directoryv1.ListFacilitiesRequest{PageSize: 3, PageToken: token, Parent: "facilities/dls"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetFacilities()) > 3 {
			t.Fatalf("page of %d, want at most 3", len(resp.GetFacilities()))
		}
		for _, fac := range resp.GetFacilities() {
			names = append(names, fac.GetName())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	want := []string{"facilities/v00", "facilities/v01", "facilities/v02", "facilities/v03", "facilities/v04", "facilities/v05", "facilities/v06"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("paged names (-want +got):\n%s", diff)
	}

	byLevel, err := f.client.ListFacilities(ctx, &directoryv1.ListFacilitiesRequest{Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER})
	if err != nil {
		t.Fatal(err)
	}
	if len(byLevel.GetFacilities()) != 2 {
		t.Errorf("%d township centers, want 2", len(byLevel.GetFacilities()))
	}

	first, err := f.client.ListFacilities(ctx, &directoryv1.ListFacilitiesRequest{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]*directoryv1.ListFacilitiesRequest{
		"garbage token":             {PageToken: "not-a-token"},
		"token with another filter": {PageToken: first.GetNextPageToken(), Parent: "facilities/dls"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.client.ListFacilities(ctx, req)
			servertest.WantField(t, err, "page_token")
		})
	}
}

func TestUpdateFacility(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	ctx := f.admin(t)
	got, err := f.client.GetFacility(ctx, &directoryv1.GetFacilityRequest{Name: "facilities/wjh"})
	if err != nil {
		t.Fatal(err)
	}
	etag := got.GetFacility().GetEtag()

	// A partial update sends only the name, the etag and the masked field.
	upd, err := f.client.UpdateFacility(ctx, &directoryv1.UpdateFacilityRequest{
		Facility:   &directoryv1.Facility{Name: "facilities/wjh", Etag: etag, DisplayName: "乌加河镇中心卫生院"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.GetFacility().GetDisplayName() != "乌加河镇中心卫生院" || upd.GetFacility().GetLevel() != typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER || upd.GetFacility().GetEtag() == etag {
		t.Errorf("after update: %v", upd.GetFacility())
	}

	tests := []struct {
		name      string
		req       *directoryv1.UpdateFacilityRequest
		wantCode  codes.Code
		wantField string
	}{
		{name: "stale etag", req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "facilities/wjh", Etag: etag, DisplayName: "x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}}, wantCode: codes.Aborted},
		{name: "unknown facility", req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "facilities/nope", DisplayName: "x"}}, wantCode: codes.NotFound},
		{name: "output-only field in mask", req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "facilities/wjh"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"community"}}}, wantField: "update_mask"},
		{name: "clearing the level", req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "facilities/wjh"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"level"}}}, wantField: "facility"},
		{name: "parent cycle", req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "facilities/qrmyy", Parent: "facilities/dls"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"parent"}}}, wantField: "facility.parent"},
		{name: "bad name", req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "wjh"}}, wantField: "facility"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.UpdateFacility(ctx, tt.req)
			servertest.WantError(t, err, tt.wantCode, tt.wantField)
		})
	}
}

func TestPractitioners(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	ctx := f.admin(t)
	created, err := f.client.CreatePractitioner(ctx, &directoryv1.CreatePractitionerRequest{
		Practitioner: &directoryv1.Practitioner{DisplayName: "韩医生", Facility: "facilities/dls", Roles: []typev1.Role{clinician}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetPractitioner().GetName() == "" || !created.GetPractitioner().GetActive() {
		t.Errorf("created %v", created.GetPractitioner())
	}
	if _, err := f.client.CreatePractitioner(ctx, &directoryv1.CreatePractitionerRequest{
		PractitionerId: "lab-wang",
		Practitioner:   &directoryv1.Practitioner{DisplayName: "王检验", Facility: "facilities/qrmyy", Roles: []typev1.Role{typev1.Role_ROLE_LAB_TECHNOLOGIST}},
	}); err != nil {
		t.Fatal(err)
	}
	labs, err := f.client.ListPractitioners(f.As(t, community, "dls", clinician), &directoryv1.ListPractitionersRequest{Role: typev1.Role_ROLE_LAB_TECHNOLOGIST})
	if err != nil {
		t.Fatal(err)
	}
	if len(labs.GetPractitioners()) != 1 || labs.GetPractitioners()[0].GetName() != "practitioners/lab-wang" {
		t.Errorf("lab technologists: %v", labs.GetPractitioners())
	}

	tests := []struct {
		name      string
		call      func() error
		wantCode  codes.Code
		wantField string
	}{
		{name: "unknown facility", call: func() error {
			_, err := f.client.CreatePractitioner(ctx, &directoryv1.CreatePractitionerRequest{Practitioner: &directoryv1.Practitioner{DisplayName: "x", Facility: "facilities/nope", Roles: []typev1.Role{clinician}}})
			return err
		}, wantField: "practitioner.facility"},
		{name: "no roles", call: func() error {
			_, err := f.client.CreatePractitioner(ctx, &directoryv1.CreatePractitionerRequest{Practitioner: &directoryv1.Practitioner{DisplayName: "x", Facility: "facilities/dls"}})
			return err
		}, wantField: "practitioner"},
		{name: "service role is not for people", call: func() error {
			_, err := f.client.CreatePractitioner(ctx, &directoryv1.CreatePractitionerRequest{Practitioner: &directoryv1.Practitioner{DisplayName: "x", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_SERVICE}}})
			return err
		}, wantField: "practitioner.roles[0]"},
		{name: "clearing roles", call: func() error {
			_, err := f.client.UpdatePractitioner(ctx, &directoryv1.UpdatePractitionerRequest{Practitioner: &directoryv1.Practitioner{Name: "practitioners/lab-wang"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}}})
			return err
		}, wantField: "practitioner"},
		{name: "stale etag", call: func() error {
			_, err := f.client.UpdatePractitioner(ctx, &directoryv1.UpdatePractitionerRequest{Practitioner: &directoryv1.Practitioner{Name: "practitioners/lab-wang", Etag: "7", Active: false}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"active"}}})
			return err
		}, wantCode: codes.Aborted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			servertest.WantError(t, err, tt.wantCode, tt.wantField)
		})
	}

	off, err := f.client.UpdatePractitioner(ctx, &directoryv1.UpdatePractitionerRequest{
		Practitioner: &directoryv1.Practitioner{Name: "practitioners/lab-wang", Etag: "1", Active: false},
		UpdateMask:   &fieldmaskpb.FieldMask{Paths: []string{"active"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if off.GetPractitioner().GetActive() || off.GetPractitioner().GetDisplayName() != "王检验" || off.GetPractitioner().GetEtag() != "2" {
		t.Errorf("after deactivation: %v", off.GetPractitioner())
	}
}

func TestRegisterPatient(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	dls := f.As(t, community, "dls", clinician)
	first, err := f.client.RegisterPatient(dls, &directoryv1.RegisterPatientRequest{ResidentId: batu, DisplayName: "巴特尔", HealthCardNumber: "HC001"})
	if err != nil {
		t.Fatal(err)
	}
	p := first.GetPatient()
	if !first.GetCreated() || p.GetSex() != typev1.Sex_SEX_MALE || p.GetBirthDate() != "1958-03-14" ||
		p.GetResidentIdMasked() != batu[:6]+"********"+batu[14:] || p.GetDisplayName() != "巴特尔" || p.GetRegisteringFacility() != "facilities/dls" {
		t.Errorf("registered %v", first)
	}

	// The county registers the same number: same patient, not created.
	county := f.As(t, community, "qrmyy", clinician)
	again, err := f.client.RegisterPatient(county, &directoryv1.RegisterPatientRequest{ResidentId: batu, DisplayName: "巴特尔"})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetCreated() || again.GetPatient().GetName() != p.GetName() {
		t.Errorf("second registration: %v", again)
	}

	// Matching by either identifier finds the patient.
	for name, req := range map[string]*directoryv1.MatchPatientRequest{
		"resident id": {Identifier: &directoryv1.MatchPatientRequest_ResidentId{ResidentId: batu}},
		"health card": {Identifier: &directoryv1.MatchPatientRequest_HealthCardNumber{HealthCardNumber: "HC001"}},
	} {
		t.Run("match by "+name, func(t *testing.T) {
			m, err := f.client.MatchPatient(dls, req)
			if err != nil {
				t.Fatal(err)
			}
			if m.GetPatient().GetName() != p.GetName() {
				t.Errorf("matched %s, want %s", m.GetPatient().GetName(), p.GetName())
			}
		})
	}

	tests := []struct {
		name      string
		call      func() error
		wantCode  codes.Code
		wantField string
	}{
		{name: "bad check digit", call: func() error {
			bad := batu[:17] + "0"
			if batu[17] == '0' {
				bad = batu[:17] + "1"
			}
			_, err := f.client.RegisterPatient(dls, &directoryv1.RegisterPatientRequest{ResidentId: bad, DisplayName: "x"})
			return err
		}, wantField: "resident_id"},
		{name: "too short", call: func() error {
			_, err := f.client.RegisterPatient(dls, &directoryv1.RegisterPatientRequest{ResidentId: batu[:17], DisplayName: "x"})
			return err
		}, wantField: "resident_id"},
		{name: "no name", call: func() error {
			_, err := f.client.RegisterPatient(dls, &directoryv1.RegisterPatientRequest{ResidentId: qiqige})
			return err
		}, wantField: "display_name"},
		{name: "health card of another patient", call: func() error {
			_, err := f.client.RegisterPatient(dls, &directoryv1.RegisterPatientRequest{ResidentId: qiqige, DisplayName: "其其格", HealthCardNumber: "HC001"})
			return err
		}, wantField: "health_card_number"},
		{name: "match with no identifier", call: func() error {
			_, err := f.client.MatchPatient(dls, &directoryv1.MatchPatientRequest{})
			return err
		}, wantCode: codes.InvalidArgument},
		{name: "match unknown", call: func() error {
			_, err := f.client.MatchPatient(dls, &directoryv1.MatchPatientRequest{Identifier: &directoryv1.MatchPatientRequest_ResidentId{ResidentId: qiqige}})
			return err
		}, wantCode: codes.NotFound},
		{name: "auditor may not register", call: func() error {
			_, err := f.client.RegisterPatient(f.As(t, community, "qrmyy", typev1.Role_ROLE_AUDITOR), &directoryv1.RegisterPatientRequest{ResidentId: qiqige, DisplayName: "其其格"})
			return err
		}, wantCode: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			servertest.WantError(t, err, tt.wantCode, tt.wantField)
		})
	}
	// The failed registration with a taken health card wrote nothing.
	_, err = f.client.MatchPatient(dls, &directoryv1.MatchPatientRequest{Identifier: &directoryv1.MatchPatientRequest_ResidentId{ResidentId: qiqige}})
	servertest.WantCode(t, err, codes.NotFound)
}

func TestConcurrentRegistrationYieldsOnePatient(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	const callers = 24
	names := make([]string, callers)
	created := make([]bool, callers)
	var wg sync.WaitGroup
	for i := range callers {
		facility := []string{"dls", "wjh", "qrmyy"}[i%3]
		ctx := f.As(t, community, facility, clinician)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := f.client.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{ResidentId: qiqige, DisplayName: "其其格"})
			if err != nil {
				t.Error(err)
				return
			}
			names[i], created[i] = resp.GetPatient().GetName(), resp.GetCreated()
		}()
	}
	wg.Wait()
	creations := 0
	for i := range callers {
		if names[i] != names[0] {
			t.Fatalf("caller %d got %s, caller 0 got %s", i, names[i], names[0])
		}
		if created[i] {
			creations++
		}
	}
	if creations != 1 {
		t.Errorf("%d callers were told they created the patient, want 1", creations)
	}
}

func TestPatientAccessIsByFacility(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	dls := f.As(t, community, "dls", clinician)
	wjh := f.As(t, community, "wjh", clinician)
	reg, err := f.client.RegisterPatient(dls, &directoryv1.RegisterPatientRequest{ResidentId: batu, DisplayName: "巴特尔"})
	if err != nil {
		t.Fatal(err)
	}
	name := reg.GetPatient().GetName()

	if _, err := f.client.GetPatient(dls, &directoryv1.GetPatientRequest{Name: name}); err != nil {
		t.Errorf("the registering facility cannot read its patient: %v", err)
	}
	// Another facility gets the same answer as for a patient that does not
	// exist.
	_, err = f.client.GetPatient(wjh, &directoryv1.GetPatientRequest{Name: name})
	servertest.WantCode(t, err, codes.NotFound)
	_, err = f.client.GetPatient(wjh, &directoryv1.GetPatientRequest{Name: "patients/00000000-0000-0000-0000-000000000000"})
	servertest.WantCode(t, err, codes.NotFound)
	list, err := f.client.ListPatients(wjh, &directoryv1.ListPatientsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetPatients()) != 0 {
		t.Errorf("another facility lists %d patients", len(list.GetPatients()))
	}
	// The administrator sees the whole community.
	if _, err := f.client.GetPatient(f.admin(t), &directoryv1.GetPatientRequest{Name: name}); err != nil {
		t.Errorf("admin: %v", err)
	}
	// Matching the patient (the patient is in front of the clinician) links
	// the facility, which then may read the patient.
	if _, err := f.client.MatchPatient(wjh, &directoryv1.MatchPatientRequest{Identifier: &directoryv1.MatchPatientRequest_ResidentId{ResidentId: batu}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.GetPatient(wjh, &directoryv1.GetPatientRequest{Name: name}); err != nil {
		t.Errorf("after a match: %v", err)
	}
	list, err = f.client.ListPatients(wjh, &directoryv1.ListPatientsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetPatients()) != 1 || list.GetPatients()[0].GetName() != name {
		t.Errorf("after a match, list = %v", list.GetPatients())
	}
}

func TestIdentifiersAreNotStoredInClear(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	if _, err := f.client.RegisterPatient(f.As(t, community, "dls", clinician), &directoryv1.RegisterPatientRequest{ResidentId: batu, DisplayName: "巴特尔", HealthCardNumber: "HC150824001"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var all []store.Record
	after := ""
	for {
		recs, more, err := f.store.List(ctx, community, "", after, 100)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
		if !more {
			break
		}
		after = recs[len(recs)-1].Key
	}
	evs, err := f.store.Events(ctx, community, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		all = append(all, store.Record{Key: fmt.Sprint("event ", e.Seq), Value: e.Data})
	}
	for _, secret := range []string{batu, batu[6:14], "巴特尔", "HC150824001"} {
		for _, r := range all {
			if bytes.Contains([]byte(r.Key), []byte(secret)) || bytes.Contains(r.Value, []byte(secret)) {
				t.Errorf("%q is stored in clear in %s", secret, r.Key)
			}
		}
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t)
	f.county(t)
	ctx := f.admin(t)
	all, err := f.client.ListEvents(ctx, &directoryv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range all.GetEvents() {
		types = append(types, e.GetType()+" "+e.GetResource())
	}
	want := []string{"facility.created facilities/qrmyy", "facility.created facilities/dls", "facility.created facilities/wjh"}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// Paging by cursor returns each event once.
	one, err := f.client.ListEvents(ctx, &directoryv1.ListEventsRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	rest, err := f.client.ListEvents(ctx, &directoryv1.ListEventsRequest{After: one.GetNextCursor()})
	if err != nil {
		t.Fatal(err)
	}
	if len(one.GetEvents()) != 1 || len(rest.GetEvents()) != 2 || rest.GetEvents()[0].GetId() == one.GetEvents()[0].GetId() {
		t.Errorf("paging: first %v, rest %v", one.GetEvents(), rest.GetEvents())
	}

	// A township clinician sees only events that concern its facility.
	mine, err := f.client.ListEvents(f.As(t, community, "wjh", clinician), &directoryv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range mine.GetEvents() {
		if e.GetResource() == "facilities/dls" {
			t.Errorf("wjh sees %s of dls", e.GetType())
		}
	}
	if len(mine.GetEvents()) != 1 || mine.GetNextCursor() != all.GetNextCursor() {
		t.Errorf("wjh sees %d events, cursor %q; want 1 and the same end cursor %q", len(mine.GetEvents()), mine.GetNextCursor(), all.GetNextCursor())
	}

	for name, after := range map[string]string{
		"garbage cursor":              "%%%",
		"cursor of another community": otherCommunityCursor(t, f),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.client.ListEvents(ctx, &directoryv1.ListEventsRequest{After: after})
			servertest.WantField(t, err, "after")
		})
	}
}

func otherCommunityCursor(t *testing.T, f *fixture) string {
	other := f.As(t, "another-county", "x", admin)
	resp, err := f.client.ListEvents(other, &directoryv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetNextCursor()
}

func TestWatchEvents(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(f.admin(t), 10*time.Second)
	defer cancel()
	if _, err := f.client.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "人民医院", Level: 1}}); err != nil {
		t.Fatal(err)
	}
	stream, err := f.client.WatchEvents(ctx, &directoryv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// First the backlog...
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetEvent().GetResource() != "facilities/qrmyy" {
		t.Fatalf("backlog event %v", first.GetEvent())
	}
	// ...then a change committed while watching.
	if _, err := f.client.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: "mzyy", Facility: &directoryv1.Facility{DisplayName: "蒙中医医院", Level: 1}}); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if next.GetEvent().GetResource() != "facilities/mzyy" || next.GetEvent().GetType() != "facility.created" {
		t.Fatalf("live event %v", next.GetEvent())
	}
	// Resuming after the first event's cursor starts at the second.
	resumed, err := f.client.WatchEvents(ctx, &directoryv1.WatchEventsRequest{After: first.GetEvent().GetCursor()})
	if err != nil {
		t.Fatal(err)
	}
	again, err := resumed.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if again.GetEvent().GetId() != next.GetEvent().GetId() {
		t.Errorf("resumed at %s, want %s", again.GetEvent().GetId(), next.GetEvent().GetId())
	}
}

// TestTier: county hospitals above township and community health centers,
// above village clinics, above an unknown level.
func TestTier(t *testing.T) {
	order := [][]typev1.FacilityLevel{
		{typev1.FacilityLevel_FACILITY_LEVEL_UNSPECIFIED},
		{typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC},
		{typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, typev1.FacilityLevel_FACILITY_LEVEL_COMMUNITY_HEALTH_CENTER},
		{typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL},
	}
	for want, levels := range order {
		for _, l := range levels {
			if got := directory.Tier(l); got != want {
				t.Errorf("Tier(%v) = %d, want %d", l, got, want)
			}
		}
	}
}
