package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"
)

// metricName finds the metric names in PromQL.
var metricName = regexp.MustCompile(`\b((?:mcc|grpc_server|process|go)_[a-z_]+)\b`)

// registeredMetrics starts nothing: it builds the whole system and lists the
// metric names its registry describes.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	env := Env{Getenv: func(string) string { return "" }, Stdout: io.Discard, Stderr: io.Discard}
	cfg, err := LoadConfig([]string{"-grpc-addr=127.0.0.1:0", "-http-addr=127.0.0.1:0", "-data-dir=" + t.TempDir()}, env)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.close()
	descs := make(chan *prometheus.Desc, 1024)
	go func() {
		sys.registry.Describe(descs)
		close(descs)
	}()
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// TestAlertsAndDashboardUseRealMetrics checks that every metric the alert
// rules and the Grafana dashboard name is one mcc registers, so neither
// watches a metric that does not exist.
func TestAlertsAndDashboardUseRealMetrics(t *testing.T) {
	registered := registeredMetrics(t)
	var exprs []string
	data, err := os.ReadFile(filepath.Join(deployDir, "observability", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	ops, err := os.ReadFile(filepath.Join(deployDir, "..", "docs", "OPERATIONS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			anchor, ok := strings.CutPrefix(r.Annotations["runbook"], "docs/OPERATIONS.md#")
			if r.Alert == "" || r.Expr == "" || !ok {
				t.Errorf("rule %q lacks a name, an expression or a runbook link", r.Alert)
			}
			if !strings.Contains(string(ops), "\n### "+anchor+"\n") {
				t.Errorf("rule %s: docs/OPERATIONS.md has no runbook entry %q", r.Alert, anchor)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	data, err = os.ReadFile(filepath.Join(deployDir, "observability", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	checked := 0
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
			if !registered[base] && !registered[m] {
				t.Errorf("%s is not a metric mcc registers (in %q)", m, e)
			}
			checked++
		}
	}
	if checked < 15 {
		t.Errorf("only %d metric references checked", checked)
	}
}
