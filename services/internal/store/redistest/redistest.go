// Package redistest gives tests a private Redis: it starts redis-server on a
// free loopback port, with no persistence and a temp dir, and stops it when
// the test ends. Tests never touch a Redis they did not start, except one
// named by MCC_TEST_REDIS (or MCC_TEST_REDIS_CLUSTER), where each test
// works under its own key prefix and deletes its keys afterwards.
// StartServer gives a test a server of its own to crash and restart.
//
// Without redis-server on PATH the tests skip, loudly, unless
// MCC_TEST_REQUIRE_REDIS=1 (set by CI), which makes that a failure.
package redistest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countymcc/mcc/services/internal/freeport"
	"github.com/countymcc/mcc/services/internal/testproc"
	goredis "github.com/redis/go-redis/v9"
)

// Environment variables.
const (
	// EnvAddr names an existing server (host:port) to use instead of a
	// private one.
	EnvAddr = "MCC_TEST_REDIS"
	// EnvClusterAddrs names existing Cluster nodes (comma-separated) to use
	// instead of a private cluster.
	EnvClusterAddrs = "MCC_TEST_REDIS_CLUSTER"
	// EnvRequire, set to 1, turns a missing redis-server into a failure.
	EnvRequire = "MCC_TEST_REQUIRE_REDIS"
)

// startTimeout bounds how long a server or cluster may take to come up.
const startTimeout = 30 * time.Second

// Start returns the address of a Redis server for t: a private one, or the
// one named by MCC_TEST_REDIS.
func Start(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv(EnvAddr); addr != "" {
		if err := ping(addr); err != nil {
			t.Fatalf("redistest: %s=%s does not answer: %v", EnvAddr, addr, err)
		}
		return addr
	}
	bin := binary(t, "redis-server")
	return launch(t, bin, nil).Addr
}

// StartReplica starts a private replica of the server at primary and
// returns its address once it is in sync. It skips when the tests use a
// shared server, whose data a private replica must not copy.
func StartReplica(t testing.TB, primary string) string {
	t.Helper()
	if os.Getenv(EnvAddr) != "" {
		t.Skipf("redistest: no private replica of the shared %s server", EnvAddr)
	}
	bin := binary(t, "redis-server")
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		t.Fatalf("redistest: primary %q: %v", primary, err)
	}
	n := launch(t, bin, []string{"--replicaof", host, port})
	waitFor(t, "replica "+n.Addr+" in sync", func(ctx context.Context, c *goredis.Client) (bool, error) {
		info, err := c.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up"), err
	}, n.Addr)
	return n.Addr
}

// StartSentinel starts a private Sentinel monitoring the server at primary
// under masterName, and returns the Sentinel's address once it knows the
// primary.
func StartSentinel(t testing.TB, primary, masterName string) string {
	t.Helper()
	if os.Getenv(EnvAddr) != "" {
		t.Skipf("redistest: no private Sentinel for the shared %s server", EnvAddr)
	}
	bin := binary(t, "redis-server")
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		t.Fatalf("redistest: primary %q: %v", primary, err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	// Sentinel rewrites its config file, so it must be a file of its own.
	body := fmt.Sprintf("sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 5000\n", masterName, host, port, masterName)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n := launchIn(t, bin, dir, []string{conf, "--sentinel"})
	waitFor(t, "sentinel "+n.Addr, func(ctx context.Context, c *goredis.Client) (bool, error) {
		addr, err := c.Do(ctx, "SENTINEL", "get-master-addr-by-name", masterName).StringSlice()
		return err == nil && len(addr) == 2, nil
	}, n.Addr)
	return n.Addr
}

// StartCluster returns the addresses of a three-node Redis Cluster for t:
// private nodes with no replicas, or the nodes named by
// MCC_TEST_REDIS_CLUSTER.
func StartCluster(t testing.TB) []string {
	t.Helper()
	if addrs := os.Getenv(EnvClusterAddrs); addrs != "" {
		return strings.Split(addrs, ",")
	}
	bin := binary(t, "redis-server")
	cli := binary(t, "redis-cli")
	var addrs []string
	for range 3 {
		bus := freeport.One(t)
		n := launch(t, bin, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000",
			"--cluster-port", strconv.Itoa(bus),
		})
		addrs = append(addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		waitFor(t, "cluster node "+a, func(ctx context.Context, c *goredis.Client) (bool, error) {
			info, err := c.ClusterInfo(ctx).Result()
			return strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3"), err
		}, a)
	}
	return addrs
}

// Prefix returns a key prefix of t's own. On a shared server (MCC_TEST_REDIS
// or MCC_TEST_REDIS_CLUSTER) the keys under it are deleted when t ends; a
// private server simply goes away.
func Prefix(t testing.TB) string {
	t.Helper()
	prefix := "mcctest-" + strings.ToLower(rand.Text()[:16])
	if addr := os.Getenv(EnvAddr); addr != "" {
		t.Cleanup(func() {
			c := goredis.NewClient(&goredis.Options{Addr: addr})
			defer c.Close()
			if err := deleteKeys(c, prefix); err != nil {
				t.Errorf("redistest: deleting %s:* on %s: %v", prefix, addr, err)
			}
		})
	}
	if addrs := os.Getenv(EnvClusterAddrs); addrs != "" {
		t.Cleanup(func() {
			c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
			defer c.Close()
			err := c.ForEachMaster(context.Background(), func(ctx context.Context, c *goredis.Client) error {
				return deleteKeys(c, prefix)
			})
			if err != nil {
				t.Errorf("redistest: deleting %s:* on %s: %v", prefix, addrs, err)
			}
		})
	}
	return prefix
}

// deleteKeys removes every key under prefix from one server.
func deleteKeys(c *goredis.Client, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		if err := c.Unlink(ctx, iter.Val()).Err(); err != nil {
			return err
		}
	}
	return iter.Err()
}

