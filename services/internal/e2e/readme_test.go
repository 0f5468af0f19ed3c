package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/mcctest"
)

// readmePath is README.md, seen from this package.
const readmePath = "../../../README.md"

// quickstart returns the first sh block of README.md's "## Quickstart".
func quickstart(t *testing.T) string {
	t.Helper()
	f, err := os.Open(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var in, inBlock bool
	var code strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Quickstart"
		case in && !inBlock && line == "```sh":
			inBlock = true
		case inBlock && line == "```":
			return code.String()
		case inBlock:
			code.WriteString(line + "\n")
		}
	}
	t.Fatalf("%s has no sh block under ## Quickstart", readmePath)
	return ""
}

// TestReadmeQuickstart pastes README.md's quickstart, line by line, into a
// shell, against a running system: what a newcomer does after `make run`.
// The block is run as written but for three things a test cannot share
// with a developer: `go run ./services/cmd/mcc` is the freshly built
// binary, localhost:8080 is the test system's HTTP address, and the
// system's gRPC address and data directory come from MCC_ADDR and
// MCC_DATA_DIR, as the README's configuration section describes.
func TestReadmeQuickstart(t *testing.T) {
	guideTools(t)
	code := quickstart(t)
	for _, want := range []string{"go run ./services/cmd/mcc seed demo", "localhost:8080", "patients:register"} {
		if !strings.Contains(code, want) {
			t.Fatalf("the quickstart no longer contains %q; update this test with it", want)
		}
	}
	bin := mcctest.Build(t)
	sys := start(t)
	code = strings.ReplaceAll(code, "go run ./services/cmd/mcc", bin)
	code = strings.ReplaceAll(code, "localhost:8080", strings.TrimPrefix(sys.url, "http://"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+code)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "MCC_ADDR="+sys.grpc, "MCC_DATA_DIR="+sys.dataDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the quickstart failed: %v\n%s", err, out)
	}
	got := string(out)
	// What the comments of the quickstart promise, in its output.
	for _, want := range []string{
		`"name":"facilities/qrmyy"`, // the demo's facilities are listed
		`"name":"facilities/cj"`,    // the new facility is created
		`"displayName":"川井苏木卫生院"`,   // with what was sent
		`"name":"patients/`,         // the patient is registered
		`"field":"resident_id"`,     // the bad number names its field
		`"type":"facility.created"`, // and the feed has the changes
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the quickstart's output lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "11010519491231002X") {
		t.Error("the quickstart's output shows the resident ID number unmasked")
	}
}
