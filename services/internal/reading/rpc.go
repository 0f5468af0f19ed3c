package reading

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// The shared methods. Every center's proto declares them with the same
// names, and with request and response wrappers of the same field names
// around the shared messages of mcc.type.v1 (STANDARD lint wants a wrapper
// per method and package). One handler therefore serves each method for
// all three services: it reads its request's fields by name and sets its
// response's. New checks, when a service is built, that the service's
// proto declares every method with the fields its handler uses, so a
// proto that drifts fails at start-up and in every test, not in a call.

// method is one shared method.
type method struct {
	// roles are who may call it, given the center's reader role.
	roles func(reader typev1.Role) []typev1.Role
	// in and out are the request and response fields it uses.
	in, out []string
	// optional methods are declared only by the centers that need them.
	optional bool
	// call serves it for the authenticated caller c.
	call func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error
}

// watchMethod is the one shared streaming method.
const watchMethod = "WatchEvents"

// Role sets of the shared methods.
func anyone(typev1.Role) []typev1.Role { return auth.AnyRole() }

func admins(typev1.Role) []typev1.Role { return []typev1.Role{typev1.Role_ROLE_ADMIN} }

func clinicians(typev1.Role) []typev1.Role { return []typev1.Role{typev1.Role_ROLE_CLINICIAN} }

func readers(r typev1.Role) []typev1.Role { return []typev1.Role{r} }

func staff(r typev1.Role) []typev1.Role { return []typev1.Role{r, typev1.Role_ROLE_ADMIN} }

func viewers(r typev1.Role) []typev1.Role {
	return []typev1.Role{typev1.Role_ROLE_CLINICIAN, r, typev1.Role_ROLE_ADMIN, typev1.Role_ROLE_AUDITOR, typev1.Role_ROLE_SERVICE}
}

// The usual request and response fields.
func named(extra ...string) []string { return append([]string{"name", "etag"}, extra...) }

func paged(extra ...string) []string { return append([]string{"page_size", "page_token"}, extra...) }

func page(list string) []string { return []string{list, "next_page_token"} }

func exam() []string { return []string{"exam"} }