// binary returns the path of name, or skips (fails under
// MCC_TEST_REQUIRE_REDIS=1) if it is not installed.
func binary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("redistest: %s not found on PATH, and %s=1 requires the Redis tests to run", name, EnvRequire)
	}
	msg := fmt.Sprintf("redistest: %s not found on PATH: SKIPPING the Redis tests. "+
		"Install Redis, or set %s=host:port to use a running server.", name, EnvAddr)
	// The notice goes to stderr too: go test hides skip messages unless -v.
	fmt.Fprintf(os.Stderr, "\n*** %s ***\n\n", msg)
	t.Skip(msg)
	return ""
}

// Server is a private redis-server. A test can crash it (Kill) and start it
// again on the same port and directory (Restart), with the data its
// arguments made it keep, as a supervisor would.
type Server struct {
	// Addr is its loopback address and Dir its working directory, where
	// its log, and any AOF or cluster config file, are kept.
	Addr, Dir string
	bin, port string
	args      []string
	proc      *testproc.Proc
}

// StartServer starts a private redis-server for t with args, in a temp dir
// of its own, even when MCC_TEST_REDIS names a shared one: a test that
// crashes its server needs one of its own. Unless args say otherwise it
// keeps nothing on disk. It is stopped when t ends.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	return launch(t, binary(t, "redis-server"), args)
}

// launch starts redis-server with extra arguments in a fresh temp dir.
func launch(t testing.TB, bin string, extra []string) *Server {
	t.Helper()
	return launchIn(t, bin, t.TempDir(), extra)
}

// launchIn starts redis-server in dir on a free loopback port and waits
// until it answers PING. A port taken between choosing and binding it is
// retried with another.
func launchIn(t testing.TB, bin, dir string, extra []string) *Server {
	t.Helper()
	var lastErr error
	for range 3 {
		s := &Server{Dir: dir, bin: bin, port: strconv.Itoa(freeport.One(t)), args: extra}
		s.Addr = net.JoinHostPort("127.0.0.1", s.port)
		err := s.spawn()
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("redistest: cannot start redis-server: %v", lastErr)
	return nil
}

// Kill ends the server with SIGKILL, as a crash.
func (s *Server) Kill() { s.proc.Stop(0) }

// Restart starts the killed server again on the same port and directory,
// and waits until it answers.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.spawn(); err != nil {
		t.Fatalf("redistest: restarting redis-server: %v", err)
	}
}

// defaults are the arguments a server gets unless its own args name them:
// nothing kept on disk.
var defaults = [][]string{{"--save", ""}, {"--appendonly", "no"}}

// spawn runs redis-server and waits until it answers PING.
func (s *Server) spawn() error {
	args := append([]string{}, s.args...)
	for _, d := range defaults {
		if !slices.Contains(s.args, d[0]) {
			args = append(args, d...)
		}
	}
	args = append(args, "--port", s.port, "--bind", "127.0.0.1", "--dir", s.Dir, "--daemonize", "no")
	logPath := filepath.Join(s.Dir, "redis-"+s.port+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if s.proc, err = testproc.Start(cmd); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.proc.Exited():
			return fmt.Errorf("redis-server exited at start:\n%s", testproc.Tail(logPath, 2000))
		default:
		}
		if ping(s.Addr) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("redis-server on %s did not answer within %v:\n%s", s.Addr, startTimeout, testproc.Tail(logPath, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the server: politely, then by force.
func (s *Server) stop() { s.proc.Stop(5 * time.Second) }

// ping reports whether a server answers at addr.
func ping(addr string) error {
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// waitFor polls ready on the server at addr until it reports true.
func waitFor(t testing.TB, what string, ready func(context.Context, *goredis.Client) (bool, error), addr string) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var lastErr error
	for {
		ok, err := ready(ctx, c)
		if ok {
			return
		}
		if err != nil {
			lastErr = err
		}
		if ctx.Err() != nil {
			t.Fatalf("redistest: %s not ready within %v (last error: %v)", what, startTimeout, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
