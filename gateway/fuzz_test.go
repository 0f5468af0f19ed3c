package gateway_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/countymcc/mcc/gateway"
)

// createPaths lists the REST path of every Create method of every service
// the gateway exposes.
func createPaths(t testing.TB) []string {
	var paths []string
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(f.Package()), "mcc.") {
			return true
		}
		for i := 0; i < f.Services().Len(); i++ {
			ms := f.Services().Get(i).Methods()
			for j := 0; j < ms.Len(); j++ {
				m := ms.Get(j)
				if !strings.HasPrefix(string(m.Name()), "Create") {
					continue
				}
				rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				if post := rule.GetPost(); post != "" && !strings.Contains(post, "{") {
					paths = append(paths, post)
				}
			}
		}
		return true
	})
	slices.Sort(paths)
	if len(paths) < 5 {
		t.Fatalf("only %d create paths found", len(paths))
	}
	return paths
}

// FuzzCreateJSON posts arbitrary bodies to every create method. The
// backend implements nothing, so a body that decodes reaches it and gets
// 501; one that does not decode gets 400. Neither may crash the gateway or
// answer 500.
func FuzzCreateJSON(f *testing.F) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := grpc.NewServer()
	go srv.Serve(lis)
	f.Cleanup(srv.Stop)
	eps := gateway.Endpoints{}
	for _, s := range gateway.Services() {
		eps[s] = lis.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	h, err := gateway.New(ctx, eps, gateway.WithMaxBodyBytes(64<<10))
	if err != nil {
		f.Fatal(err)
	}
	paths := createPaths(f)
	for i, seed := range []string{
		`{}`, `{"displayName":"x","level":"FACILITY_LEVEL_VILLAGE_CLINIC"}`,
		`{"patient":"patients/1","tests":["2823-3"],"priority":"PRIORITY_STAT"}`,
		`{"direction":"DIRECTION_UP","diagnosis":{"code":"I10"},"attachments":[{"kind":"KIND_REPORT"}]}`,
		`{"createTime":"2026-13-45T99:00:00Z"}`, `{"level":12345678901234567890}`, `[1,2,3]`, `{"a":`, "\x00\xff",
		`{"displayName":"\ud800"}`, `{"etag":{"nested":[{}]}}`,
	} {
		f.Add(byte(i), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, which byte, body []byte) {
		path := paths[int(which)%len(paths)]
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusBadRequest, http.StatusNotImplemented, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("POST %s %q: status %d %s", path, body, rec.Code, rec.Body.String())
		}
	})
}
