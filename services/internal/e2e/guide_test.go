package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countymcc/mcc/gateway"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/app"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/mcctest"
)

// guidePath is docs/INTEGRATION.md, seen from this package.
const guidePath = "../../../docs/INTEGRATION.md"

// EnvRequireGuideTools, set to 1 (CI sets it), makes missing curl, jq or
// openssl a failure of the guide test instead of a skip.
const EnvRequireGuideTools = "MCC_TEST_REQUIRE_GUIDE_TOOLS"

// guideStep is one runnable block of the guide.
type guideStep struct {
	name string
	// needs names a service the step calls that may not be deployed yet.
	needs string
	code  string
	line  int
}

// stepMarker introduces a step: <!-- step: NAME --> or
// <!-- step: NAME needs=SERVICE -->, right before a ```sh block.
var stepMarker = regexp.MustCompile(`^<!-- step: ([a-z0-9-]+)(?: needs=([a-z]+))? -->$`)

// parseGuide reads the steps of the guide. Every sh block that calls curl
// must be a step, so no example escapes the test.
func parseGuide(t *testing.T, path string) []guideStep {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []guideStep
	var pending *guideStep
	var block *strings.Builder
	blockLine := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case block != nil && line == "```":
			code := block.String()
			if pending != nil {
				pending.code = code
				steps = append(steps, *pending)
			} else if strings.Contains(code, "curl ") {
				t.Errorf("%s:%d: a curl example that is not a step; mark it <!-- step: NAME -->", path, blockLine)
			}
			block, pending = nil, nil
		case block != nil:
			block.WriteString(line + "\n")
		case line == "```sh":
			block, blockLine = &strings.Builder{}, n
		case stepMarker.MatchString(line):
			m := stepMarker.FindStringSubmatch(line)
			pending = &guideStep{name: m[1], needs: m[2], line: n}
		case pending != nil && strings.TrimSpace(line) != "":
			t.Errorf("%s:%d: step %s is not followed by a sh block", path, pending.line, pending.name)
			pending = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return steps
}

// guideTools skips the test (fails under MCC_TEST_REQUIRE_GUIDE_TOOLS=1)
// unless the tools the guide uses are installed.
func guideTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"bash", "curl", "jq", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv(EnvRequireGuideTools) == "1" {
		t.Fatalf("%s not found on PATH, and %s=1 requires the guide's examples to run", strings.Join(missing, ", "), EnvRequireGuideTools)
	}
	msg := fmt.Sprintf("%s not found on PATH: SKIPPING the test of docs/INTEGRATION.md", strings.Join(missing, ", "))
	fmt.Fprintf(os.Stderr, "\n*** %s ***\n\n", msg)
	t.Skip(msg)
}

