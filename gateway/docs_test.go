package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countymcc/mcc/gateway"
	"github.com/countymcc/mcc/proto/openapi"
)

// EnvRequireChromium, set to 1 (CI sets it), turns a missing Chromium
// into a failure of the browser tests instead of a skip.
const EnvRequireChromium = "MCC_TEST_REQUIRE_CHROMIUM"

// chromium returns the path of a Chromium binary, or skips the test loudly
// (fails under MCC_TEST_REQUIRE_CHROMIUM=1) where none is installed.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv(EnvRequireChromium) == "1" {
		t.Fatalf("chromium not found on PATH, and %s=1 requires the browser tests to run (apt-get install -y chromium)", EnvRequireChromium)
	}
	msg := "chromium not found on PATH: SKIPPING the /docs browser test. Install it (Debian: apt-get install -y chromium)."
	// The notice goes to stderr too: go test hides skip messages unless -v.
	fmt.Fprintf(os.Stderr, "\n*** %s ***\n\n", msg)
	t.Skip(msg)
	return ""
}

// dumpDOM loads url in headless Chromium and returns the DOM once the
// page's scripts and fetches have run.
func dumpDOM(t *testing.T, url string) string {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=15000", "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// operationIDs lists the operationId of every operation in the OpenAPI
// document, by tag.
func operationIDs(t *testing.T) map[string][]string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string   `json:"operationId"`
			Tags        []string `json:"tags"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, methods := range doc.Paths {
		for _, op := range methods {
			out[op.Tags[0]] = append(out[op.Tags[0]], op.OperationID)
		}
	}
	return out
}

// docsServer serves a gateway without backends: /docs and /openapi.json
// need none.
func docsServer(t *testing.T) *httptest.Server {
	t.Helper()
	h, err := gateway.New(t.Context(), gateway.Endpoints{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// TestDocsPageListsEveryOperation loads /docs in headless Chromium and
// checks that the page built itself from /openapi.json and lists every
// operation of every service, under bilingual service titles.
func TestDocsPageListsEveryOperation(t *testing.T) {
	dom := dumpDOM(t, docsServer(t).URL+"/docs")
	if !strings.Contains(dom, `data-state="ready"`) {
		t.Fatalf("the page did not finish building:\n%.2000s", dom)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`data-operation-id="([^"]+)"`).FindAllStringSubmatch(dom, -1) {
		listed[m[1]] = true
	}
	byTag := operationIDs(t)
	total := 0
	for tag, ids := range byTag {
		total += len(ids)
		if !strings.Contains(dom, `data-service="`+tag+`"`) {
			t.Errorf("no section for %s", tag)
		}
		for _, id := range ids {
			if !listed[id] {
				t.Errorf("%s is not on the page", id)
			}
		}
	}
	if len(listed) != total {
		t.Errorf("the page lists %d operations, /openapi.json has %d", len(listed), total)
	}
	for _, title := range []string{"社区目录", "Directory", "机构事件订阅", "Facility feed and webhooks", "参数", "Parameters"} {
		if !strings.Contains(dom, title) {
			t.Errorf("the page has no %q", title)
		}
	}
}

// TestDocsLoadOnlyOwnAssets checks the page's files and headers: nothing
// from another origin, and a policy that would block it anyway.
func TestDocsLoadOnlyOwnAssets(t *testing.T) {
	srv := docsServer(t)
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tt := range []struct {
		path, wantType string
		wantStatus     int
	}{
		{"/docs", "text/html", 200},
		{"/docs/docs.js", "text/javascript", 200},
		{"/docs/docs.css", "text/css", 200},
		{"/docs/", "", 301},
		{"/docs/missing.js", "", 404},
	} {
		resp, err := client.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.wantType) {
			t.Errorf("%s: %d %s, want %d %s", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), tt.wantStatus, tt.wantType)
		}
		if tt.wantStatus != 200 {
			continue
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: policy %q", tt.path, csp)
		}
		for _, m := range regexp.MustCompile(`(?i)(?:src|href)\s*=\s*"([^"]*)"|url\(([^)]*)\)|https?://[^\s"')]+`).FindAllStringSubmatch(string(body), -1) {
			ref := slices.DeleteFunc(m[1:], func(s string) bool { return s == "" })
			if strings.Contains(m[0], "://") || len(ref) > 0 && strings.Contains(ref[0], "//") {
				t.Errorf("%s refers to another origin: %s", tt.path, m[0])
			}
		}
	}
}
