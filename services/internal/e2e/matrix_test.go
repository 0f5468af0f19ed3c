package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/countymcc/mcc/gateway"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/app"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// policyDenial is how the authorization interceptor words a refusal by
// role, which tells it apart from a service refusing by facility.
const policyDenial = "your roles may not call"

// rpc is one method the matrix calls.
type rpc struct {
	desc    protoreflect.MethodDescriptor
	allowed []typev1.Role // nil: public
	verb    string        // HTTP method
	path    string        // HTTP path with placeholders filled in
}

// methods lists every method of every service the gateway exposes, with
// its roles and a REST path. Every method must be in the policy.
func methods(t *testing.T) []rpc {
	t.Helper()
	policy := app.AccessPolicy()
	exposed := gateway.Services()
	var out []rpc
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		parts := strings.Split(string(f.Package()), ".")
		if len(parts) != 3 || parts[0] != "mcc" || !slices.Contains(exposed, parts[1]) {
			return true
		}
		for i := 0; i < f.Services().Len(); i++ {
			ms := f.Services().Get(i).Methods()
			for j := 0; j < ms.Len(); j++ {
				m := ms.Get(j)
				full := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
				allowed, ok := policy[full]
				if !ok {
					t.Errorf("%s is in no policy: nobody can call it", full)
					continue
				}
				verb, path := httpRule(m)
				out = append(out, rpc{desc: m, allowed: allowed, verb: verb, path: path})
			}
		}
		return true
	})
	return out
}

// placeholder fills each {field=pattern} of an HTTP rule with a value that
// matches the pattern.
var placeholder = regexp.MustCompile(`\{([a-z_.]+)(=([^}]*))?\}`)

func httpRule(m protoreflect.MethodDescriptor) (verb, path string) {
	rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
	switch {
	case rule.GetGet() != "":
		verb, path = "GET", rule.GetGet()
	case rule.GetPost() != "":
		verb, path = "POST", rule.GetPost()
	case rule.GetPatch() != "":
		verb, path = "PATCH", rule.GetPatch()
	case rule.GetDelete() != "":
		verb, path = "DELETE", rule.GetDelete()
	case rule.GetPut() != "":
		verb, path = "PUT", rule.GetPut()
	}
	path = placeholder.ReplaceAllStringFunc(path, func(p string) string {
		sub := placeholder.FindStringSubmatch(p)
		if sub[3] == "" {
			return "x1"
		}
		return strings.ReplaceAll(sub[3], "*", "x1")
	})
	return verb, path
}

// call invokes a method over gRPC with an empty request and returns its
// status. Streams are read until their first message or error.
func call(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor) error {
	full := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
	in := dynamicpb.NewMessage(m.Input())
	out := dynamicpb.NewMessage(m.Output())
	if !m.IsStreamingServer() {
		return conn.Invoke(ctx, full, in, out)
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return err
	}
	if err := stream.SendMsg(in); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return stream.RecvMsg(out)
}

// TestAuthorizationMatrix calls every RPC of every service with every role,
// over gRPC and over REST, and checks the policy decides: a role not in the
// method's table is refused with PERMISSION_DENIED (403), and a role in it is
// never refused by role. The requests are empty, so an allowed call stops at
// validation or in the service; what matters is that the role check let it
// through.
func TestAuthorizationMatrix(t *testing.T) {
	sys := start(t)
	conn, err := grpc.NewClient(sys.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roles := auth.AnyRole()
	tokens := map[typev1.Role]string{}
	for _, r := range roles {
		tokens[r] = sys.token(t, "demo", "dls", time.Hour, r)
	}
	all := methods(t)
	// The calls are independent; sixteen at a time keep the watch streams'
	// short deadlines from adding up.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, m := range all {
		for _, role := range roles {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				checkCall(t, sys, conn, m, role, tokens[role])
			}()
		}
	}
	wg.Wait()
	checked := len(all) * len(roles)
	if len(all) < 50 {
		t.Errorf("only %d methods found", len(all))
	}
	t.Logf("%d methods × %d roles = %d calls, each over gRPC and REST", len(all), len(roles), checked)
}

