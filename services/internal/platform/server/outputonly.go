package server

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

// refuseOutputOnly refuses a request that sets a field marked
// (mcc.type.v1.output_only): what the server assigns, a client may not
// (mass assignment, OWASP API3). Update methods are exempt: they ignore
// those fields, since a client may send back a resource as it read it.
func refuseOutputOnly() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if msg, ok := req.(proto.Message); ok && !isUpdate(info.FullMethod) {
			if err := checkOutputOnly(msg.ProtoReflect(), ""); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

func isUpdate(method string) bool {
	return strings.HasPrefix(method[strings.LastIndex(method, "/")+1:], "Update")
}

// checkOutputOnly walks the set fields of m, returning an InvalidError for
// every output-only one, by its path in the request.
func checkOutputOnly(m protoreflect.Message, prefix string) error {
	var bad []apierr.Violation
	walkOutputOnly(m, prefix, &bad)
	if len(bad) == 0 {
		return nil
	}
	return &apierr.InvalidError{Violations: bad}
}

func walkOutputOnly(m protoreflect.Message, prefix string, bad *[]apierr.Violation) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		path := prefix + string(fd.Name())
		if proto.GetExtension(fd.Options(), typev1.E_OutputOnly).(bool) {
			*bad = append(*bad, apierr.Violation{Field: path, Description: "is set by the server; leave it out"})
			return true
		}
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				walkOutputOnly(v.List().Get(i).Message(), fmt.Sprintf("%s[%d].", path, i), bad)
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkOutputOnly(mv.Message(), fmt.Sprintf("%s[%v].", path, k.Interface()), bad)
					return true
				})
			}
		default:
			walkOutputOnly(v.Message(), path+".", bad)
		}
		return true
	})
}
