package server

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

func TestRefuseOutputOnly(t *testing.T) {
	const svc = "/mcc.directory.v1.DirectoryService/"
	tests := []struct {
		name   string
		method string
		req    proto.Message
		fields []string
	}{
		{name: "clean create", method: svc + "CreateFacility",
			req: &directoryv1.CreateFacilityRequest{FacilityId: "x", Facility: &directoryv1.Facility{DisplayName: "x", Level: 1}}},
		{name: "create assigning the community and a time", method: svc + "CreateFacility",
			req:    &directoryv1.CreateFacilityRequest{FacilityId: "x", Facility: &directoryv1.Facility{DisplayName: "x", Level: 1, Community: "other", CreateTime: timestamppb.Now()}},
			fields: []string{"facility.community", "facility.create_time"}},
		{name: "create assigning a client's state", method: svc + "CreateClient",
			req:    &directoryv1.CreateClientRequest{Client: &directoryv1.Client{DisplayName: "x", State: directoryv1.Client_STATE_ACTIVE}},
			fields: []string{"client.state"}},
		{name: "update sending back what it read", method: svc + "UpdateFacility",
			req: &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{Name: "facilities/x", Community: "demo", CreateTime: timestamppb.Now()}}},
	}
	intercept := refuseOutputOnly()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			_, err := intercept(context.Background(), tt.req, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(context.Context, any) (any, error) {
				called = true
				return nil, nil
			})
			if len(tt.fields) == 0 {
				if err != nil || !called {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var inv *apierr.InvalidError
			if called || !errors.As(err, &inv) || len(inv.Violations) != len(tt.fields) {
				t.Fatalf("err = %v (handler called: %v), want violations on %v", err, called, tt.fields)
			}
			for i, f := range tt.fields {
				if inv.Violations[i].Field != f {
					t.Errorf("violation %d on %s, want %s", i, inv.Violations[i].Field, f)
				}
			}
		})
	}
}
