package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// TestMassAssignment tries to set through REST what only the server may
// set: the facility an order is charged to, a referral's state, a
// facility's community. Each is a 400 naming the field, and nothing is
// created.
func TestMassAssignment(t *testing.T) {
	sys := start(t)
	if out, err := mcc(t, "seed", "demo", "-addr", sys.grpc, "-data-dir", sys.dataDir); err != nil {
		t.Fatalf("seed: %v %s", err, out)
	}
	admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	doc := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	patient := sys.do(t, "GET", "/v1/patients", doc, "").want(t, 200).str(t, "patients.0.name")
	for name, tc := range map[string]struct {
		token, path, body, field string
	}{
		"order charged to another facility": {doc, "/v1/lab/orders?requestId=m1",
			fmt.Sprintf(`{"patient":%q,"tests":["2823-3"],"priority":"PRIORITY_ROUTINE","requestingFacility":"facilities/wjh"}`, patient), "order.requesting_facility"},
		"referral created already accepted": {doc, "/v1/referrals",
			fmt.Sprintf(`{"direction":"DIRECTION_UP","patient":%q,"targetFacility":"facilities/qrmyy","targetDepartment":"内科","reason":"x","urgency":"URGENCY_ROUTINE","diagnosis":{"code":"I10"},"clinicalSummary":"x","state":"STATE_ACCEPTED"}`, patient), "referral.state"},
		"facility in another community": {admin, "/v1/facilities?facility_id=m2",
			`{"displayName":"x","level":"FACILITY_LEVEL_VILLAGE_CLINIC","community":"elsewhere"}`, "facility.community"},
	} {
		t.Run(name, func(t *testing.T) {
			sys.do(t, "POST", tc.path, tc.token, tc.body).want(t, 400).wantField(t, tc.field)
		})
	}
	if n := len(sys.do(t, "GET", "/v1/lab/orders", doc, "").want(t, 200).list(t, "orders")); n != 0 {
		t.Errorf("%d orders after refused creates", n)
	}
}

// TestHeaderInjection sends headers that try to become gRPC metadata or
// act for another facility; none has any effect.
func TestHeaderInjection(t *testing.T) {
	sys := start(t)
	doc := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	for _, h := range [][2]string{
		{"Grpc-Metadata-Authorization", "Bearer " + sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)},
		{"X-Forwarded-For", "10.0.0.1"},
		{"X-Request-Id", "<script>Injected</script>"},
	} {
		t.Run(h[0], func(t *testing.T) {
			r := sys.doHeaders(t, "POST", "/v1/facilities?facility_id=inj", doc, `{"displayName":"x","level":"FACILITY_LEVEL_VILLAGE_CLINIC"}`, h)
			if r.status != 403 {
				t.Errorf("status %d, want 403 (the clinician's own rights): %s", r.status, r.raw)
			}
			if strings.Contains(r.raw, "Injected") {
				t.Error("an injected header came back")
			}
		})
	}
}
