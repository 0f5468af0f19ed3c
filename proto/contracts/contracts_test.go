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
	_ "github.com/countymcc/mcc/proto/mcc/directory/v1"
	_ "github.com/countymcc/mcc/proto/mcc/lab/v1"
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
