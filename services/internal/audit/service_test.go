package audit_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/audit"
	"github.com/countymcc/mcc/services/internal/directory"
	platformaudit "github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

type fixture struct {
	env        *servertest.Env
	auditStore *bolt.Store
	trail      *platformaudit.Trail
	dir        directoryv1.DirectoryServiceClient
	audit      auditv1.AuditServiceClient
}

// start serves the directory and the audit service with the audit
// interceptor, each on its own bolt store, as mcc does.
func start(t *testing.T) *fixture {
	t.Helper()
	clk := clock.NewManual(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	open := func(name string) *bolt.Store {
		st, err := bolt.Open(filepath.Join(t.TempDir(), name+".db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	protector, err := pii.NewProtector(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	auditStore := open("audit")
	trail := platformaudit.NewTrail(auditStore)
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	rec := platformaudit.NewRecorder(platformaudit.NewWriter(trail), clk, logger)
	policy := directory.Policy()
	policy.Merge(audit.Policy())
	dir := directory.New(open("directory"), protector, clk)
	svc := audit.New(trail, clk, logger, audit.Config{Retention: audit.MinRetention, PruneInterval: time.Hour})
	env := servertest.Start(t, clk, policy, func(s *grpc.Server) {
		dir.Register(s)
		svc.Register(s)
	}, servertest.WithAudit(rec))
	return &fixture{env: env, auditStore: auditStore, trail: trail, dir: directoryv1.NewDirectoryServiceClient(env.Conn), audit: auditv1.NewAuditServiceClient(env.Conn)}
}

// records returns every record of the demo community.
func (f *fixture) records(t *testing.T) []*auditv1.AuditRecord {
	t.Helper()
	recs, _, err := f.trail.List(context.Background(), "demo", platformaudit.Query{}, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// one runs call and checks it wrote exactly one record, which it returns
// (nil when want is 0).
func (f *fixture) one(t *testing.T, want int, call func() error) (*auditv1.AuditRecord, error) {
	t.Helper()
	before := len(f.records(t))
	err := call()
	after := f.records(t)
	if len(after)-before != want {
		t.Fatalf("the call wrote %d records, want %d", len(after)-before, want)
	}
	if want == 0 {
		return nil, err
	}
	return after[len(after)-1], err
}

var residentID = directory.WithCheckDigit("15082419580314201")

func TestInterceptorRecordsPatientCalls(t *testing.T) {
	f := start(t)
	doc := f.env.As(t, "demo", "dls", typev1.Role_ROLE_CLINICIAN)
	withPurpose := metadata.AppendToOutgoingContext(doc, "x-mcc-purpose", "TREATMENT", "x-request-id", "req-42")

	var patient string
	t.Run("a write is recorded with who, what, whom, why and the outcome", func(t *testing.T) {
		rec, err := f.one(t, 1, func() error {
			resp, err := f.dir.RegisterPatient(withPurpose, &directoryv1.RegisterPatientRequest{ResidentId: residentID, DisplayName: "巴特尔"})
			patient = resp.GetPatient().GetName()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		want := &auditv1.AuditRecord{
			Subject: "test", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN},
			Method: "/mcc.directory.v1.DirectoryService/RegisterPatient", Patients: []string{patient}, Resources: []string{patient},
			Purpose: "TREATMENT", Outcome: "OK", RequestId: "req-42", Community: "demo",
		}
		got := &auditv1.AuditRecord{Subject: rec.Subject, Facility: rec.Facility, Roles: rec.Roles, Method: rec.Method, Patients: rec.Patients,
			Resources: rec.Resources, Purpose: rec.Purpose, Outcome: rec.Outcome, RequestId: rec.RequestId, Community: rec.Community}
		if protojson.Format(got) != protojson.Format(want) {
			t.Errorf("record\n%s\nwant\n%s", protojson.Format(got), protojson.Format(want))
		}
		if rec.GetTime().AsTime() != f.env.Clock.Now() || len(rec.GetHash()) != 32 {
			t.Errorf("time %v hash %x", rec.GetTime().AsTime(), rec.GetHash())
		}
	})
	t.Run("a read", func(t *testing.T) {
		rec, err := f.one(t, 1, func() error {
			_, err := f.dir.GetPatient(doc, &directoryv1.GetPatientRequest{Name: patient})
			return err
		})
		if err != nil || rec.GetOutcome() != "OK" || rec.GetPatients()[0] != patient || rec.GetMethod() != "/mcc.directory.v1.DirectoryService/GetPatient" {
			t.Errorf("%v: %v", err, rec)
		}
	})
	t.Run("a list", func(t *testing.T) {
		rec, err := f.one(t, 1, func() error {
			_, err := f.dir.ListPatients(doc, &directoryv1.ListPatientsRequest{})
			return err
		})
		if err != nil || len(rec.GetPatients()) != 1 || rec.GetPatients()[0] != patient {
			t.Errorf("%v: %v", err, rec)
		}
	})
	t.Run("a failed read, with its outcome", func(t *testing.T) {
		rec, err := f.one(t, 1, func() error {
			_, err := f.dir.GetPatient(doc, &directoryv1.GetPatientRequest{Name: "patients/00000000-0000-0000-0000-000000000000"})
			return err
		})
		if status.Code(err) != codes.NotFound || rec.GetOutcome() != "NOT_FOUND" || rec.GetPatients()[0] != "patients/00000000-0000-0000-0000-000000000000" {
			t.Errorf("%v: %v", err, rec)
		}
	})
	t.Run("a call refused by role", func(t *testing.T) {
		auditor := f.env.As(t, "demo", "qrmyy", typev1.Role_ROLE_AUDITOR)
		rec, err := f.one(t, 1, func() error {
			_, err := f.dir.GetPatient(auditor, &directoryv1.GetPatientRequest{Name: patient})
			return err
		})
		if status.Code(err) != codes.PermissionDenied || rec.GetOutcome() != "PERMISSION_DENIED" || rec.GetSubject() != "test" {
			t.Errorf("%v: %v", err, rec)
		}
	})
	t.Run("a malformed purpose is refused naming the metadata, and recorded", func(t *testing.T) {
		bad := metadata.AppendToOutgoingContext(doc, "x-mcc-purpose", "x;y")
		rec, err := f.one(t, 1, func() error {
			_, err := f.dir.GetPatient(bad, &directoryv1.GetPatientRequest{Name: patient})
			return err
		})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "x-mcc-purpose") || rec.GetOutcome() != "INVALID_ARGUMENT" || rec.GetPurpose() != "" {
			t.Errorf("%v: %v", err, rec)
		}
	})
	t.Run("calls without patient data are not recorded", func(t *testing.T) {
		f.one(t, 0, func() error {
			_, err := f.dir.ListFacilities(doc, &directoryv1.ListFacilitiesRequest{})
			return err
		})
	})
	t.Run("no identifier or name is in any record", func(t *testing.T) {
		for _, r := range f.records(t) {
			text := protojson.Format(r)
			for _, secret := range []string{residentID, residentID[6:14], "巴特尔"} {
				if strings.Contains(text, secret) {
					t.Errorf("%q is in %s", secret, text)
				}
			}
		}
	})
	t.Run("the chain verifies", func(t *testing.T) {
		v, err := f.trail.Verify(context.Background(), "demo")
		if err != nil || !v.OK() || v.Checked != 6 {
			t.Errorf("%s %v", v, err)
		}
	})
}

func TestAuditorQueries(t *testing.T) {
	f := start(t)
	doc := f.env.As(t, "demo", "dls", typev1.Role_ROLE_CLINICIAN)
	reg, err := f.dir.RegisterPatient(doc, &directoryv1.RegisterPatientRequest{ResidentId: residentID, DisplayName: "巴特尔"})
	if err != nil {
		t.Fatal(err)
	}
	patient := reg.GetPatient().GetName()
	f.env.Clock.Advance(30 * time.Minute)
	for i := 0; i < 3; i++ {
		if _, err := f.dir.GetPatient(doc, &directoryv1.GetPatientRequest{Name: patient}); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := f.env.Keys.Issue(auth.Caller{Subject: "auditor-1", Community: "demo", Facility: "facilities/qrmyy", Roles: []typev1.Role{typev1.Role_ROLE_AUDITOR}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	auditor := servertest.WithToken(context.Background(), tok)

	t.Run("by patient, audited itself", func(t *testing.T) {
		rec, err := f.one(t, 1, func() error {
			resp, err := f.audit.ListAuditRecords(auditor, &auditv1.ListAuditRecordsRequest{Patient: patient})
			if len(resp.GetAuditRecords()) != 4 {
				t.Errorf("%d records of the patient, want 4", len(resp.GetAuditRecords()))
			}
			return err
		})
		if err != nil || rec.GetMethod() != "/mcc.audit.v1.AuditService/ListAuditRecords" || rec.GetPatients()[0] != patient || rec.GetSubject() != "auditor-1" {
			t.Errorf("%v: %v", err, rec)
		}
	})
	t.Run("by actor and time, in pages", func(t *testing.T) {
		req := &auditv1.ListAuditRecordsRequest{Actor: "test", StartTime: timestamppb.New(f.env.Clock.Now()), PageSize: 2}
		first, err := f.audit.ListAuditRecords(auditor, req)
		if err != nil || len(first.GetAuditRecords()) != 2 || first.GetNextPageToken() == "" {
			t.Fatalf("%v %v", first, err)
		}
		req.PageToken = first.GetNextPageToken()
		second, err := f.audit.ListAuditRecords(auditor, req)
		if err != nil || len(second.GetAuditRecords()) != 1 || second.GetNextPageToken() != "" {
			t.Fatalf("%v %v", second, err)
		}
		for _, r := range append(first.GetAuditRecords(), second.GetAuditRecords()...) {
			if r.GetMethod() != "/mcc.directory.v1.DirectoryService/GetPatient" {
				t.Errorf("a record outside the range: %v", r)
			}
		}
	})
	t.Run("export a patient's access history", func(t *testing.T) {
		stream, err := f.audit.ExportPatientAccess(auditor, &auditv1.ExportPatientAccessRequest{Patient: patient})
		if err != nil {
			t.Fatal(err)
		}
		var methods []string
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			methods = append(methods, r.GetAuditRecord().GetMethod()[strings.LastIndex(r.GetAuditRecord().GetMethod(), "/")+1:])
		}
		// The auditor's earlier reads of records about the patient (by
		// patient, then two pages by actor) are part of the history.
		want := "RegisterPatient GetPatient GetPatient GetPatient ListAuditRecords ListAuditRecords ListAuditRecords"
		if strings.Join(methods, " ") != want {
			t.Errorf("history %v, want %s", methods, want)
		}
		// The export, a stream, is recorded once when it ends, with the
		// patient it sent and the records it named.
		recs := f.records(t)
		last := recs[len(recs)-1]
		if last.GetMethod() != "/mcc.audit.v1.AuditService/ExportPatientAccess" || last.GetOutcome() != "OK" ||
			len(last.GetPatients()) != 1 || last.GetPatients()[0] != patient || len(last.GetResources()) != len(methods) {
			t.Errorf("the export's record: %v", last)
		}
	})
	t.Run("auditors see only their community", func(t *testing.T) {
		other := f.env.As(t, "elsewhere", "qrmyy", typev1.Role_ROLE_AUDITOR)
		resp, err := f.audit.ListAuditRecords(other, &auditv1.ListAuditRecordsRequest{Patient: patient})
		if err != nil || len(resp.GetAuditRecords()) != 0 {
			t.Errorf("another community's auditor got %v, %v", resp, err)
		}
	})
	t.Run("only auditors", func(t *testing.T) {
		admin := f.env.As(t, "demo", "qrmyy", typev1.Role_ROLE_ADMIN)
		_, err := f.audit.ListAuditRecords(admin, &auditv1.ListAuditRecordsRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("an administrator got %v", err)
		}
	})
	for _, tt := range []struct {
		name  string
		req   *auditv1.ListAuditRecordsRequest
		field string
	}{
		{"end before start", &auditv1.ListAuditRecordsRequest{StartTime: timestamppb.New(time.Unix(2000, 0)), EndTime: timestamppb.New(time.Unix(1000, 0))}, "end_time"},
		{"bad page token", &auditv1.ListAuditRecordsRequest{PageToken: "bm90LWEtdG9rZW4"}, "page_token"},
		{"bad patient", &auditv1.ListAuditRecordsRequest{Patient: "150824195803142014"}, "patient"},
	} {
		t.Run(tt.name+" is INVALID_ARGUMENT naming "+tt.field, func(t *testing.T) {
			_, err := f.audit.ListAuditRecords(auditor, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("got %v", err)
			}
		})
	}
	t.Run("verify online", func(t *testing.T) {
		v, err := f.audit.VerifyChain(auditor, &auditv1.VerifyChainRequest{})
		if err != nil || !v.GetValid() || v.GetHeadSequence() < 5 || len(v.GetHeadHash()) != 32 {
			t.Errorf("%v %v", v, err)
		}
	})
}

func TestRetention(t *testing.T) {
	if err := (audit.Config{Retention: 300 * 24 * time.Hour, PruneInterval: time.Hour}).Validate(); err == nil || !strings.Contains(err.Error(), "-audit.retention") {
		t.Errorf("a retention under twelve months: %v", err)
	}
	f := start(t)
	doc := f.env.As(t, "demo", "dls", typev1.Role_ROLE_CLINICIAN)
	if _, err := f.dir.RegisterPatient(doc, &directoryv1.RegisterPatientRequest{ResidentId: residentID, DisplayName: "巴特尔"}); err != nil {
		t.Fatal(err)
	}
	f.env.Clock.Advance(200 * 24 * time.Hour)
	doc = f.env.As(t, "demo", "dls", typev1.Role_ROLE_CLINICIAN)
	if _, err := f.dir.ListPatients(doc, &directoryv1.ListPatientsRequest{}); err != nil {
		t.Fatal(err)
	}
	f.env.Clock.Advance(200 * 24 * time.Hour)
	svc := audit.New(f.trail, f.env.Clock, slog.New(slog.NewJSONHandler(io.Discard, nil)), audit.Config{Retention: audit.MinRetention})
	if err := svc.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := f.records(t)
	if len(recs) != 1 || recs[0].GetSequence() != 2 {
		t.Fatalf("kept %v, want only record 2", recs)
	}
	v, err := f.trail.Verify(context.Background(), "demo")
	if err != nil || !v.OK() || v.First != 2 {
		t.Errorf("after pruning: %s %v", v, err)
	}
}

// TestFailsClosed: when the record cannot be written, a read returns no
// data and a write reports UNAVAILABLE; calls without patient data go on.
func TestFailsClosed(t *testing.T) {
	f := start(t)
	doc := f.env.As(t, "demo", "dls", typev1.Role_ROLE_CLINICIAN)
	reg, err := f.dir.RegisterPatient(doc, &directoryv1.RegisterPatientRequest{ResidentId: residentID, DisplayName: "巴特尔"})
	if err != nil {
		t.Fatal(err)
	}
	f.auditStore.Close()
	got, err := f.dir.GetPatient(doc, &directoryv1.GetPatientRequest{Name: reg.GetPatient().GetName()})
	if status.Code(err) != codes.Unavailable || got != nil {
		t.Errorf("read without a record: %v, %v", got, err)
	}
	_, err = f.dir.RegisterPatient(doc, &directoryv1.RegisterPatientRequest{ResidentId: directory.WithCheckDigit("15082419600101123"), DisplayName: "其其格"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "request_id") {
		t.Errorf("write without a record: %v", err)
	}
	if _, err := f.dir.ListFacilities(doc, &directoryv1.ListFacilitiesRequest{}); err != nil {
		t.Errorf("a call without patient data failed: %v", err)
	}
}