// methods is the table of shared methods by name.
func methods() map[string]method {
	return map[string]method{
		"ListExamTypes": {roles: anyone, in: paged(), out: page("exam_types"), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return setPage[*typev1.ExamType](out, "exam_types")(f.listTypes(ctx, c, in.str("page_token"), in.int32("page_size")))
		}},
		"GetExamType": {roles: anyone, in: []string{"name"}, out: []string{"exam_type"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam_type")(f.getType(ctx, c, in.str("name")))
		}},
		"CreateExamType": {roles: admins, in: []string{"exam_type", "request_id"}, out: []string{"exam_type"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam_type")(f.createType(ctx, c, get[*typev1.ExamType](in, "exam_type"), in.str("request_id")))
		}},
		"UpdateExamType": {roles: admins, in: []string{"exam_type", "update_mask"}, out: []string{"exam_type"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam_type")(f.updateType(ctx, c, get[*typev1.ExamType](in, "exam_type"), get[*fieldmaskpb.FieldMask](in, "update_mask")))
		}},
		"CreateShift": {roles: staff, in: []string{"shift", "request_id"}, out: []string{"shift"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("shift")(f.createShift(ctx, c, get[*typev1.RotaShift](in, "shift"), in.str("request_id")))
		}},
		"ListShifts": {roles: staff, in: paged(), out: page("shifts"), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return setPage[*typev1.RotaShift](out, "shifts")(f.listShifts(ctx, c, in.str("page_token"), in.int32("page_size")))
		}},
		"DeleteShift": {roles: staff, in: named(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, _ fields) error {
			return f.deleteShift(ctx, c, in.str("name"), in.str("etag"))
		}},
		"CreateExam": {roles: clinicians, in: []string{"exam", "request_id"}, out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.createExam(ctx, c, get[*typev1.Exam](in, "exam"), in.str("request_id")))
		}},
		"GetExam": {roles: viewers, in: []string{"name"}, out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.get(ctx, c, in.str("name")))
		}},
		"ListExams": {roles: viewers, in: paged("state"), out: page("exams"), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return setPage[*typev1.Exam](out, "exams")(f.listExams(ctx, c, in.str("page_token"), in.int32("page_size"), State(in.int32("state"))))
		}},
		"ListWorklist": {roles: staff, in: paged("state", "mine", "exam_type"), out: page("exams"), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return setPage[*typev1.Exam](out, "exams")(f.worklist(ctx, c, in.str("page_token"), in.int32("page_size"), State(in.int32("state")), in.bool("mine"), in.str("exam_type")))
		}},
		"CancelExam": {roles: clinicians, in: named("reason"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.cancel(ctx, c, in.str("name"), in.str("etag"), in.str("reason")))
		}},
		"RejectExam": {roles: readers, in: named("reason", "note"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.reject(ctx, c, in.str("name"), in.str("etag"), in.str("reason"), in.str("note")))
		}},
		"AssignExam": {roles: staff, in: named("reader", "reason"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.assign(ctx, c, in.str("name"), in.str("etag"), in.str("reader"), in.str("reason")))
		}},
		"WriteReport": {roles: readers, in: named("content"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.writeReport(ctx, c, in.str("name"), in.str("etag"), get[*typev1.ReportContent](in, "content")))
		}},
		"ReviewReport": {roles: readers, in: named("content"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.reviewReport(ctx, c, in.str("name"), in.str("etag"), get[*typev1.ReportContent](in, "content")))
		}},
		"ReturnReport": {roles: readers, in: named("reason"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.returnReport(ctx, c, in.str("name"), in.str("etag"), in.str("reason")))
		}},
		"FinalizeReport": {roles: readers, in: named(), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.finalizeReport(ctx, c, in.str("name"), in.str("etag")))
		}},
		"AmendReport": {roles: readers, in: named("content", "reason"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.amendReport(ctx, c, in.str("name"), in.str("etag"), get[*typev1.ReportContent](in, "content"), in.str("reason")))
		}},
		"AddAddendum": {roles: readers, in: named("text"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.addAddendum(ctx, c, in.str("name"), in.str("etag"), in.str("text")))
		}},
		"GetReport": {roles: viewers, in: []string{"name"}, out: []string{"report"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("report")(f.getReport(ctx, c, in.str("name")))
		}},
		"RecordDelay": {roles: readers, optional: true, in: named("reason", "note"), out: exam(), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("exam")(f.recordDelay(ctx, c, in.str("name"), in.str("etag"), in.str("reason"), in.str("note")))
		}},
		"GetCriticalNotification": {roles: viewers, in: []string{"name"}, out: []string{"notification"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("notification")(f.critical.Get(ctx, f.store, c, in.str("name")))
		}},
		"ListCriticalNotifications": {roles: viewers, in: paged("state"), out: page("notifications"), call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			state := typev1.CriticalNotification_State(in.int32("state"))
			return setPage[*typev1.CriticalNotification](out, "notifications")(f.critical.List(ctx, f.store, c, in.str("page_token"), in.int32("page_size"), state))
		}},
		"AcknowledgeCriticalNotification": {roles: clinicians, in: []string{"name", "read_back"}, out: []string{"notification"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			return out.set("notification")(f.critical.Acknowledge(ctx, f.store, c, f.clock.Now(), in.str("name"), in.str("read_back")))
		}},
		"GetStatistics": {roles: viewers, in: []string{"start_day", "end_day", "facility", "exam_type"}, out: []string{"rows"}, call: func(f *Flow, ctx context.Context, c auth.Caller, in, out fields) error {
			rows, err := f.statistics(ctx, c, in.str("start_day"), in.str("end_day"), in.str("facility"), in.str("exam_type"))
			setList(out, "rows", rows)
			return err
		}},
		"ListEvents": {roles: anyone, in: []string{"after", "page_size"}, out: []string{"events", "next_cursor"}, call: func(f *Flow, ctx context.Context, _ auth.Caller, in, out fields) error {
			evs, next, err := f.feed.ListEvents(ctx, in.str("after"), in.int32("page_size"))
			setList(out, "events", evs)
			out.setString("next_cursor", next)
			return err
		}},
	}
}

