package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/countymcc/mcc/gateway"
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
)

// recorder is a directory backend that remembers the metadata of the last
// call.
type recorder struct {
	directoryv1.UnimplementedDirectoryServiceServer
	mu sync.Mutex
	md metadata.MD
}

func (r *recorder) GetFacility(ctx context.Context, req *directoryv1.GetFacilityRequest) (*directoryv1.GetFacilityResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.md = md
	r.mu.Unlock()
	return &directoryv1.GetFacilityResponse{Facility: &directoryv1.Facility{Name: req.GetName()}}, nil
}

func (r *recorder) CreateFacility(ctx context.Context, req *directoryv1.CreateFacilityRequest) (*directoryv1.CreateFacilityResponse, error) {
	return &directoryv1.CreateFacilityResponse{Facility: req.GetFacility()}, nil
}

func start(t *testing.T, opts ...gateway.Option) (*httptest.Server, *recorder) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv := grpc.NewServer()
	directoryv1.RegisterDirectoryServiceServer(srv, rec)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := gateway.New(ctx, gateway.Endpoints{"directory": lis.Addr().String()}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts, rec
}

func TestOnlyTokenAndRequestIDBecomeMetadata(t *testing.T) {
	ts, rec := start(t)
	req, _ := http.NewRequest("GET", ts.URL+"/v1/facilities/dls", nil)
	req.Header.Set("Authorization", "Bearer abc")
	req.Header.Set("X-Request-Id", "req-1")
	req.Header.Set("Grpc-Metadata-Facility", "facilities/other")
	req.Header.Set("X-Facility", "facilities/other")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Cookie", "session=1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rec.mu.Lock()
	md := rec.md
	rec.mu.Unlock()
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer abc" {
		t.Errorf("authorization = %v", got)
	}
	if got := md.Get("x-request-id"); len(got) != 1 || got[0] != "req-1" {
		t.Errorf("x-request-id = %v", got)
	}
	for k, v := range md {
		if strings.Contains(strings.Join(v, ","), "facilities/other") || strings.Contains(strings.Join(v, ","), "6.6.6.6") || strings.Contains(strings.Join(v, ","), "session") {
			t.Errorf("client header leaked into metadata %s=%v", k, v)
		}
	}
}

// TestPurposeHeader: a well-formed X-MCC-Purpose becomes the metadata
// x-mcc-purpose for the audit trail; a malformed or repeated one is refused
// with 400 before it reaches any service.
func TestPurposeHeader(t *testing.T) {
	ts, rec := start(t)
	for _, tt := range []struct {
		name   string
		values []string
		status int
	}{
		{"plain", []string{"TREATMENT"}, 200},
		{"phrase", []string{"quality review 2026-Q3"}, 200},
		{"too long", []string{strings.Repeat("x", 65)}, 400},
		{"leading punctuation", []string{"-TREATMENT"}, 400},
		{"control character", []string{"TREATMENT\tx"}, 400},
		{"log injection", []string{"x\" level=ERROR"}, 400},
		{"repeated", []string{"TREATMENT", "PAYMENT"}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec.mu.Lock()
			rec.md = nil
			rec.mu.Unlock()
			req, _ := http.NewRequest("GET", ts.URL+"/v1/facilities/dls", nil)
			for _, v := range tt.values {
				req.Header.Add("X-MCC-Purpose", v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			rec.mu.Lock()
			md := rec.md
			rec.mu.Unlock()
			if tt.status != 200 {
				if !strings.Contains(string(body), "X-MCC-Purpose") {
					t.Errorf("the refusal does not name the header: %s", body)
				}
				if md != nil {
					t.Errorf("a refused request reached the service with %v", md)
				}
				return
			}
			if got := md.Get("x-mcc-purpose"); len(got) != 1 || got[0] != tt.values[0] {
				t.Errorf("x-mcc-purpose = %v, want %q", got, tt.values[0])
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	ts, _ := start(t, gateway.WithMaxBodyBytes(1024))
	for name, tc := range map[string]struct {
		body string
		want int
	}{
		"small": {body: `{"displayName":"x"}`, want: 200},
		"large": {body: `{"displayName":"` + strings.Repeat("x", 2048) + `"}`, want: 413},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := http.Post(ts.URL+"/v1/facilities?facility_id=x", "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	// A chunked body (no Content-Length) is cut off at the limit as well.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/facilities?facility_id=x", strings.NewReader(strings.Repeat("x", 4096)))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked oversize body: status %d, want 413", resp.StatusCode)
	}
}

func TestUnknownService(t *testing.T) {
	if _, err := gateway.New(context.Background(), gateway.Endpoints{"nope": "127.0.0.1:1"}); err == nil {
		t.Fatal("an unknown service was accepted")
	}
}
