package audit

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/otel/trace"
	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// PurposeMetadata is the gRPC metadata key of the caller's purpose of use;
// the gateway fills it from the X-MCC-Purpose header.
const PurposeMetadata = "x-mcc-purpose"

// purposePattern is what a purpose may look like: a short code or phrase,
// with no control characters and nothing that could forge a log line.
var purposePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 _.:/-]{0,63}$`)

// requestIDPattern is the shape of a request ID the record keeps, as the
// gateway makes them; a gRPC client's other values are left out.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ValidPurpose reports whether p is an acceptable purpose of use.
func ValidPurpose(p string) bool { return purposePattern.MatchString(p) }

// maxNames bounds the resources and the patients one record lists.
const maxNames = 100

// Recorder writes the audit record of every call that touches patient data.
type Recorder struct {
	writer *Writer
	clock  clock.Clock
	logger *slog.Logger
	// audited caches, by full method name, whether a method is audited.
	audited sync.Map
}

// NewRecorder returns a Recorder writing through w.
func NewRecorder(w *Writer, clk clock.Clock, logger *slog.Logger) *Recorder {
	return &Recorder{writer: w, clock: clk, logger: logger}
}

// Audited reports whether calls of method (`/pkg.Service/Method`) are
// audited: those whose request or response message can carry a patient (a
// `patient` or `patients` field, a `Patient` message, or an Any, which may
// wrap either), and those marked `(mcc.type.v1.patient_data)`. The schema
// decides, so a new RPC that returns patients is audited without anyone
// remembering to.
func (r *Recorder) Audited(method string) bool {
	if v, ok := r.audited.Load(method); ok {
		return v.(bool)
	}
	v := Touches(method)
	r.audited.Store(method, v)
	return v
}

// Touches reports from the registered descriptors whether method touches
// patient data; see Recorder.Audited.
func Touches(method string) bool {
	svc, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if !ok {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return false
	}
	m := sd.Methods().ByName(protoreflect.Name(name))
	if m == nil {
		return false
	}
	if v, _ := proto.GetExtension(m.Options(), typev1.E_PatientData).(bool); v {
		return true
	}
	return carriesPatient(m.Input(), map[protoreflect.FullName]bool{}) || carriesPatient(m.Output(), map[protoreflect.FullName]bool{})
}

func carriesPatient(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if md.FullName() == "google.protobuf.Any" || md.Name() == "Patient" {
		return true
	}
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		if f.Name() == "patient" || f.Name() == "patients" {
			return true
		}
		if f.Message() != nil && carriesPatient(f.Message(), seen) {
			return true
		}
	}
	return false
}

// Matcher selects the audited methods, for go-grpc-middleware's selector.
func (r *Recorder) Matcher() selector.Matcher {
	return selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return r.Audited(c.FullMethod())
	})
}

// errUnrecorded is what a caller gets when its call could not be recorded.
// The trail fails closed: a read whose record is lost returns no data, and
// a write whose record is lost reports UNAVAILABLE although it may have
// happened, so the client retries it with the same request_id (every
// create and state change is idempotent) and that retry is recorded.
var errUnrecorded = status.Error(codes.Unavailable, "the audit trail could not record this call; retry it with the same request_id")

// UnaryServerInterceptor records every audited unary call after its handler
// ran. It must run after authentication (it needs the caller) and before
// authorization and validation, so refused calls are recorded too.
func (r *Recorder) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		caller, ok := auth.CallerFrom(ctx)
		if !ok {
			return handler(ctx, req)
		}
		c := r.begin(ctx, caller, info.FullMethod)
		var resp any
		err := c.purposeErr
		if err == nil {
			resp, err = handler(ctx, req)
		}
		c.collect(req, true)
		if err == nil {
			c.collect(resp, true)
		}
		if werr := r.finish(ctx, c, err); werr != nil {
			return nil, werr
		}
		return resp, err
	}, r.Matcher())
}

// StreamServerInterceptor records every audited stream when it ends, with
// the patients of every message it sent (up to the record's bound).
func (r *Recorder) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		caller, ok := auth.CallerFrom(ctx)
		if !ok {
			return handler(srv, ss)
		}
		c := r.begin(ctx, caller, info.FullMethod)
		err := c.purposeErr
		if err == nil {
			err = handler(srv, &recordingStream{ServerStream: ss, call: c})
		}
		if werr := r.finish(ctx, c, err); werr != nil {
			return werr
		}
		return err
	}, r.Matcher())
}

// recordingStream collects the names and patients of the messages a stream
// receives and sends.
type recordingStream struct {
	grpc.ServerStream
	call *call
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.call.collect(m, true)
	}
	return err
}

func (s *recordingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.call.collect(m, false)
	}
	return err
}

// call is the record of one call under construction.
type call struct {
	community  string
	rec        *auditv1.AuditRecord
	purposeErr error
	mu         sync.Mutex
}

func (r *Recorder) begin(ctx context.Context, caller auth.Caller, method string) *call {
	rec := &auditv1.AuditRecord{
		Subject:  caller.Subject,
		ClientId: caller.ClientID,
		Roles:    slices.Clone(caller.Roles),
		Facility: caller.Facility,
		TokenId:  caller.TokenID,
		Method:   method,
	}
	c := &call{community: caller.Community, rec: rec}
	// ValueFromIncomingContext reads one key without copying the metadata.
	if v := metadata.ValueFromIncomingContext(ctx, PurposeMetadata); len(v) > 0 {
		if len(v) > 1 || !ValidPurpose(v[0]) {
			c.purposeErr = apierr.Invalid(PurposeMetadata, "purpose of use must be one value of at most 64 letters, digits, spaces and _.:/- (the X-MCC-Purpose header)")
		} else {
			rec.Purpose = v[0]
		}
	}
	if v := metadata.ValueFromIncomingContext(ctx, "x-request-id"); len(v) > 0 && requestIDPattern.MatchString(v[0]) {
		rec.RequestId = v[0]
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		rec.TraceId = sc.TraceID().String()
	}
	return c
}

// finish stamps the outcome and the time and writes the record. It returns
// the error to give the caller instead of the call's own when the record
// could not be written.
//
// It waits for the record even when the caller has gone: a watch ends when
// its client cancels it, and a write may have committed before its client's
// deadline passed. The handler returns only once its record is committed
// (the Writer bounds that), so a graceful stop, which waits for handlers,
// never closes the stores under a record not yet written.
func (r *Recorder) finish(ctx context.Context, c *call, err error) error {
	rec := c.rec
	rec.Outcome = rpccode.Code(apierr.Code(err)).String()
	rec.Time = timestamppb.New(r.clock.Now())
	if err := r.writer.Write(context.WithoutCancel(ctx), c.community, rec); err != nil {
		r.logger.ErrorContext(ctx, "audit record not written; the call fails", "method", rec.GetMethod(), "error", err.Error())
		return errUnrecorded
	}
	return nil
}

// collect adds the resource names and the patients of msg to the record.
// top says whether msg is a request or a unary response, whose own name and
// parent name resources; a stream's messages add the names of the resources
// they carry.
func (c *call) collect(msg any, top bool) {
	m, ok := msg.(proto.Message)
	if !ok || m == nil {
		return
	}
	pm := m.ProtoReflect()
	if !pm.IsValid() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if top {
		for _, f := range []protoreflect.Name{"name", "parent"} {
			c.addResource(stringField(pm, f))
		}
	}
	pm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				c.addResource(stringField(l.Get(i).Message(), "name"))
			}
		} else {
			c.addResource(stringField(v.Message(), "name"))
		}
		return true
	})
	c.walk(pm, 0)
}

func stringField(m protoreflect.Message, name protoreflect.Name) string {
	fd := m.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() {
		return ""
	}
	return m.Get(fd).String()
}

// addResource adds a resource name; a patient named as a resource (GetPatient)
// is one of the call's patients too.
func (c *call) addResource(name string) {
	c.addPatient(name)
	if name == "" || len(c.rec.Resources) >= maxNames || slices.Contains(c.rec.Resources, name) {
		return
	}
	c.rec.Resources = append(c.rec.Resources, name)
}

func (c *call) addPatient(name string) {
	if !strings.HasPrefix(name, "patients/") || len(name) > 80 || len(c.rec.Patients) >= maxNames || slices.Contains(c.rec.Patients, name) {
		return
	}
	c.rec.Patients = append(c.rec.Patients, name)
}

// maxDepth bounds the walk through nested messages.
const maxDepth = 12

// walk adds every patient m holds: the values of `patient` and `patients`
// string fields, and the names of Patient messages. Only values of the form
// `patients/{id}` are kept, so no identifier or name can slip in.
func (c *call) walk(m protoreflect.Message, depth int) {
	if depth > maxDepth {
		return
	}
	if m.Descriptor().FullName() == "google.protobuf.Any" {
		if a, ok := m.Interface().(*anypb.Any); ok {
			if inner, err := a.UnmarshalNew(); err == nil {
				c.walk(inner.ProtoReflect(), depth+1)
			}
		}
		return
	}
	if m.Descriptor().Name() == "Patient" {
		c.addPatient(stringField(m, "name"))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
		case fd.Kind() == protoreflect.StringKind && (fd.Name() == "patient" || fd.Name() == "patients"):
			if fd.IsList() {
				for i := 0; i < v.List().Len(); i++ {
					c.addPatient(v.List().Get(i).String())
				}
			} else {
				c.addPatient(v.String())
			}
		case fd.Message() != nil && fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				c.walk(v.List().Get(i).Message(), depth+1)
			}
		case fd.Message() != nil:
			c.walk(v.Message(), depth+1)
		}
		return true
	})
}