// TestIntegrationGuide runs the examples of docs/INTEGRATION.md, in order,
// against a running system with the demo community: a township HIS's day.
func TestIntegrationGuide(t *testing.T) {
	guideTools(t)
	steps := parseGuide(t, guidePath)
	if len(steps) < 8 {
		t.Fatalf("only %d steps in %s", len(steps), guidePath)
	}
	bin := mcctest.Build(t)
	sys := start(t)
	seed := app.Env{Getenv: func(string) string { return "" }, Stdout: io.Discard, Stderr: io.Discard}
	if err := app.Run(context.Background(), []string{"seed", "demo", "-addr", sys.grpc, "-data-dir", sys.dataDir}, seed); err != nil {
		t.Fatal(err)
	}
	admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	work := t.TempDir()
	// Every step can also run on its own: the tokens the guide's steps use
	// are in the environment, the township's and the county's (for steps
	// and hooks that play the county side: the lab releasing a report, the
	// coordinator triaging a referral).
	env := append(os.Environ(),
		"MCC="+sys.url,
		"MCC_DATA_DIR="+sys.dataDir,
		"PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TOKEN="+sys.token(t, "demo", "dls", 24*time.Hour, typev1.Role_ROLE_CLINICIAN),
		"ADMIN_TOKEN="+admin,
		"LAB_TOKEN="+sys.token(t, "demo", "qrmyy", 24*time.Hour, typev1.Role_ROLE_LAB_TECHNOLOGIST),
		"COORDINATOR_TOKEN="+sys.token(t, "demo", "qrmyy", 24*time.Hour, typev1.Role_ROLE_REFERRAL_COORDINATOR),
	)
	env = append(env, signedSample(t)...)

	// before runs alongside a step: the long poll waits for an event the
	// county makes meanwhile. The county's side of the lab and referral
	// steps is written in the guide itself (county-lab, county-triage).
	before := map[string]func(){
		"long-poll": func() {
			time.Sleep(500 * time.Millisecond)
			sys.createVillage(t, admin, "dls-guide-1", "dls")
		},
	}
	// checks are test-only lines run after a step, in its shell.
	checks := map[string]string{
		"long-poll":         `test "$(echo "$PAGE" | jq '.events | length')" -gt 0`,
		"lab-report":        `curl -fsS "$MCC/v1/lab/$REPORT" -H "Authorization: Bearer $TOKEN" | jq -e '.report.results[0].flag == "FLAG_HH"' >/dev/null`,
		"critical-ack":      `curl -fsS "$MCC/v1/lab/$CRITICAL" -H "Authorization: Bearer $TOKEN" | jq -e '.notification.state == "STATE_CONFIRMED"' >/dev/null`,
		"referral-decision": `curl -fsS "$MCC/v1/$REFERRAL" -H "Authorization: Bearer $TOKEN" | jq -e '.referral.state == "STATE_ACCEPTED" and (.referral.triage.referralCode | length) > 0' >/dev/null`,
		"webhook-verify": `refused() { if mcc_verify "$@"; then echo "accepted a bad delivery: $*" >&2; exit 1; fi; }
printf '%s' "$SAMPLE_BODY" > sample.json
mcc_verify "$SAMPLE_TS" "$SAMPLE_SIG" sample.json "$SAMPLE_SECRET"
refused "$SAMPLE_TS" "$SAMPLE_SIG" sample.json whsec_not-the-secret
refused "$SAMPLE_OLD_TS" "$SAMPLE_OLD_SIG" sample.json "$SAMPLE_SECRET"
printf ' ' >> sample.json
refused "$SAMPLE_TS" "$SAMPLE_SIG" sample.json "$SAMPLE_SECRET"`,
	}
	deployed := gateway.Services()
	state := filepath.Join(work, ".state")
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.needs != "" && !slices.Contains(deployed, st.needs) {
				t.Skipf("needs the %s service, which this build does not have: complete the step (%s:%d) when it arrives", st.needs, guidePath, st.line)
			}
			script := fmt.Sprintf("set -euo pipefail\nset -a\ncd %q\n[ -f %q ] && . %q\n%s\n%s\nexport -p > %q\n",
				work, state, state, st.code, checks[st.name], state)
			if fn := before[st.name]; fn != nil {
				go fn()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-c", script)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("step %s (%s:%d) failed: %v\n%s", st.name, guidePath, st.line, err, out)
			}
			t.Logf("%s", out)
		})
	}
	// The day the guide plays, on the demo community, leaves no patient
	// identifier in the logs or the spans (issue 8).
	t.Run("no patient identifier in logs or spans", func(t *testing.T) {
		sys.wantNoPII(t, app.DemoIdentifiers()...)
	})
	// Nothing the day made for 德岭山 can be read by 乌加河's staff (issue
	// 8, BOLA).
	t.Run("no facility reads another's records", func(t *testing.T) {
		n := sys.checkObjectAccess(t, "facilities/wjh")
		for _, svc := range []string{"directory", "lab", "referral", "feed"} {
			if n[svc] == 0 {
				t.Errorf("no read of a %s record tried; the check proves little", svc)
			}
		}
		t.Logf("reads of another facility's records, all refused: %v", n)
	})
}

// signedSample is a delivery signed now and one signed 6 minutes ago, for
// the guide's verification function, as SAMPLE_* variables.
func signedSample(t *testing.T) []string {
	t.Helper()
	const secret = "whsec_guide-test-secret"
	body := `{"subscription":"subscriptions/x","event":{"id":"directory/demo/7","type":"facility.created"}}`
	now := time.Now().Unix()
	old := now - 360
	return []string{
		"SAMPLE_SECRET=" + secret,
		"SAMPLE_BODY=" + body,
		"SAMPLE_TS=" + strconv.FormatInt(now, 10),
		"SAMPLE_SIG=" + feed.Sign(secret, now, []byte(body)),
		"SAMPLE_OLD_TS=" + strconv.FormatInt(old, 10),
		"SAMPLE_OLD_SIG=" + feed.Sign(secret, old, []byte(body)),
	}
}
