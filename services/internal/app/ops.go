package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/transport"
)

// runHealth checks a running mcc's gRPC health service and fails unless it
// is serving. Container images have no shell or curl; this is their
// healthcheck.
func runHealth(ctx context.Context, args []string, env Env) error {
	var service string
	var timeout time.Duration
	var cf clientFlags
	fs := newFlagSet("mcc health", env)
	cf.register(fs, "localhost:9090", "gRPC address to check")
	fs.StringVar(&service, "service", "", "service to check (default: the whole process)")
	fs.DurationVar(&timeout, "timeout", 3*time.Second, "how long to wait for an answer")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("health of %s: %w", cf.addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s is %s", cf.addr, resp.GetStatus())
	}
	fmt.Fprintln(env.Stdout, "serving")
	return nil
}

// runKeys creates the signing key and the PII key in a directory, if they
// are not there yet, so an operator can put them into a Kubernetes Secret or
// a shared volume before the first replica starts. `mcc keys rotate`
// replaces the signing key.
func runKeys(args []string, env Env) error {
	if len(args) > 0 && args[0] == "rotate" {
		return runRotate(args[1:], env)
	}
	var dir string
	fs := newFlagSet("mcc keys", env)
	fs.StringVar(&dir, "dir", "", "directory to create signing.key and pii.key in (required)")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if dir == "" {
		return errors.New("-dir: required")
	}
	signing := filepath.Join(dir, "signing.key")
	_, created, err := auth.LoadKeys(signing, true, clock.System{})
	if err != nil {
		return err
	}
	report(env, signing, created)
	piiKey := filepath.Join(dir, "pii.key")
	existed := fileExists(piiKey)
	if _, err := pii.LoadProtector(piiKey, true); err != nil {
		return err
	}
	report(env, piiKey, !existed)
	return nil
}

func report(env Env, path string, created bool) {
	if created {
		fmt.Fprintf(env.Stdout, "created %s\n", path)
	} else {
		fmt.Fprintf(env.Stdout, "kept the existing %s\n", path)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// runRotate replaces the signing key in a directory, keeping the old one as
// signing-<kid>.key: tokens it signed are accepted until they expire, by
// every process that has the file beside its signing key.
func runRotate(args []string, env Env) error {
	var dir string
	fs := newFlagSet("mcc keys rotate", env)
	fs.StringVar(&dir, "dir", "", "directory holding signing.key (required)")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if dir == "" {
		return errors.New("-dir: required")
	}
	kept, err := auth.Rotate(filepath.Join(dir, "signing.key"))
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "new signing key in %s; the old one is %s\n", filepath.Join(dir, "signing.key"), kept)
	fmt.Fprintln(env.Stdout, "restart every replica with both files; delete the old one once the longest-lived token it signed has expired (mcc token -ttl allows 720h)")
	return nil
}

// runCerts makes a local CA and one certificate for every MCC process, for
// development and for a county without its own PKI.
func runCerts(args []string, env Env) error {
	var dir, hosts string
	fs := newFlagSet("mcc certs", env)
	fs.StringVar(&dir, "dir", "", "directory to write ca.pem, ca.key, mcc.pem and mcc.key in (required)")
	fs.StringVar(&hosts, "hosts", strings.Join(defaultCertHosts(), ","), "comma list of DNS names and IP addresses the certificate is valid for")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if dir == "" {
		return errors.New("-dir: required")
	}
	out, err := transport.WriteDevCerts(dir, splitList(hosts), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s, %s and %s (and ca.key: keep it off the servers)\n", out.CA, out.Cert, out.Key)
	fmt.Fprintf(env.Stdout, "run mcc with -tls.cert=%s -tls.key=%s -tls.ca=%s\n", out.Cert, out.Key, out.CA)
	return nil
}

// defaultCertHosts are the names an MCC process is reached by: loopback,
// and each target's name in compose (lab) and Kubernetes (mcc-lab).
func defaultCertHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1", "mcc"}
	for _, t := range targetNames() {
		hosts = append(hosts, t, "mcc-"+t)
	}
	return hosts
}
