// Package testproc runs the programs the tests need (mcc, redis-server,
// Orthanc) as child processes: it reaps each one when it exits, ends it by
// its own PID, and reads the end of its log for error messages. Tests never
// end a process they did not start.
package testproc

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a started child process.
type Proc struct {
	Cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts cmd and reaps it when it exits.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed once the process has exited and been reaped.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stop ends the process and returns once it is reaped: with SIGTERM, and
// SIGKILL if it is still running after grace; with a grace of zero, with
// SIGKILL at once, as a crash. Stopping a process that has ended does
// nothing.
func (p *Proc) Stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	if grace > 0 {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			return
		case <-time.After(grace):
		}
	}
	_ = p.Cmd.Process.Kill()
	<-p.exited
}

// Tail returns at most the last n bytes of the file at path, starting at a
// line, for an error message; the error itself if the file cannot be read.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(string(b))
}
