package config

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestApplyEnv(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantAddr string
		wantWait time.Duration
		wantErr  string
	}{
		{name: "defaults", wantAddr: ":9090", wantWait: time.Second},
		{name: "env overrides default", env: map[string]string{"MCC_GRPC_ADDR": ":1", "MCC_LAB_MLLP_WAIT": "5s"}, wantAddr: ":1", wantWait: 5 * time.Second},
		{name: "flag beats env", args: []string{"-grpc-addr=:2"}, env: map[string]string{"MCC_GRPC_ADDR": ":1"}, wantAddr: ":2", wantWait: time.Second},
		{name: "bad env value names the variable and flag", env: map[string]string{"MCC_LAB_MLLP_WAIT": "soon"}, wantErr: "MCC_LAB_MLLP_WAIT: invalid value for -lab.mllp-wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("mcc", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("grpc-addr", ":9090", "")
			wait := fs.Duration("lab.mllp-wait", time.Second, "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := ApplyEnv(fs, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tt.wantAddr || *wait != tt.wantWait {
				t.Errorf("got addr %q wait %v, want %q %v", *addr, *wait, tt.wantAddr, tt.wantWait)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("lab.mllp-addr"); got != "MCC_LAB_MLLP_ADDR" {
		t.Errorf("EnvName = %q", got)
	}
}