// checkCall calls m as role over gRPC and over REST and checks that the
// role check decided as the policy says.
func checkCall(t *testing.T, sys *system, conn *grpc.ClientConn, m rpc, role typev1.Role, token string) {
	name := fmt.Sprintf("%s/%s", m.desc.FullName(), auth.RoleName(role))
	mayCall := m.allowed == nil || slices.Contains(m.allowed, role)
	ctx, cancel := context.WithTimeout(servertest.WithToken(context.Background(), token), deadline(m))
	err := call(ctx, conn, m.desc)
	cancel()
	byRole := status.Code(err) == codes.PermissionDenied && strings.Contains(status.Convert(err).Message(), policyDenial)
	if byRole == mayCall {
		t.Errorf("gRPC %s: %v (allowed roles %v)", name, err, m.allowed)
	}
	code, body := restCall(t, sys, m, token)
	restByRole := code == http.StatusForbidden && strings.Contains(body, policyDenial)
	if restByRole == mayCall {
		t.Errorf("REST %s %s as %s: %d %s", m.verb, m.path, auth.RoleName(role), code, body)
	}
}

// deadline bounds one call. A watch the role may open stays open; a short
// deadline ends it, and a refusal comes at once anyway.
func deadline(m rpc) time.Duration {
	if m.desc.IsStreamingServer() {
		return 300 * time.Millisecond
	}
	return 2 * time.Second
}

// restCall calls a method's REST route with an empty body (or none).
func restCall(t *testing.T, sys *system, m rpc, token string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline(m))
	defer cancel()
	var body io.Reader
	if m.verb != "GET" && m.verb != "DELETE" {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, m.verb, sys.url+m.path, body)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// A watch stream that stays open until the deadline: not refused.
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// getRoutes lists, per service, the GET routes that read one resource by
// name: the route template and a pattern its resource names match.
type getRoute struct {
	template string         // "/v1/lab/{name=reports/*}"
	names    *regexp.Regexp // ^reports/[^/]+$
}

func getRoutes() map[string][]getRoute {
	out := map[string][]getRoute{}
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		parts := strings.Split(string(f.Package()), ".")
		if len(parts) != 3 || parts[0] != "mcc" {
			return true
		}
		for i := 0; i < f.Services().Len(); i++ {
			ms := f.Services().Get(i).Methods()
			for j := 0; j < ms.Len(); j++ {
				rule, _ := proto.GetExtension(ms.Get(j).Options(), annotations.E_Http).(*annotations.HttpRule)
				sub := placeholder.FindStringSubmatch(rule.GetGet())
				if sub == nil || sub[1] != "name" || sub[3] == "" {
					continue
				}
				pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(sub[3]), `\*`, `[^/]+`) + "$"
				out[parts[1]] = append(out[parts[1]], getRoute{template: rule.GetGet(), names: regexp.MustCompile(pattern)})
			}
		}
		return true
	})
	return out
}

// outsiderRoles are the roles of a facility's staff, who must see only
// what concerns their facility. (Administrators, auditors, coordinators and
// services see the community by design.)
var outsiderRoles = []typev1.Role{
	typev1.Role_ROLE_CLINICIAN, typev1.Role_ROLE_LAB_TECHNOLOGIST, typev1.Role_ROLE_RADIOLOGIST,
	typev1.Role_ROLE_CARDIOLOGIST, typev1.Role_ROLE_PATHOLOGIST, typev1.Role_ROLE_CSSD_OPERATOR,
}

// sharedData are the collections every member of the community reads by
// design: the directory of facilities and practitioners, and the catalogs.
// They hold no patient data.
var sharedData = regexp.MustCompile(`^(facilities|practitioners|tests|setTypes|sterilizers|catalogItems|items)/`)

