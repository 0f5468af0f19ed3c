// Package contracts_test checks rules that every MCC API must follow, over
// every service registered by the generated code, so a new service or RPC
// cannot forget them.
package contracts_test

import (
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	// Every service package, so that its descriptors are registered.
	_ "github.com/countymcc/mcc/proto/mcc/admin/v1"
	_ "github.com/countymcc/mcc/proto/mcc/audit/v1"
	_ "github.com/countymcc/mcc/proto/mcc/directory/v1"
	_ "github.com/countymcc/mcc/proto/mcc/ecg/v1"
	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	_ "github.com/countymcc/mcc/proto/mcc/imaging/v1"
	_ "github.com/countymcc/mcc/proto/mcc/lab/v1"
	_ "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	_ "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	_ "github.com/countymcc/mcc/proto/mcc/referral/v1"
	_ "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
)

// services returns every service of an mcc.* package.
func services(t *testing.T) []protoreflect.ServiceDescriptor {
	var out []protoreflect.ServiceDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(f.Package()), "mcc.") {
			for i := 0; i < f.Services().Len(); i++ {
				out = append(out, f.Services().Get(i))
			}
		}
		return true
	})
	if len(out) == 0 {
		t.Fatal("no mcc service is registered")
	}
	return out
}

// TestEveryRPCHasAnHTTPRule: the REST gateway exposes every method.
func TestEveryRPCHasAnHTTPRule(t *testing.T) {
	for _, svc := range services(t) {
		for i := 0; i < svc.Methods().Len(); i++ {
			m := svc.Methods().Get(i)
			if !proto.HasExtension(m.Options(), annotations.E_Http) {
				t.Errorf("%s has no google.api.http annotation", m.FullName())
			}
		}
	}
}

// TestEveryRequestFieldIsValidated: each field of each request message
// carries protovalidate rules, so no input reaches a handler unchecked.
func TestEveryRequestFieldIsValidated(t *testing.T) {
	for _, svc := range services(t) {
		for i := 0; i < svc.Methods().Len(); i++ {
			in := svc.Methods().Get(i).Input()
			for j := 0; j < in.Fields().Len(); j++ {
				f := in.Fields().Get(j)
				rules, _ := proto.GetExtension(f.Options(), validate.E_Field).(*validate.FieldRules)
				if rules == nil || proto.Size(rules) == 0 {
					t.Errorf("%s has no protovalidate rule", f.FullName())
				}
			}
		}
	}
}

// TestListsPageAndCreatesAreIdempotent: every List takes page_size and
// page_token, and every Create takes request_id (AIP-158, AIP-155).
func TestListsPageAndCreatesAreIdempotent(t *testing.T) {
	for _, svc := range services(t) {
		for i := 0; i < svc.Methods().Len(); i++ {
			m := svc.Methods().Get(i)
			fields := m.Input().Fields()
			switch name := string(m.Name()); {
			case strings.HasPrefix(name, "List") && name != "ListEvents":
				for _, want := range []protoreflect.Name{"page_size", "page_token"} {
					if fields.ByName(want) == nil {
						t.Errorf("%s has no %s", m.FullName(), want)
					}
				}
			case strings.HasPrefix(name, "Create"):
				if fields.ByName("request_id") == nil {
					t.Errorf("%s has no request_id", m.FullName())
				}
			}
		}
	}
}

// TestEventFeedsShareOneShape: the feed service reads every service's
// ListEvents and WatchEvents with one generic client, which sends and
// receives the feed service's own messages on the other services' methods.
// That works only while every service's messages have exactly the same
// fields (numbers, names, types), and both methods exist together.
func TestEventFeedsShareOneShape(t *testing.T) {
	want := map[string][2]protoreflect.MessageDescriptor{
		"ListEvents":  {(&feedv1.ListEventsRequest{}).ProtoReflect().Descriptor(), (&feedv1.ListEventsResponse{}).ProtoReflect().Descriptor()},
		"WatchEvents": {(&feedv1.WatchEventsRequest{}).ProtoReflect().Descriptor(), (&feedv1.WatchEventsResponse{}).ProtoReflect().Descriptor()},
	}
	feeds := 0
	for _, svc := range services(t) {
		list, watch := svc.Methods().ByName("ListEvents"), svc.Methods().ByName("WatchEvents")
		if (list == nil) != (watch == nil) {
			t.Errorf("%s has only one of ListEvents and WatchEvents", svc.FullName())
			continue
		}
		if list == nil {
			continue
		}
		feeds++
		if list.IsStreamingClient() || list.IsStreamingServer() || watch.IsStreamingClient() || !watch.IsStreamingServer() {
			t.Errorf("%s: ListEvents must be unary and WatchEvents server-streaming", svc.FullName())
		}
		for _, m := range []protoreflect.MethodDescriptor{list, watch} {
			shapes := want[string(m.Name())]
			sameShape(t, m.FullName(), m.Input(), shapes[0])
			sameShape(t, m.FullName(), m.Output(), shapes[1])
		}
	}
	if feeds < 2 {
		t.Errorf("only %d services have an event feed", feeds)
	}
}

// sameShape fails the test unless got and want have the same fields with
// the same numbers, names, cardinalities and types.
func sameShape(t *testing.T, method protoreflect.FullName, got, want protoreflect.MessageDescriptor) {
	t.Helper()
	if got.Fields().Len() != want.Fields().Len() {
		t.Errorf("%s: %s has %d fields, want %d as in %s", method, got.FullName(), got.Fields().Len(), want.Fields().Len(), want.FullName())
		return
	}
	for i := 0; i < want.Fields().Len(); i++ {
		w := want.Fields().Get(i)
		g := got.Fields().ByNumber(w.Number())
		switch {
		case g == nil:
			t.Errorf("%s: %s has no field %d (%s)", method, got.FullName(), w.Number(), w.Name())
		case g.Name() != w.Name() || g.Kind() != w.Kind() || g.Cardinality() != w.Cardinality():
			t.Errorf("%s: field %s is %v %v, want %s %v %v", method, g.FullName(), g.Cardinality(), g.Kind(), w.Name(), w.Cardinality(), w.Kind())
		case g.Message() != nil && g.Message().FullName() != w.Message().FullName():
			t.Errorf("%s: field %s is a %s, want %s", method, g.FullName(), g.Message().FullName(), w.Message().FullName())
		}
	}
}
