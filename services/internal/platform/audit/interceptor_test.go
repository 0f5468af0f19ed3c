package audit_test

import (
	"testing"

	_ "github.com/countymcc/mcc/proto/mcc/admin/v1"
	_ "github.com/countymcc/mcc/proto/mcc/audit/v1"
	_ "github.com/countymcc/mcc/proto/mcc/directory/v1"
	_ "github.com/countymcc/mcc/proto/mcc/feed/v1"
	_ "github.com/countymcc/mcc/proto/mcc/lab/v1"
	_ "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/services/internal/platform/audit"
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