// checkObjectAccess reads every exposed service's feed as the service role
// and, for every resource that appeared in it, tries every route that reads
// it by name, as staff (all staff roles) of `outsider`, a facility its
// events do not concern: each must be 404 or 403 (OWASP API1, BOLA). It
// returns how many reads it tried, per service.
func (s *system) checkObjectAccess(t *testing.T, outsider string) map[string]int {
	t.Helper()
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	svcToken := s.serviceToken(t, "demo")
	outsiderToken := s.token(t, "demo", strings.TrimPrefix(outsider, "facilities/"), time.Hour, outsiderRoles...)
	routes := getRoutes()
	tried := map[string]int{}
	for _, svc := range gateway.Services() {
		concerned := map[string]map[string]bool{} // resource -> facilities
		for cursor := ""; ; {
			ctx, cancel := context.WithTimeout(servertest.WithToken(context.Background(), svcToken), 5*time.Second)
			page, next, err := listEvents(ctx, conn, svc, cursor)
			cancel()
			if status.Code(err) == codes.Unimplemented || status.Code(err) == codes.NotFound {
				break
			}
			if err != nil {
				t.Fatalf("%s events: %v", svc, err)
			}
			for _, ev := range page {
				if concerned[ev.GetResource()] == nil {
					concerned[ev.GetResource()] = map[string]bool{}
				}
				for _, f := range ev.GetFacilities() {
					concerned[ev.GetResource()][f] = true
				}
			}
			if len(page) == 0 {
				break
			}
			cursor = next
		}
		for resource, facilities := range concerned {
			if facilities[outsider] || sharedData.MatchString(resource) {
				continue
			}
			for _, r := range routes[svc] {
				if !r.names.MatchString(resource) {
					continue
				}
				path := placeholder.ReplaceAllString(r.template, resource)
				got := s.do(t, "GET", path, outsiderToken, "")
				if got.status != http.StatusNotFound && got.status != http.StatusForbidden {
					t.Errorf("%s, which concerns %v, read by %s: %d %s", path, keys(facilities), outsider, got.status, got.raw)
				}
				tried[svc]++
			}
		}
	}
	return tried
}

// listEvents calls a service's ListEvents with the shape every service
// shares (the contracts test checks it).
func listEvents(ctx context.Context, conn *grpc.ClientConn, svc, after string) ([]*typev1.Event, string, error) {
	var full string
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if string(f.Package()) == "mcc."+svc+".v1" {
			for i := 0; i < f.Services().Len(); i++ {
				if m := f.Services().Get(i).Methods().ByName("ListEvents"); m != nil {
					full = "/" + string(f.Services().Get(i).FullName()) + "/ListEvents"
				}
			}
		}
		return true
	})
	if full == "" {
		return nil, "", status.Error(codes.Unimplemented, "no feed")
	}
	in := dynamicpb.NewMessage(methodInput(full))
	in.Set(in.Descriptor().Fields().ByName("after"), protoreflect.ValueOfString(after))
	in.Set(in.Descriptor().Fields().ByName("page_size"), protoreflect.ValueOfInt32(1000))
	out := dynamicpb.NewMessage(methodOutput(full))
	if err := conn.Invoke(ctx, full, in, out); err != nil {
		return nil, "", err
	}
	var evs []*typev1.Event
	list := out.Get(out.Descriptor().Fields().ByName("events")).List()
	for i := 0; i < list.Len(); i++ {
		b, err := proto.Marshal(list.Get(i).Message().Interface())
		if err != nil {
			return nil, "", err
		}
		ev := &typev1.Event{}
		if err := proto.Unmarshal(b, ev); err != nil {
			return nil, "", err
		}
		evs = append(evs, ev)
	}
	return evs, out.Get(out.Descriptor().Fields().ByName("next_cursor")).String(), nil
}

func methodInput(full string) protoreflect.MessageDescriptor  { return method(full).Input() }
func methodOutput(full string) protoreflect.MessageDescriptor { return method(full).Output() }

func method(full string) protoreflect.MethodDescriptor {
	svc, name, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	d, _ := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	return d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(name))
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
