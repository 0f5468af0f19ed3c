// Package e2e starts the whole system in one process, on ephemeral ports,
// and plays real workflows through the REST gateway.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

func TestDirectoryOverREST(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			sys := start(t, backend.flags(t)...)
			testDirectoryOverREST(t, sys)
		})
	}
}

func testDirectoryOverREST(t *testing.T, sys *system) {
	admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	clinic := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)

	// An administrator builds the community.
	sys.do(t, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	created := sys.do(t, "POST", "/v1/facilities?facility_id=dls&request_id=create-dls-1", admin,
		`{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",
		  "centers":[{"center":"CENTER_LAB","facility":"facilities/qrmyy"}]}`).want(t, 200)
	if created.str(t, "facility.name") != "facilities/dls" || created.str(t, "facility.etag") != "1" {
		t.Fatalf("created %s", created.body)
	}

	t.Run("repeated request_id returns the first result and creates nothing", func(t *testing.T) {
		again := sys.do(t, "POST", "/v1/facilities?facility_id=dls&request_id=create-dls-1", admin,
			`{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`).want(t, 200)
		if again.str(t, "facility.createTime") != created.str(t, "facility.createTime") {
			t.Errorf("retry returned %s, first was %s", again.body, created.body)
		}
		list := sys.do(t, "GET", "/v1/facilities", admin, "").want(t, 200)
		if n := len(list.list(t, "facilities")); n != 2 {
			t.Errorf("%d facilities after a retried create, want 2", n)
		}
	})

	t.Run("list and page", func(t *testing.T) {
		page := sys.do(t, "GET", "/v1/facilities?pageSize=1", clinic, "").want(t, 200)
		token := page.str(t, "nextPageToken")
		if len(page.list(t, "facilities")) != 1 || token == "" {
			t.Fatalf("first page %s", page.body)
		}
		next := sys.do(t, "GET", "/v1/facilities?pageSize=1&pageToken="+token, clinic, "").want(t, 200)
		if next.str(t, "facilities.0.name") != "facilities/qrmyy" {
			t.Errorf("second page %s", next.body)
		}
	})

	t.Run("unknown page token is 400", func(t *testing.T) {
		sys.do(t, "GET", "/v1/facilities?pageToken=bm90LWEtdG9rZW4", clinic, "").want(t, 400).wantField(t, "page_token")
	})

	t.Run("stale etag is 409", func(t *testing.T) {
		sys.do(t, "PATCH", "/v1/facilities/dls?updateMask=displayName", admin, `{"displayName":"德岭山镇中心卫生院","etag":"1"}`).want(t, 200)
		sys.do(t, "PATCH", "/v1/facilities/dls?updateMask=displayName", admin, `{"displayName":"又改了","etag":"1"}`).want(t, 409)
	})

	id := directory.WithCheckDigit("15082419580314201")
	t.Run("patients", func(t *testing.T) {
		reg := sys.do(t, "POST", "/v1/patients:register", clinic, fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, id)).want(t, 200)
		if reg.body["created"] != true || !strings.HasPrefix(reg.str(t, "patient.name"), "patients/") {
			t.Fatalf("register: %s", reg.body)
		}
		if strings.Contains(reg.raw, id) {
			t.Errorf("the full ID number is in the response: %s", reg.raw)
		}
		again := sys.do(t, "POST", "/v1/patients:register", clinic, fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, id)).want(t, 200)
		if again.body["created"] != false || again.str(t, "patient.name") != reg.str(t, "patient.name") {
			t.Errorf("second registration: %s", again.body)
		}
		list := sys.do(t, "GET", "/v1/patients", clinic, "").want(t, 200)
		if len(list.list(t, "patients")) != 1 {
			t.Errorf("list: %s", list.body)
		}
		// Another facility of the community cannot see the patient.
		other := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_CLINICIAN)
		sys.do(t, "GET", "/v1/"+reg.str(t, "patient.name"), other, "").want(t, 404)
	})

	t.Run("invalid ID number is 400 naming the field", func(t *testing.T) {
		sys.do(t, "POST", "/v1/patients:register", clinic, `{"residentId":"150824195803142010","displayName":"x"}`).want(t, 400).wantField(t, "resident_id")
		sys.do(t, "POST", "/v1/patients:register", clinic, `{"residentId":"15082419580314","displayName":"x"}`).want(t, 400).wantField(t, "resident_id")
	})

	t.Run("missing or expired token is 401", func(t *testing.T) {
		sys.do(t, "GET", "/v1/facilities", "", "").want(t, 401)
		sys.do(t, "GET", "/v1/facilities", "not.a.jwt", "").want(t, 401)
		expired := sys.token(t, "demo", "dls", -time.Minute, typev1.Role_ROLE_CLINICIAN)
		sys.do(t, "GET", "/v1/facilities", expired, "").want(t, 401)
	})

	t.Run("a token of another community sees nothing", func(t *testing.T) {
		stranger := sys.token(t, "elsewhere", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
		sys.do(t, "GET", "/v1/facilities/dls", stranger, "").want(t, 404)
		list := sys.do(t, "GET", "/v1/facilities", stranger, "").want(t, 200)
		if n := len(list.list(t, "facilities")); n != 0 {
			t.Errorf("another community lists %d facilities", n)
		}
	})

	t.Run("a clinician cannot administer", func(t *testing.T) {
		sys.do(t, "POST", "/v1/facilities?facility_id=x1", clinic, `{"displayName":"x","level":"FACILITY_LEVEL_VILLAGE_CLINIC"}`).want(t, 403)
	})

	t.Run("unknown JSON fields are refused", func(t *testing.T) {
		sys.do(t, "POST", "/v1/facilities?facility_id=x2", admin, `{"displayName":"x","level":"FACILITY_LEVEL_VILLAGE_CLINIC","isAdmin":true}`).want(t, 400)
	})

	t.Run("oversize body is 413", func(t *testing.T) {
		big := `{"displayName":"` + strings.Repeat("x", 5<<20) + `"}`
		sys.do(t, "POST", "/v1/facilities?facility_id=x3", admin, big).want(t, 413)
	})

	t.Run("identifiers never reach the logs", func(t *testing.T) {
		logs := sys.logs.String()
		if !strings.Contains(logs, "finished call") {
			t.Fatal("no call was logged; the check below would prove nothing")
		}
		for _, secret := range []string{id, id[6:14], "150824195803142010", "巴特尔"} {
			if strings.Contains(logs, secret) {
				t.Errorf("%q is in the logs", secret)
			}
		}
	})

	t.Run("health checks are not logged", func(t *testing.T) {
		sys.do(t, "GET", "/readyz", "", "").want(t, 200)
		logs := sys.logs.String()
		if !strings.Contains(logs, `"grpc.service":"mcc.directory.v1.DirectoryService"`) {
			t.Fatal("no directory call was logged; the check below would prove nothing")
		}
		if strings.Contains(logs, `"grpc.service":"grpc.health.v1.Health"`) {
			t.Error("a health check was logged")
		}
	})

	t.Run("events feed", func(t *testing.T) {
		evs := sys.do(t, "GET", "/v1/directory/events", admin, "").want(t, 200)
		if n := len(evs.list(t, "events")); n < 4 {
			t.Errorf("%d events, want at least 4: %s", n, evs.raw)
		}
		if strings.Contains(evs.raw, "巴特尔") {
			t.Error("a patient's name is in the event feed")
		}
	})
}

