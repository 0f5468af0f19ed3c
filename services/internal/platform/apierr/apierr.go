// Package apierr holds the domain errors of MCC and the one table that turns
// them into gRPC statuses at the RPC edge.
//
// Domain code returns sentinel errors, or the structured errors built here,
// wrapped with %w. It never builds gRPC statuses itself. The interceptors of
// this package map whatever a handler returns through Status, so every service
// answers the same error with the same code (etcd's togRPCError is the model).
package apierr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/countymcc/mcc/services/internal/store"
)

// Domain is the ErrorInfo domain of every MCC error.
const Domain = "mcc"

// Sentinel errors of the domain, in addition to those of package store.
var (
	// ErrInvalidArgument reports bad input. Prefer Invalid, which names the
	// field.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition reports an operation the resource's state does not
	// allow. Prefer Condition, which gives a machine-readable reason.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrPermissionDenied reports a caller whose roles do not allow the call.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnauthenticated reports a missing or invalid token.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// mapping is the one table from domain errors to gRPC codes. Order matters
// only where one error wraps another; the first match wins.
var mapping = []struct {
	err  error
	code codes.Code
}{
	{store.ErrNotFound, codes.NotFound},
	{store.ErrAlreadyExists, codes.AlreadyExists},
	{store.ErrConflict, codes.Aborted},
	{store.ErrUnavailable, codes.Unavailable},
	{store.ErrClosed, codes.Unavailable},
	{store.ErrCompacted, codes.FailedPrecondition},
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrPermissionDenied, codes.PermissionDenied},
	{ErrUnauthenticated, codes.Unauthenticated},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// Violation is one bad field of a request.
type Violation struct {
	// Field is the path of the field, as in the request message
	// (`facility.parent`, `resident_id`).
	Field string
	// Description says what is wrong, without echoing sensitive values.
	Description string
}

// InvalidError is bad input with the fields that are wrong. It matches
// ErrInvalidArgument and becomes InvalidArgument with a BadRequest detail.
type InvalidError struct {
	Violations []Violation
}

// Invalid returns an InvalidError for one field.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Violations: []Violation{{Field: field, Description: fmt.Sprintf(format, args...)}}}
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid argument: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalidArgument }

// ConditionError is an operation the current state does not allow. It matches
// ErrFailedPrecondition and becomes FailedPrecondition with an ErrorInfo whose
// reason clients can switch on.
type ConditionError struct {
	// Reason is UPPER_SNAKE_CASE, stable, and documented per RPC, for example
	// INVALID_TRANSITION or SPECIMEN_ALREADY_RECEIVED.
	Reason   string
	Message  string
	Metadata map[string]string
}

// Condition returns a ConditionError.
func Condition(reason, format string, args ...any) error {
	return &ConditionError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ReasonInvalidTransition is the reason of every refused state change.
const ReasonInvalidTransition = "INVALID_TRANSITION"

// Transition reports a state change that the state machine of kind does not
// allow, for example Transition("specimen", "REJECTED", "RECEIVED").
func Transition(kind, from, to string) error {
	return &ConditionError{
		Reason:   ReasonInvalidTransition,
		Message:  fmt.Sprintf("%s cannot go from %s to %s", kind, from, to),
		Metadata: map[string]string{"kind": kind, "from": from, "to": to},
	}
}

func (e *ConditionError) Error() string { return e.Message }

// Is makes errors.Is(err, ErrFailedPrecondition) true.
func (e *ConditionError) Is(target error) bool { return target == ErrFailedPrecondition }

// Reason returns the machine-readable reason of a failed precondition:
// a ConditionError's, or the ErrorInfo reason of a FailedPrecondition
// status (from a call to another service). It is "" for any other error.
func Reason(err error) string {
	var cond *ConditionError
	if errors.As(err, &cond) {
		return cond.Reason
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// Code returns the gRPC code for err, by the table.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	for _, m := range mapping {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return codes.Unknown
}

// Status converts err to a gRPC status. Errors that are already statuses (for
// example from a call to another service) keep their code. Errors outside the
// table become Internal with a generic message; known reports whether err was
// in the table, so the caller can log the unknown ones.
func Status(err error) (st *status.Status, known bool) {
	if s, ok := status.FromError(err); ok {
		return withBadRequest(s), true
	}
	code := Code(err)
	if code == codes.Unknown {
		return status.New(codes.Internal, "internal error"), false
	}
	st = status.New(code, err.Error())
	var inv *InvalidError
	var cond *ConditionError
	switch {
	case errors.As(err, &inv):
		br := &errdetails.BadRequest{}
		for _, v := range inv.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		st = withDetails(st, br)
	case errors.As(err, &cond):
		st = withDetails(st, &errdetails.ErrorInfo{Reason: cond.Reason, Domain: Domain, Metadata: cond.Metadata})
	case code == codes.Aborted:
		st = withDetails(st, &errdetails.ErrorInfo{Reason: "ETAG_MISMATCH", Domain: Domain})
	}
	return st, true
}

// withBadRequest adds a google.rpc.BadRequest detail to a status that carries
// protovalidate's buf.validate.Violations, so clients see field violations in
// one standard shape whether the request failed protovalidate or a check in
// Go code.
func withBadRequest(st *status.Status) *status.Status {
	br := &errdetails.BadRequest{}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			return st
		case *validate.Violations:
			for _, v := range d.GetViolations() {
				br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
					Field:       protovalidate.FieldPathString(v.GetField()),
					Description: v.GetMessage(),
					Reason:      v.GetRuleId(),
				})
			}
		}
	}
	if len(br.FieldViolations) == 0 {
		return st
	}
	return withDetails(st, br)
}

func withDetails(st *status.Status, detail protoadapt.MessageV1) *status.Status {
	if with, err := st.WithDetails(detail); err == nil {
		return with
	}
	return st
}
