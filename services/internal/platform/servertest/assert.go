package servertest

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

// WantCode fails the test unless err has the gRPC code want.
func WantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %v (%v), want %v", got, err, want)
	}
}

// WantField fails the test unless err is InvalidArgument with a BadRequest
// field violation on field.
func WantField(t testing.TB, err error, field string) {
	t.Helper()
	WantCode(t, err, codes.InvalidArgument)
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
		}
	}
	t.Fatalf("no field violation on %q in %v", field, status.Convert(err).Details())
}

// WantReason fails the test unless err is FailedPrecondition with an
// ErrorInfo of the given reason.
func WantReason(t testing.TB, err error, reason string) {
	t.Helper()
	WantCode(t, err, codes.FailedPrecondition)
	if got := apierr.Reason(err); got != reason {
		t.Fatalf("ErrorInfo reason %q, want %q, in %v", got, reason, status.Convert(err).Details())
	}
}

// WantError checks err against a table row that expects either a field
// violation (field set) or a bare code.
func WantError(t testing.TB, err error, code codes.Code, field string) {
	t.Helper()
	if field != "" {
		WantField(t, err, field)
		return
	}
	WantCode(t, err, code)
}
