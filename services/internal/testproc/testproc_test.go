package testproc_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/testproc"
)

func start(t *testing.T, script string) *testproc.Proc {
	t.Helper()
	p, err := testproc.Start(exec.Command("sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p
}

func ended(p *testproc.Proc) bool {
	select {
	case <-p.Exited():
		return true
	default:
		return false
	}
}

// TestStop: a process that stops on SIGTERM is reaped without waiting out
// the grace; one that ignores it is killed after the grace; a grace of zero
// kills at once; stopping an ended process returns at once.
func TestStop(t *testing.T) {
	t.Run("polite", func(t *testing.T) {
		p := start(t, "exec sleep 60")
		t0 := time.Now()
		p.Stop(time.Minute)
		if !ended(p) || time.Since(t0) > 30*time.Second {
			t.Fatalf("ended %v after %v", ended(p), time.Since(t0))
		}
		if ws := p.Cmd.ProcessState; ws == nil || ws.String() != "signal: terminated" {
			t.Errorf("state %v, want terminated by SIGTERM", ws)
		}
	})
	t.Run("stubborn", func(t *testing.T) {
		ready := filepath.Join(t.TempDir(), "ready")
		p := start(t, `trap "" TERM; touch `+ready+`; while :; do sleep 0.05; done`)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(ready); err == nil {
				break // the shell ignores SIGTERM from here on
			}
			if time.Now().After(deadline) {
				t.Fatal("the shell did not start")
			}
		}
		t0 := time.Now()
		p.Stop(300 * time.Millisecond)
		if !ended(p) || time.Since(t0) < 300*time.Millisecond {
			t.Fatalf("ended %v after %v, want killed after the grace", ended(p), time.Since(t0))
		}
		if ws := p.Cmd.ProcessState; ws == nil || ws.String() != "signal: killed" {
			t.Errorf("state %v, want killed", ws)
		}
	})
	t.Run("crash", func(t *testing.T) {
		p := start(t, "exec sleep 60")
		p.Stop(0)
		if ws := p.Cmd.ProcessState; ws == nil || ws.String() != "signal: killed" {
			t.Errorf("state %v, want killed", ws)
		}
	})
	t.Run("already ended", func(t *testing.T) {
		p := start(t, "exit 3")
		<-p.Exited()
		p.Stop(time.Minute)
		if p.Cmd.ProcessState.ExitCode() != 3 {
			t.Errorf("exit code %d, want 3", p.Cmd.ProcessState.ExitCode())
		}
	})
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var lines []string
	for i := range 100 {
		lines = append(lines, strings.Repeat(string(rune('a'+i%26)), 9))
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// 35 bytes end inside the fourth line from the end: the partial line
	// is left out.
	if got, want := testproc.Tail(path, 35), strings.Join(lines[97:], "\n"); got != want {
		t.Errorf("Tail(35) = %q, want %q", got, want)
	}
	if got := testproc.Tail(path, 1<<20); got != strings.Join(lines, "\n") {
		t.Errorf("Tail of a short file is not the whole file: %q", got)
	}
	if got := testproc.Tail(filepath.Join(t.TempDir(), "missing"), 10); !strings.Contains(got, "no such file") {
		t.Errorf("Tail of a missing file = %q, want the error", got)
	}
}
