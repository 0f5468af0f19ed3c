package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/app"
	"github.com/countymcc/mcc/services/internal/mcctest"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// mcc runs an mcc subcommand in this process.
func mcc(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := app.Run(context.Background(), args, app.Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errOut})
	return out.String() + errOut.String(), err
}

// TestBackupUnderLoadAndRestore takes a backup while 8 clients write, then
// restores it into a fresh data directory and finds every write that was
// acknowledged before the backup began.
func TestBackupUnderLoadAndRestore(t *testing.T) {
	sys := start(t)
	ctx := servertest.WithToken(context.Background(), sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN))
	client := mcctest.DialDirectory(t, sys.grpc)

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("b%d-%05d", w, i)
				if _, err := client.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{DisplayName: id, Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC}}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()

	archive := filepath.Join(t.TempDir(), "mcc.tar")
	if out, err := mcc(t, "backup", "-addr", sys.grpc, "-out", archive, "-data-dir", sys.dataDir); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	close(stop)
	wg.Wait()

	restored := t.TempDir()
	if out, err := mcc(t, "restore", "-in", archive, "-data-dir", restored); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	for _, key := range []string{"signing.key", "pii.key"} {
		copyFile(t, filepath.Join(sys.dataDir, key), filepath.Join(restored, key))
	}
	again := startIn(t, restored)
	client = mcctest.DialDirectory(t, again.grpc)
	for _, id := range before {
		if _, err := client.GetFacility(ctx, &directoryv1.GetFacilityRequest{Name: "facilities/" + id}); err != nil {
			t.Errorf("%s, acknowledged before the backup, is not in it: %v", id, err)
		}
	}
	t.Logf("%d writes acknowledged before the backup began, %d in all", len(before), len(acked))

	t.Run("restore refuses a non-empty data directory", func(t *testing.T) {
		if _, err := mcc(t, "restore", "-in", archive, "-data-dir", restored); err == nil {
			t.Error("restored over existing stores")
		}
	})
	t.Run("restore refuses a truncated archive", func(t *testing.T) {
		data, err := os.ReadFile(archive)
		if err != nil {
			t.Fatal(err)
		}
		cut := filepath.Join(t.TempDir(), "cut.tar")
		if err := os.WriteFile(cut, data[:len(data)-2048], 0o600); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		out, err := mcc(t, "restore", "-in", cut, "-data-dir", dir)
		if err == nil {
			t.Fatalf("restored a truncated archive: %s", out)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
			t.Errorf("a failed restore left files: %v", left)
		}
	})
	t.Run("a community administrator may not take a backup", func(t *testing.T) {
		r := sys.do(t, "GET", "/v1/admin/backup", sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN), "")
		if r.status != 403 {
			t.Errorf("status %d, want 403", r.status)
		}
	})
}

func TestBackupInRedisModeIsRefused(t *testing.T) {
	sys := start(t, backends()[1].flags(t)...)
	out, err := mcc(t, "backup", "-addr", sys.grpc, "-out", filepath.Join(t.TempDir(), "x.tar"), "-data-dir", sys.dataDir)
	if err == nil || !strings.Contains(err.Error(), "Redis persistence") {
		t.Fatalf("backup in redis mode: %v\n%s", err, out)
	}
	servertest.WantCode(t, err, codes.FailedPrecondition)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}
