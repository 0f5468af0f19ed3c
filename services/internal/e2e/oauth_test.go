package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// form posts a form to the gateway, optionally with HTTP Basic credentials.
func (s *system) form(t *testing.T, path string, values url.Values, basicID, basicSecret, bearer string) (int, map[string]any, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.url+path, strings.NewReader(values.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(basicID, basicSecret)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	json.Unmarshal(raw, &body)
	return resp.StatusCode, body, resp.Header
}

// grant runs the client-credentials grant and returns the token, failing
// the test unless it succeeds.
func (s *system) grant(t *testing.T, id, secret, scope string) string {
	t.Helper()
	code, body, _ := s.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {scope}}, "", "", "")
	if code != 200 {
		t.Fatalf("token: %d %v", code, body)
	}
	tok, _ := body["access_token"].(string)
	if tok == "" || body["token_type"] != "Bearer" || body["expires_in"] != float64(900) {
		t.Fatalf("token response %v", body)
	}
	return tok
}

func TestClientCredentials(t *testing.T) {
	sys := start(t, "-auth.revocation-poll=100ms", "-auth.client-lock-after=3")
	admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	sys.do(t, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sys.do(t, "POST", "/v1/facilities?facility_id=dls", admin, `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`).want(t, 200)

	created := sys.do(t, "POST", "/v1/clients", admin, `{"displayName":"德岭山 HIS","facility":"facilities/dls","roles":["ROLE_CLINICIAN"],"scopes":["directory.read"]}`).want(t, 200)
	id, secret := created.str(t, "clientId"), created.str(t, "clientSecret")
	if !strings.HasSuffix(id, "@demo") || len(secret) < 40 {
		t.Fatalf("created %s", created.raw)
	}
	again := sys.do(t, "GET", "/v1/"+created.str(t, "client.name"), admin, "").want(t, 200)
	if strings.Contains(again.raw, secret) {
		t.Fatal("the secret is readable after creation")
	}

	t.Run("the token works within its scopes", func(t *testing.T) {
		tok := sys.grant(t, id, secret, "")
		sys.do(t, "GET", "/v1/facilities", tok, "").want(t, 200)
		// directory.read does not cover registering a patient.
		r := sys.do(t, "POST", "/v1/patients:register", tok, `{"residentId":"11010519491231002X","displayName":"张秀兰"}`)
		if r.status != 403 || !strings.Contains(r.raw, "directory.write") {
			t.Errorf("out of scope: %d %s", r.status, r.raw)
		}
	})

	t.Run("HTTP Basic credentials", func(t *testing.T) {
		code, body, _ := sys.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, id, secret, "")
		if code != 200 || body["access_token"] == nil {
			t.Errorf("basic: %d %v", code, body)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for name, tc := range map[string]struct {
			values url.Values
			code   int
			kind   string
		}{
			"wrong grant":       {url.Values{"grant_type": {"password"}, "client_id": {id}, "client_secret": {secret}}, 400, "unsupported_grant_type"},
			"unknown client":    {url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody@demo"}, "client_secret": {secret}}, 401, "invalid_client"},
			"other community":   {url.Values{"grant_type": {"client_credentials"}, "client_id": {strings.TrimSuffix(id, "@demo") + "@elsewhere"}, "client_secret": {secret}}, 401, "invalid_client"},
			"scope not granted": {url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {"lab.write"}}, 400, "invalid_scope"},
		} {
			t.Run(name, func(t *testing.T) {
				code, body, _ := sys.form(t, "/oauth2/token", tc.values, "", "", "")
				if code != tc.code || body["error"] != tc.kind {
					t.Errorf("%d %v, want %d %s", code, body, tc.code, tc.kind)
				}
			})
		}
	})

	t.Run("a revoked token is refused when replayed", func(t *testing.T) {
		tok := sys.grant(t, id, secret, "")
		sys.do(t, "GET", "/v1/facilities", tok, "").want(t, 200)
		// The client revokes its own token (RFC 7009).
		if code, body, _ := sys.form(t, "/oauth2/revoke", url.Values{"token": {tok}}, "", "", tok); code != 200 {
			t.Fatalf("revoke: %d %v", code, body)
		}
		eventually(t, 10*time.Second, "the revoked token to be refused", func() bool {
			return sys.do(t, "GET", "/v1/facilities", tok, "").status == 401
		})
		// Another token of the same client still works.
		sys.do(t, "GET", "/v1/facilities", sys.grant(t, id, secret, ""), "").want(t, 200)
	})

	t.Run("brute-forced secrets lock the client", func(t *testing.T) {
		other := sys.do(t, "POST", "/v1/clients", admin, `{"displayName":"试探","facility":"facilities/dls","roles":["ROLE_CLINICIAN"],"scopes":["*"]}`).want(t, 200)
		oid, osecret := other.str(t, "clientId"), other.str(t, "clientSecret")
		for i := range 3 {
			code, body, _ := sys.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {oid}, "client_secret": {"guess-" + string(rune('a'+i))}}, "", "", "")
			if code != 401 || body["error"] != "invalid_client" {
				t.Fatalf("guess %d: %d %v", i, code, body)
			}
		}
		// Locked: even the right secret is turned away, with Retry-After.
		code, body, header := sys.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {oid}, "client_secret": {osecret}}, "", "", "")
		if code != 429 || header.Get("Retry-After") == "" {
			t.Errorf("locked client: %d %v Retry-After=%q", code, body, header.Get("Retry-After"))
		}
	})

	t.Run("revoking the client refuses all its tokens", func(t *testing.T) {
		tok := sys.grant(t, id, secret, "")
		sys.do(t, "POST", "/v1/"+created.str(t, "client.name")+":revoke", admin, `{"reason":"HIS 更换"}`).want(t, 200)
		eventually(t, 10*time.Second, "the revoked client's token to be refused", func() bool {
			return sys.do(t, "GET", "/v1/facilities", tok, "").status == 401
		})
		code, body, _ := sys.form(t, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}, "", "", "")
		if code != 401 || body["error"] != "invalid_client" {
			t.Errorf("a revoked client got a token: %d %v", code, body)
		}
	})

	t.Run("clients are for administrators", func(t *testing.T) {
		clinic := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
		sys.do(t, "GET", "/v1/clients", clinic, "").want(t, 403)
		sys.do(t, "POST", "/v1/clients", admin, `{"displayName":"x","facility":"facilities/dls","roles":["ROLE_ADMIN"],"scopes":["*"]}`).want(t, 400)
	})
}

func TestRateLimit(t *testing.T) {
	sys := start(t, "-gateway.rate-limit=1", "-gateway.rate-burst=3")
	tok := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	for range 3 {
		sys.do(t, "GET", "/v1/facilities", tok, "").want(t, 200)
	}
	req, _ := http.NewRequest("GET", sys.url+"/v1/facilities", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fourth call: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another client has its own allowance.
	sys.do(t, "GET", "/v1/facilities", sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN), "").want(t, 200)
}
