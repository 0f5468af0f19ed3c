package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// TestSigningKeyRotation rotates the signing key of a data directory and
// restarts mcc on it: tokens of the old key are still accepted (until they
// expire), tokens of the new key too, and once the old key file is removed,
// its tokens are refused.
func TestSigningKeyRotation(t *testing.T) {
	dir := t.TempDir()
	if out, err := mcc(t, "keys", "-dir", dir); err != nil {
		t.Fatalf("keys: %v %s", err, out)
	}
	first, stop := startStoppable(t, dir)
	old := first.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	first.do(t, "GET", "/v1/facilities", old, "").want(t, 200)
	stop()

	out, err := mcc(t, "keys", "rotate", "-dir", dir)
	if err != nil || !strings.Contains(out, "signing-") {
		t.Fatalf("rotate: %v %s", err, out)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "signing-*.key"))
	if len(kept) != 1 {
		t.Fatalf("kept keys %v", kept)
	}
	second, stop := startStoppable(t, dir)
	fresh := second.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	if fresh == old {
		t.Fatal("the rotated key signs the same token")
	}
	second.do(t, "GET", "/v1/facilities", old, "").want(t, 200)
	second.do(t, "GET", "/v1/facilities", fresh, "").want(t, 200)
	stop()

	if err := os.Remove(kept[0]); err != nil {
		t.Fatal(err)
	}
	third := startIn(t, dir)
	third.do(t, "GET", "/v1/facilities", old, "").want(t, 401)
	third.do(t, "GET", "/v1/facilities", fresh, "").want(t, 200)
}
