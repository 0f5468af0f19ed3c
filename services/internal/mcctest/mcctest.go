// Package mcctest builds the mcc binary and runs it as a separate process,
// for the tests that need a real process: SIGKILL, restarts, split mode,
// memory.
package mcctest

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Build builds the mcc binary into a temporary directory, or skips the test
// in -short mode.
func Build(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the mcc binary")
	}
	bin := filepath.Join(t.TempDir(), "mcc")
	build := exec.Command("go", "build", "-o", bin, "github.com/countymcc/mcc/services/cmd/mcc")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Process is one running mcc the test started.
type Process struct {
	Cmd *exec.Cmd
	// GRPC and HTTP are the addresses it listens on, from its "mcc
	// started" log line.
	GRPC, HTTP string
	// LogPath is the file its log goes to.
	LogPath string
	// Exited is closed once the process has exited and been reaped.
	Exited chan struct{}
}

// Start runs bin with the flags, on ephemeral loopback ports unless the
// flags name them, and returns once it logged "mcc started". It fails the
// test, with the end of the log, if mcc exits or does not start within 60
// s. The process is killed when the test ends.
func Start(t testing.TB, bin, dataDir string, flags ...string) *Process {
	t.Helper()
	args := []string{"-data-dir=" + dataDir}
	if !hasFlag(flags, "-grpc-addr") {
		args = append(args, "-grpc-addr=127.0.0.1:0")
	}
	if !hasFlag(flags, "-http-addr") {
		args = append(args, "-http-addr=127.0.0.1:0")
	}
	cmd := exec.Command(bin, append(args, flags...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, Exited: make(chan struct{}), LogPath: filepath.Join(t.TempDir(), "mcc.log")}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type addrs struct{ grpc, http string }
	started := make(chan addrs, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			logf.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, GRPC, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "mcc started" {
				started <- addrs{line.GRPC, line.HTTP}
			}
		}
		cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(p.Kill)
	select {
	case a := <-started:
		p.GRPC, p.HTTP = a.grpc, a.http
		return p
	case <-p.Exited:
		t.Fatalf("mcc exited at start; log:\n%s", p.LogTail())
	case <-time.After(60 * time.Second):
		t.Fatalf("mcc did not start within 60s; log:\n%s", p.LogTail())
	}
	return nil
}

func hasFlag(flags []string, name string) bool {
	for _, f := range flags {
		if strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

// Kill ends the process with SIGKILL, by its PID, and waits until it is
// reaped.
func (p *Process) Kill() {
	select {
	case <-p.Exited:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.Exited
}

// LogTail returns the last 3,000 bytes of the process's log.
func (p *Process) LogTail() string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
