package e2e

import (
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/app"
)

// TestOneRESTCallIsOneTrace creates a lab order through REST, on Redis, and
// follows its trace: the gateway's HTTP span is the root; the lab's server
// span descends from it; the lab's call to the directory (to check the
// patient) joins the same trace, down to the directory's server span; and
// the Redis commands of both services hang below their server spans. No
// span carries a patient identifier.
func TestOneRESTCallIsOneTrace(t *testing.T) {
	sys := start(t, backends()[1].flags(t)...)
	if out, err := mcc(t, "seed", "demo", "-addr", sys.grpc, "-data-dir", sys.dataDir); err != nil {
		t.Fatalf("seed: %v %s", err, out)
	}
	doc := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	patient := sys.do(t, "GET", "/v1/patients", doc, "").want(t, 200).str(t, "patients.0.name")
	before := len(sys.spans.Ended())
	sys.do(t, "POST", "/v1/lab/orders?requestId=trace-1", doc, `{"patient":"`+patient+`","tests":["2823-3"],"priority":"PRIORITY_ROUTINE"}`).want(t, 200)

	var spans []sdktrace.ReadOnlySpan
	// A server span ends when its status has been sent, which may be after
	// the client (and so the gateway) has the answer: wait for all three.
	eventually(t, 5*time.Second, "the request's spans to end", func() bool {
		spans = sys.spans.Ended()[before:]
		var root, lab, dir bool
		for _, s := range spans {
			root = root || !s.Parent().IsValid() && strings.HasPrefix(s.Name(), "POST /v1/lab/orders")
			lab = lab || s.SpanKind() == trace.SpanKindServer && s.Name() == "mcc.lab.v1.LabService/CreateOrder"
			dir = dir || s.SpanKind() == trace.SpanKindServer && s.Name() == "mcc.directory.v1.DirectoryService/GetPatient"
		}
		return root && lab && dir
	})
	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		if !s.Parent().IsValid() && strings.HasPrefix(s.Name(), "POST /v1/lab/orders") {
			root = s
		}
	}
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.SpanContext().TraceID() == root.SpanContext().TraceID() {
			byID[s.SpanContext().SpanID()] = s
		}
	}
	// chain names the spans from s up to the root.
	chain := func(s sdktrace.ReadOnlySpan) []string {
		var names []string
		for s != nil {
			names = append(names, s.SpanKind().String()+" "+s.Name())
			s = byID[s.Parent().SpanID()]
		}
		return names
	}
	find := func(kind trace.SpanKind, name string) sdktrace.ReadOnlySpan {
		for _, s := range byID {
			if s.SpanKind() == kind && s.Name() == name {
				return s
			}
		}
		t.Fatalf("no %s span %q in the trace; it has %d spans", kind, name, len(byID))
		return nil
	}
	lab := find(trace.SpanKindServer, "mcc.lab.v1.LabService/CreateOrder")
	dir := find(trace.SpanKindServer, "mcc.directory.v1.DirectoryService/GetPatient")
	if c := chain(lab); c[len(c)-1] != root.SpanKind().String()+" "+root.Name() {
		t.Errorf("the lab's span does not descend from the gateway's: %v", c)
	}
	dirChain := strings.Join(chain(dir), " <- ")
	if !strings.Contains(dirChain, "mcc.lab.v1.LabService/CreateOrder") || !strings.Contains(dirChain, "POST /v1/lab/orders") {
		t.Errorf("the directory's span is not below the lab's and the gateway's: %s", dirChain)
	}
	for _, server := range []sdktrace.ReadOnlySpan{lab, dir} {
		found := false
		for _, s := range byID {
			if s.SpanKind() == trace.SpanKindClient && strings.Contains(strings.Join(chain(s), " "), server.Name()) && isRedis(s) {
				found = true
			}
		}
		if !found {
			t.Errorf("no Redis command span below %s", server.Name())
		}
	}
	t.Logf("the order's trace has %d spans; the directory's chain: %s", len(byID), dirChain)
	sys.wantNoPII(t, app.DemoIdentifiers()...)
}

func isRedis(s sdktrace.ReadOnlySpan) bool {
	for _, a := range s.Attributes() {
		if a.Key == "db.system" || a.Key == "db.system.name" {
			return a.Value.AsString() == "redis"
		}
	}
	return false
}
