// Package mcctest builds the mcc binary and runs it as a separate process,
// for the tests that need a real process: SIGKILL, restarts, split mode,
// memory; and reads back what such a test wrote to the directory.
package mcctest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/testproc"
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
	*testproc.Proc
	// GRPC and HTTP are the addresses it listens on, from its "mcc
	// started" log line.
	GRPC, HTTP string
	// LogPath is the file its log goes to.
	LogPath string
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
	p := &Process{LogPath: filepath.Join(t.TempDir(), "mcc.log")}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	// The log goes to the file and through a pipe to the reader looking
	// for the start line, which drains it until the process has exited.
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(logf, pw)
	if p.Proc, err = testproc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	type addrs struct{ grpc, http string }
	started := make(chan addrs, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct{ Msg, GRPC, HTTP string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "mcc started" {
				started <- addrs{line.GRPC, line.HTTP}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		<-p.Exited()
		pw.Close()
		logf.Close()
	}()
	t.Cleanup(p.Kill)
	select {
	case a := <-started:
		p.GRPC, p.HTTP = a.grpc, a.http
		return p
	case <-p.Exited():
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
func (p *Process) Kill() { p.Stop(0) }

// LogTail returns the end of the process's log.
func (p *Process) LogTail() string { return testproc.Tail(p.LogPath, 3000) }

// Dial returns a plaintext loopback connection to the gRPC server at addr,
// closed when the test ends.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// DialDirectory returns a client of the directory at addr (see Dial).
func DialDirectory(t testing.TB, addr string) directoryv1.DirectoryServiceClient {
	t.Helper()
	return directoryv1.NewDirectoryServiceClient(Dial(t, addr))
}

// Facilities returns every facility of the directory at c, page by page.
func Facilities(t testing.TB, ctx context.Context, c directoryv1.DirectoryServiceClient) []*directoryv1.Facility {
	t.Helper()
	var out []*directoryv1.Facility
	for token := ""; ; {
		page, err := c.ListFacilities(ctx, &directoryv1.ListFacilitiesRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.GetFacilities()...)
		if token = page.GetNextPageToken(); token == "" {
			return out
		}
	}
}

// DirectoryEvents returns every event of the directory's change feed at c,
// oldest first.
func DirectoryEvents(t testing.TB, ctx context.Context, c directoryv1.DirectoryServiceClient) []*typev1.Event {
	t.Helper()
	var out []*typev1.Event
	for cursor := ""; ; {
		page, err := c.ListEvents(ctx, &directoryv1.ListEventsRequest{After: cursor, PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.GetEvents()) == 0 {
			return out
		}
		out = append(out, page.GetEvents()...)
		cursor = page.GetNextCursor()
	}
}
