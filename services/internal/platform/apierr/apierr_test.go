package apierr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/countymcc/mcc/services/internal/store"
)

func TestStatusTable(t *testing.T) {
	tests := []struct {
		err   error
		code  codes.Code
		known bool
	}{
		{fmt.Errorf("facilities/x: %w", store.ErrNotFound), codes.NotFound, true},
		{fmt.Errorf("x: %w", store.ErrAlreadyExists), codes.AlreadyExists, true},
		{fmt.Errorf("x: %w", store.ErrConflict), codes.Aborted, true},
		{fmt.Errorf("x: %w", store.ErrUnavailable), codes.Unavailable, true},
		{store.ErrClosed, codes.Unavailable, true},
		{Invalid("a.b", "bad"), codes.InvalidArgument, true},
		{Condition("SPECIMEN_REJECTED", "no"), codes.FailedPrecondition, true},
		{Transition("specimen", "REJECTED", "RECEIVED"), codes.FailedPrecondition, true},
		{fmt.Errorf("x: %w", ErrPermissionDenied), codes.PermissionDenied, true},
		{ErrUnauthenticated, codes.Unauthenticated, true},
		{context.DeadlineExceeded, codes.DeadlineExceeded, true},
		{status.Error(codes.ResourceExhausted, "slow down"), codes.ResourceExhausted, true},
		{errors.New("disk on fire at /var/secret"), codes.Internal, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			st, known := Status(tt.err)
			if st.Code() != tt.code || known != tt.known {
				t.Fatalf("Status = %v known=%v, want %v known=%v", st.Code(), known, tt.code, tt.known)
			}
			if !known && st.Message() != "internal error" {
				t.Errorf("unknown error leaks its message: %q", st.Message())
			}
		})
	}
}

func TestStatusDetails(t *testing.T) {
	st, _ := Status(fmt.Errorf("register: %w", Invalid("resident_id", "check digit does not match")))
	br := detail[*errdetails.BadRequest](t, st)
	if v := br.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "resident_id" {
		t.Errorf("violations %v", v)
	}

	st, _ = Status(Transition("specimen", "REJECTED", "RECEIVED"))
	info := detail[*errdetails.ErrorInfo](t, st)
	if info.GetReason() != ReasonInvalidTransition || info.GetDomain() != Domain || info.GetMetadata()["from"] != "REJECTED" {
		t.Errorf("error info %v", info)
	}

	// protovalidate's own detail gains a standard BadRequest.
	pv, _ := status.New(codes.InvalidArgument, "validation error").WithDetails(&validate.Violations{Violations: []*validate.Violation{{
		Field:   &validate.FieldPath{Elements: []*validate.FieldPathElement{{FieldName: proto.String("facility")}, {FieldName: proto.String("level")}}},
		RuleId:  proto.String("enum.defined_only"),
		Message: proto.String("value must be one of the defined enum values"),
	}}})
	st, _ = Status(pv.Err())
	br = detail[*errdetails.BadRequest](t, st)
	if v := br.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "facility.level" {
		t.Errorf("converted violations %v", v)
	}
}

func detail[T any](t *testing.T, st *status.Status) T {
	t.Helper()
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T in %v", zero, st.Details())
	return zero
}

// TestReason reads a failed precondition's reason from a local error and
// from the status another service answered with.
func TestReason(t *testing.T) {
	cond := Condition("CURSOR_EXPIRED", "too old")
	st, _ := Status(fmt.Errorf("wrapped: %w", cond))
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"condition", cond, "CURSOR_EXPIRED"},
		{"wrapped condition", fmt.Errorf("lab: %w", cond), "CURSOR_EXPIRED"},
		{"status from another service", st.Err(), "CURSOR_EXPIRED"},
		{"status wrapped", fmt.Errorf("lab: %w", st.Err()), "CURSOR_EXPIRED"},
		{"other code", status.Error(codes.NotFound, "no"), ""},
		{"no detail", status.Error(codes.FailedPrecondition, "no"), ""},
		{"plain error", errors.New("no"), ""},
		{"nil", nil, ""},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("%s: Reason = %q, want %q", tc.name, got, tc.want)
		}
	}
}