// Policy returns the roles of the shared methods the service declares,
// given its reader role, with own, the roles of its own methods.
func Policy(desc *grpc.ServiceDesc, reader typev1.Role, own map[string][]typev1.Role) auth.Policy {
	prefix := "/" + desc.ServiceName + "/"
	p := auth.Policy{prefix + watchMethod: auth.AnyRole()}
	sd, _ := serviceDescriptor(desc.ServiceName)
	for name, m := range methods() {
		if sd != nil && sd.Methods().ByName(protoreflect.Name(name)) != nil {
			p[prefix+name] = m.roles(reader)
		}
	}
	for name, roles := range own {
		p[prefix+name] = roles
	}
	return p
}

func serviceDescriptor(name string) (protoreflect.ServiceDescriptor, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("reading: service %s: %w", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("reading: %s is not a service", name)
	}
	return sd, nil
}

// bind returns a copy of the generated service description desc whose
// shared methods the flow serves; the service's own methods stay with the
// implementation registered with it. It fails if the service's proto lacks
// a shared method or a field one uses.
func (f *Flow) bind(desc *grpc.ServiceDesc) (*grpc.ServiceDesc, error) {
	sd, err := serviceDescriptor(desc.ServiceName)
	if err != nil {
		return nil, err
	}
	table := methods()
	for name, m := range table {
		md := sd.Methods().ByName(protoreflect.Name(name))
		if md == nil {
			if m.optional {
				continue
			}
			return nil, fmt.Errorf("reading: %s does not declare %s", sd.FullName(), name)
		}
		if err := declares(md, m.in, m.out); err != nil {
			return nil, err
		}
	}
	out := *desc
	out.Methods = slices.Clone(desc.Methods)
	out.Streams = slices.Clone(desc.Streams)
	for i, md := range out.Methods {
		if m, ok := table[md.MethodName]; ok {
			h, err := f.unary(sd.Methods().ByName(protoreflect.Name(md.MethodName)), m)
			if err != nil {
				return nil, err
			}
			out.Methods[i].Handler = h
		}
	}
	bound := false
	for i, sd2 := range out.Streams {
		if sd2.StreamName != watchMethod {
			continue
		}
		md := sd.Methods().ByName(watchMethod)
		if err := declares(md, []string{"after"}, []string{"event"}); err != nil {
			return nil, err
		}
		h, err := f.watch(md)
		if err != nil {
			return nil, err
		}
		out.Streams[i].Handler, bound = h, true
	}
	if !bound {
		return nil, fmt.Errorf("reading: %s does not declare %s", sd.FullName(), watchMethod)
	}
	return &out, nil
}

// declares checks that a method's request and response have the fields.
func declares(md protoreflect.MethodDescriptor, in, out []string) error {
	for _, side := range []struct {
		msg   protoreflect.MessageDescriptor
		names []string
	}{{md.Input(), in}, {md.Output(), out}} {
		for _, name := range side.names {
			if side.msg.Fields().ByName(protoreflect.Name(name)) == nil {
				return fmt.Errorf("reading: %s has no field %s", side.msg.FullName(), name)
			}
		}
	}
	return nil
}

// types returns the Go message types of a method's request and response.
func types(md protoreflect.MethodDescriptor) (in, out protoreflect.MessageType, err error) {
	if in, err = protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName()); err != nil {
		return nil, nil, err
	}
	out, err = protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	return in, out, err
}

