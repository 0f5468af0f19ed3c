package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// server is the mcc under test: a child process the tool started, or one
// already running (pid 0 when the tool does not know its process).
type server struct {
	httpURL, grpcAddr string
	dataDir           string
	pid               int
	// stop ends the child (nil for a server the tool did not start).
	stop func() error
	// ready is how long the child took from its start to /readyz.
	ready time.Duration
}

// startChild runs `mcc -target=all` (this same executable) as a child
// process on loopback ports and dataDir, with extra flags, and waits until
// its gateway says it is ready. Its log goes to dataDir/mcc.log.
func startChild(ctx context.Context, exe, dataDir string, extra ...string) (*server, error) {
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dataDir, "mcc.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"-target=all", "-store=bolt", "-data-dir=" + dataDir,
		"-grpc-addr=" + grpcAddr, "-http-addr=" + httpAddr}, extra...)
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{httpURL: "http://" + httpAddr, grpcAddr: grpcAddr, dataDir: dataDir, pid: cmd.Process.Pid}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.ready = time.Since(start)
				s.stop = func() error { return stopProcess(cmd.Process, exited) }
				return s, nil
			}
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("mcc exited before it was ready (%v); see %s", err, logf.Name())
		case <-ctx.Done():
			stopProcess(cmd.Process, exited)
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// stopProcess ends a child with SIGTERM and waits for it.
func stopProcess(p *os.Process, exited chan error) error {
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-exited:
		return nil
	case <-time.After(20 * time.Second):
		p.Kill()
		<-exited
		return errors.New("mcc did not stop within 20s; killed")
	}
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
