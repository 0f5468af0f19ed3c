package audit_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	_ "github.com/countymcc/mcc/proto/mcc/admin/v1"
	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	_ "github.com/countymcc/mcc/proto/mcc/feed/v1"
	_ "github.com/countymcc/mcc/proto/mcc/lab/v1"
	_ "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

// TestTouches: the schema decides which methods are audited.
func TestTouches(t *testing.T) {
	for method, want := range map[string]bool{
		"/mcc.directory.v1.DirectoryService/ListFacilities":              false,
		"/mcc.directory.v1.DirectoryService/CreateFacility":              false,
		"/mcc.directory.v1.DirectoryService/GetPatient":                  true, // returns a Patient
		"/mcc.directory.v1.DirectoryService/MatchPatient":                true,
		"/mcc.lab.v1.LabService/CreateOrder":                             true, // Order.patient
		"/mcc.lab.v1.LabService/ListOrders":                              true,
		"/mcc.sterilization.v1.SterilizationService/ListPatientPackages": true,
		"/mcc.sterilization.v1.SterilizationService/ListSterilizers":     false,
		"/mcc.feed.v1.FeedService/Poll":                                  true, // events wrap snapshots in Any
		"/mcc.admin.v1.AdminService/Backup":                              true, // (mcc.type.v1.patient_data)
		"/mcc.audit.v1.AuditService/ListAuditRecords":                    true,
		"/mcc.audit.v1.AuditService/VerifyChain":                         true,
		"/grpc.health.v1.Health/Check":                                   false,
		"/mcc.lab.v1.LabService/NoSuchMethod":                            false,
	} {
		if got := audit.Touches(method); got != want {
			t.Errorf("Touches(%s) = %v, want %v", method, got, want)
		}
	}
}

// TestRecordOutlivesTheCaller: a watch ends when its client cancels it, and
// a write may commit just before its client gives up. Either way the call's
// record is committed before its handler returns, so a graceful stop, which
// waits for handlers, cannot close the store under it; and the call's own
// outcome stands.
func TestRecordOutlivesTheCaller(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "audit.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	trail := audit.NewTrail(st)
	var logs bytes.Buffer
	rec := audit.NewRecorder(audit.NewWriter(audit.NewTrail(slowStore{st})), clock.System{}, slog.New(slog.NewTextHandler(&logs, nil)))
	caller := auth.Caller{Subject: "doc", Community: "demo", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
	records := func() []*auditv1.AuditRecord {
		recs, _, err := trail.List(context.Background(), "demo", audit.Query{}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}

	t.Run("a watch its client cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(auth.WithCaller(context.Background(), caller))
		handler := func(_ any, ss grpc.ServerStream) error {
			cancel()
			<-ss.Context().Done()
			return status.FromContextError(ss.Context().Err()).Err()
		}
		info := &grpc.StreamServerInfo{FullMethod: "/mcc.feed.v1.FeedService/Watch", IsServerStream: true}
		err := rec.StreamServerInterceptor()(nil, contextStream{ctx: ctx}, info, handler)
		if status.Code(err) != codes.Canceled {
			t.Errorf("the watch ended with %v, want its own Canceled", err)
		}
		if got := records(); len(got) != 1 || got[0].GetOutcome() != "CANCELLED" || got[0].GetMethod() != info.FullMethod {
			t.Errorf("records when the handler returned: %v, want the watch's, CANCELLED", got)
		}
	})
	t.Run("a write whose client gave up after it committed", func(t *testing.T) {
		ctx, cancel := context.WithCancel(auth.WithCaller(context.Background(), caller))
		handler := func(context.Context, any) (any, error) {
			cancel()
			return &directoryv1.RegisterPatientResponse{Patient: &directoryv1.Patient{Name: "patients/p1"}}, nil
		}
		info := &grpc.UnaryServerInfo{FullMethod: "/mcc.directory.v1.DirectoryService/RegisterPatient"}
		resp, err := rec.UnaryServerInterceptor()(ctx, &directoryv1.RegisterPatientRequest{}, info, handler)
		if err != nil || resp == nil {
			t.Errorf("the write ended with %v, %v, want its response", resp, err)
		}
		got := records()
		if len(got) != 2 || got[1].GetOutcome() != "OK" || !slices.Equal(got[1].GetPatients(), []string{"patients/p1"}) {
			t.Errorf("records when the handler returned: %v, want the write's second, OK, of patients/p1", got)
		}
	})
	if strings.Contains(logs.String(), "not written") {
		t.Errorf("a record was reported lost:\n%s", logs.String())
	}
}

// slowStore delays every transaction, so a record the caller does not wait
// for is not yet committed when the handler returns.
type slowStore struct{ store.Store }

func (s slowStore) Txn(ctx context.Context, p store.Partition, fn func(store.Tx) error) error {
	time.Sleep(100 * time.Millisecond)
	return s.Store.Txn(ctx, p, fn)
}

// contextStream is a server stream that only has a context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s contextStream) Context() context.Context { return s.ctx }