// unary is the gRPC handler of a shared unary method: it decodes the
// request into the service's own request type, runs the server's
// interceptors (authentication, validation, error mapping) around the
// method, and answers with the service's own response type.
func (f *Flow) unary(md protoreflect.MethodDescriptor, m method) (grpc.MethodHandler, error) {
	inType, outType, err := types(md)
	if err != nil {
		return nil, err
	}
	full := fmt.Sprintf("/%s/%s", md.Parent().FullName(), md.Name())
	serve := func(ctx context.Context, req any) (any, error) {
		c, err := auth.Require(ctx)
		if err != nil {
			return nil, err
		}
		out := outType.New()
		if err := m.call(f, ctx, c, fields{req.(proto.Message).ProtoReflect()}, fields{out}); err != nil {
			return nil, err
		}
		return out.Interface(), nil
	}
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		req := inType.New().Interface()
		if err := dec(req); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return serve(ctx, req)
		}
		return interceptor(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, serve)
	}, nil
}

// watch is the handler of WatchEvents: the server's stream interceptors
// wrap it, as they wrap every stream.
func (f *Flow) watch(md protoreflect.MethodDescriptor) (grpc.StreamHandler, error) {
	inType, outType, err := types(md)
	if err != nil {
		return nil, err
	}
	return func(_ any, stream grpc.ServerStream) error {
		req := inType.New()
		if err := stream.RecvMsg(req.Interface()); err != nil {
			return err
		}
		return f.feed.WatchEvents(stream.Context(), fields{req}.str("after"), func(ev *typev1.Event) error {
			out := outType.New()
			fields{out}.put("event", ev)
			return stream.SendMsg(out.Interface())
		})
	}, nil
}

// fields reads and writes a request's or response's fields by name. Bind
// has checked that the fields exist.
type fields struct{ m protoreflect.Message }

func (x fields) fd(name string) protoreflect.FieldDescriptor {
	return x.m.Descriptor().Fields().ByName(protoreflect.Name(name))
}

func (x fields) str(name string) string { return x.m.Get(x.fd(name)).String() }

func (x fields) bool(name string) bool { return x.m.Get(x.fd(name)).Bool() }

// int32 reads an int32 or enum field.
func (x fields) int32(name string) int32 {
	fd := x.fd(name)
	if fd.Kind() == protoreflect.EnumKind {
		return int32(x.m.Get(fd).Enum())
	}
	return int32(x.m.Get(fd).Int())
}

func (x fields) put(name string, v proto.Message) {
	x.m.Set(x.fd(name), protoreflect.ValueOfMessage(v.ProtoReflect()))
}

func (x fields) setString(name, v string) { x.m.Set(x.fd(name), protoreflect.ValueOfString(v)) }

// set returns a function that sets the message field name from a call's
// result, for `return out.set("exam")(f.get(...))`.
func (x fields) set(name string) func(proto.Message, error) error {
	return func(v proto.Message, err error) error {
		if err != nil {
			return err
		}
		x.put(name, v)
		return nil
	}
}

// setPage is set for a page of a list and its next page token.
func setPage[T proto.Message](x fields, name string) func([]T, string, error) error {
	return func(list []T, next string, err error) error {
		if err != nil {
			return err
		}
		setList(x, name, list)
		x.setString("next_page_token", next)
		return nil
	}
}

// setList sets a repeated message field.
func setList[T proto.Message](x fields, name string, list []T) {
	l := x.m.Mutable(x.fd(name)).List()
	for _, v := range list {
		l.Append(protoreflect.ValueOfMessage(v.ProtoReflect()))
	}
}

// get reads a message field as its Go type; an unset field is nil.
func get[T proto.Message](x fields, name string) T {
	var zero T
	fd := x.fd(name)
	if !x.m.Has(fd) {
		return zero
	}
	v, _ := x.m.Get(fd).Message().Interface().(T)
	return v
}