func TestOperationalEndpoints(t *testing.T) {
	sys := start(t)
	// One call, so the per-RPC and store metrics have samples.
	sys.do(t, "GET", "/v1/facilities", sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN), "").want(t, 200)
	for path, want := range map[string]string{
		"/healthz":      "ok",
		"/readyz":       `"directory":"serving"`,
		"/openapi.json": `"/v1/patients:register"`,
		"/metrics":      `mcc_store_operation_seconds_count{op="list",outcome="ok",service="directory"}`,
	} {
		t.Run(path, func(t *testing.T) {
			r := sys.do(t, "GET", path, "", "").want(t, 200)
			if !strings.Contains(r.raw, want) {
				t.Errorf("%s does not contain %s", path, want)
			}
		})
	}
	t.Run("request ID is echoed", func(t *testing.T) {
		req, _ := http.NewRequest("GET", sys.url+"/healthz", nil)
		req.Header.Set("X-Request-Id", "abc-123")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Request-Id"); got != "abc-123" {
			t.Errorf("X-Request-Id = %q", got)
		}
	})
}

// response is a decoded REST answer.
type response struct {
	status int
	raw    string
	body   map[string]any
}

func (r response) want(t *testing.T, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

// wantField checks that an error response carries a BadRequest violation on
// field.
func (r response) wantField(t *testing.T, field string) {
	t.Helper()
	for _, d := range r.list(t, "details") {
		m, _ := d.(map[string]any)
		if m["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
			continue
		}
		vs, _ := m["fieldViolations"].([]any)
		for _, v := range vs {
			if v.(map[string]any)["field"] == field {
				return
			}
		}
	}
	t.Fatalf("no field violation on %s: %s", field, r.raw)
}

// get follows a dotted path (`facility.name`, `facilities.0.name`).
func (r response) get(t *testing.T, path string) any {
	t.Helper()
	var cur any = r.body
	for _, part := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[part]
		case []any:
			var i int
			fmt.Sscan(part, &i)
			if i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

func (r response) str(t *testing.T, path string) string {
	t.Helper()
	s, _ := r.get(t, path).(string)
	return s
}

func (r response) list(t *testing.T, path string) []any {
	t.Helper()
	l, _ := r.get(t, path).([]any)
	return l
}

// system is an mcc started by start.
type system struct {
	url     string
	grpc    string
	dataDir string
	logs    *logBuffer
	// clock is the system's clock when the test controls it.
	clock *clock.Manual
	// spans records every span the system ends.
	spans *tracetest.SpanRecorder
}

func (s *system) do(t *testing.T, method, path, token, body string) response {
	t.Helper()
	return s.doHeaders(t, method, path, token, body)
}

// doHeaders is do with extra request headers.
func (s *system) doHeaders(t *testing.T, method, path, token, body string, headers ...[2]string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		req.Header.Set(h[0], h[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, raw: string(raw)}
	json.Unmarshal(raw, &r.body)
	return r
}

// token issues a token signed with the system's key; a negative ttl makes an
// expired one.
func (s *system) token(t testing.TB, community, facility string, ttl time.Duration, roles ...typev1.Role) string {
	t.Helper()
	return s.issue(t, auth.Caller{Subject: "e2e", Community: community, Facility: "facilities/" + facility, Roles: roles}, ttl)
}

// serviceToken is a token of MCC's own service role in community.
func (s *system) serviceToken(t testing.TB, community string) string {
	t.Helper()
	return s.issue(t, auth.ServiceCaller(community, "facilities/mcc-system", "e2e"), time.Hour)
}

// tokenFor is a token of subject at facility in the demo community.
func (s *system) tokenFor(t testing.TB, subject, facility string, roles ...typev1.Role) string {
	t.Helper()
	return s.issue(t, auth.Caller{Subject: subject, Community: "demo", Facility: "facilities/" + facility, Roles: roles}, time.Hour)
}

// issue signs a token for c with the system's key, on the system's clock
// when the test controls it. A negative ttl makes a token that expired
// that long ago.
func (s *system) issue(t testing.TB, c auth.Caller, ttl time.Duration) string {
	t.Helper()
	var clk clock.Clock = clock.System{}
	if s.clock != nil {
		clk = s.clock
	}
	if ttl < 0 {
		clk = clock.NewManual(clk.Now().Add(2 * ttl))
		ttl = -ttl
	}
	keys, _, err := auth.LoadKeys(filepath.Join(s.dataDir, "signing.key"), false, clk)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := keys.Issue(c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
