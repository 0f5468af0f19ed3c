//go:build faults

package faults

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/freeport"
	"github.com/countymcc/mcc/services/internal/mcctest"
)

// splitTargets are the services of a split deployment, one process each.
var splitTargets = []string{"directory", "lab", "imaging", "ecg", "pathology", "sterilization", "referral", "feed"}

// restCall makes one REST call and returns its status and decoded body.
func restCall(t *testing.T, method, u, token, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	json.Unmarshal(data, &out)
	if out == nil {
		out = map[string]any{"raw": string(data)}
	}
	return resp.StatusCode, out
}

func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, _ := cur.(map[string]any)
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

// TestSplitModeServiceDown runs every service in its own process and the
// gateway in another, then kills the lab with SIGKILL. The gateway answers
// 503 for the lab only; the directory and referrals keep working; a
// township's feed poller keeps polling, and once the lab is back on its
// data directory the poller receives the lab's new events.
func TestSplitModeServiceDown(t *testing.T) {
	bin := mcctest.Build(t)
	keys := t.TempDir()
	if out, err := exec.Command(bin, "keys", "-dir", keys).CombinedOutput(); err != nil {
		t.Fatalf("mcc keys: %v\n%s", err, out)
	}
	common := []string{"-store=bolt", "-auth.signing-key=" + filepath.Join(keys, "signing.key"), "-pii.key=" + filepath.Join(keys, "pii.key")}
	addr := map[string]string{}
	for _, s := range splitTargets {
		addr[s] = "127.0.0.1:" + strconv.Itoa(freeport.One(t))
	}
	peers := func(except string) []string {
		var out []string
		for _, s := range splitTargets {
			if s != except {
				out = append(out, "-"+s+".addr="+addr[s])
			}
		}
		return out
	}
	dirs := map[string]string{}
	procs := map[string]*mcctest.Process{}
	startService := func(s string) {
		flags := append(append([]string{"-target=" + s, "-grpc-addr=" + addr[s]}, common...), peers(s)...)
		procs[s] = startMCC(t, bin, dirs[s], flags...)
	}
	for _, s := range splitTargets {
		dirs[s] = t.TempDir()
		startService(s)
	}
	gw := startMCC(t, bin, t.TempDir(), append(append([]string{"-target=gateway"}, common...), peers("")...)...)
	base := "http://" + gw.HTTP

	admin := token(t, keys, "qrmyy", typev1.Role_ROLE_ADMIN)
	doc := token(t, keys, "dls", typev1.Role_ROLE_CLINICIAN)
	want := func(code int, method, path, tok, body string) map[string]any {
		t.Helper()
		got, out := restCall(t, method, base+path, tok, body)
		if got != code {
			t.Fatalf("%s %s: %d, want %d: %v", method, path, got, code, out)
		}
		return out
	}
	want(200, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`)
	want(200, "POST", "/v1/facilities?facility_id=dls", admin, `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",
		"centers":[{"center":"CENTER_LAB","facility":"facilities/qrmyy"}]}`)
	patient := str(want(200, "POST", "/v1/patients:register", doc, fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, directory.WithCheckDigit("15082419580314201"))), "patient", "name")
	order := fmt.Sprintf(`{"patient":%q,"tests":["2823-3"],"priority":"PRIORITY_ROUTINE"}`, patient)
	referral := fmt.Sprintf(`{"direction":"DIRECTION_UP","patient":%q,"targetFacility":"facilities/qrmyy","targetDepartment":"神经内科",
		"reason":"反复头晕","diagnosis":{"code":"I63.900x001","display":"脑梗死"},"urgency":"URGENCY_ROUTINE","clinicalSummary":"头晕一周。"}`, patient)
	want(200, "POST", "/v1/lab/orders", doc, order)

	// The township's poller: long polls of its feed, one after the other,
	// collecting the lab orders it is told about.
	type seen struct {
		resource    string
		unavailable []any
	}
	polls := make(chan seen, 1000)
	stopPoll := make(chan struct{})
	pollerDone := make(chan struct{})
	go func() {
		defer close(pollerDone)
		cursor := ""
		client := &http.Client{Timeout: 30 * time.Second}
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			req, _ := http.NewRequest("GET", base+"/v1/feed?wait=2s&pageSize=100&after="+url.QueryEscape(cursor), nil)
			req.Header.Set("Authorization", "Bearer "+doc)
			resp, err := client.Do(req)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			var page struct {
				Events []struct {
					Type, Resource string
				}
				NextCursor         string
				UnavailableSources []any
			}
			json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, e := range page.Events {
				polls <- seen{resource: e.Type + " " + e.Resource}
			}
			if len(page.UnavailableSources) > 0 {
				polls <- seen{unavailable: page.UnavailableSources}
			}
			if page.NextCursor != "" {
				cursor = page.NextCursor
			}
		}
	}()
	defer func() {
		close(stopPoll)
		<-pollerDone
	}()

	killed := time.Now()
	procs["lab"].Kill()
	// The lab's routes answer 503; the others keep working.
	got, out := restCall(t, "POST", base+"/v1/lab/orders", doc, order)
	if got != http.StatusServiceUnavailable {
		t.Errorf("lab down: POST /v1/lab/orders is %d, want 503: %v", got, out)
	}
	want(200, "GET", "/v1/facilities/dls", doc, "")
	want(200, "POST", "/v1/referrals", doc, referral)
	if got, _ := restCall(t, "GET", base+"/readyz", "", ""); got != http.StatusServiceUnavailable {
		t.Errorf("lab down: /readyz is %d, want 503", got)
	}
	time.Sleep(3 * time.Second)
	startService("lab")
	restarted := time.Now()
	// The gateway's connection to the lab reconnects with gRPC's backoff;
	// until then the lab's routes still answer 503.
	var placed string
	for deadline := time.Now().Add(30 * time.Second); placed == ""; time.Sleep(50 * time.Millisecond) {
		got, out := restCall(t, "POST", base+"/v1/lab/orders", doc, order)
		switch {
		case got == 200:
			placed = str(out, "order", "name")
		case got != http.StatusServiceUnavailable || time.Now().After(deadline):
			t.Fatalf("lab back: POST /v1/lab/orders is %d: %v", got, out)
		}
	}
	recovered := time.Since(restarted)
	var unavailable []any
	var received []string
	delivered := time.Duration(0)
	for deadline := time.After(20 * time.Second); delivered == 0; {
		select {
		case s := <-polls:
			if s.unavailable != nil {
				unavailable = s.unavailable
			}
			received = append(received, s.resource)
			if s.resource == "order.created "+placed {
				delivered = time.Since(restarted)
			}
		case <-deadline:
			t.Fatalf("the feed poller did not receive %s within 20s of the lab's restart; it received %q, unavailable sources %v", placed, received, unavailable)
		}
	}
	t.Logf("FIGURES split: lab down %s (SIGKILL to restart); lab 503, directory and referral 200 meanwhile; the gateway's lab routes answered again %s after the restart; the feed reported unavailable sources %v; the poller received the first order placed after the restart %s after the restart",
		restarted.Sub(killed).Round(time.Millisecond), recovered.Round(time.Millisecond), unavailable, delivered.Round(time.Millisecond))
}
