package app

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidConfigFailsFast starts mcc with mistakes an operator makes and
// checks each fails at once, naming the flag to fix.
func TestInvalidConfigFailsFast(t *testing.T) {
	dir := t.TempDir()
	base := []string{"-grpc-addr=127.0.0.1:0", "-http-addr=127.0.0.1:0", "-data-dir=" + dir}
	for name, tc := range map[string]struct {
		args []string
		flag string
	}{
		"unknown target":          {[]string{"-target=lab,radiology"}, "-target"},
		"unknown store":           {[]string{"-store=etcd"}, "-store"},
		"unreachable Redis":       {[]string{"-store=redis", "-redis-addr=127.0.0.1:1"}, "-redis-addr"},
		"missing signing key":     {[]string{"-auth.signing-key=" + filepath.Join(dir, "nowhere", "signing.key")}, "-auth.signing-key"},
		"missing PII key":         {[]string{"-pii.key=" + filepath.Join(dir, "nowhere", "pii.key")}, "-pii.key"},
		"TLS without its CA":      {[]string{"-tls.cert=a.pem", "-tls.key=a.key"}, "-tls.ca"},
		"retention under an hour": {[]string{"-events.retention=5m"}, "-events.retention"},
		"keepalive under 10s":     {[]string{"-grpc.client-keepalive=2s"}, "-grpc.client-keepalive"},
		"negative shutdown delay": {[]string{"-shutdown-delay=-1s"}, "-shutdown-delay"},
		"no shutdown timeout":     {[]string{"-shutdown-timeout=0s"}, "-shutdown-timeout"},
		"bad listen address":      {[]string{"-http-addr=127.0.0.1:0", "-grpc-addr=256.1.1.1:1"}, "-grpc-addr"},
	} {
		t.Run(name, func(t *testing.T) {
			env := Env{Getenv: func(string) string { return "" }, Stdout: io.Discard, Stderr: io.Discard}
			cfg, err := LoadConfig(append(append([]string{}, base...), tc.args...), env)
			if err == nil {
				var sys *System
				sys, err = New(context.Background(), cfg, slog.New(slog.DiscardHandler), Options{})
				if err == nil {
					sys.close()
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("err = %v, want one naming %s", err, tc.flag)
			}
		})
	}
}
