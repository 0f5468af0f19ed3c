package fsm_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

// The tests use mcc.type.v1.Center as a stand-in state enum: LAB -> IMAGING
// -> ECG -> PATHOLOGY, with PATHOLOGY final, and IMAGING -> STERILIZATION.
var machine = fsm.Machine[typev1.Center]{
	Kind: "thing",
	Moves: map[typev1.Center][]typev1.Center{
		typev1.Center_CENTER_LAB:     {typev1.Center_CENTER_IMAGING},
		typev1.Center_CENTER_IMAGING: {typev1.Center_CENTER_ECG, typev1.Center_CENTER_STERILIZATION},
		typev1.Center_CENTER_ECG:     {typev1.Center_CENTER_PATHOLOGY},
	},
}

func TestIllegalListsEveryForbiddenMove(t *testing.T) {
	illegal := machine.Illegal()
	// 5 defined states give 25 moves, of which 4 are allowed.
	if len(illegal) != 21 {
		t.Fatalf("%d illegal moves, want 21: %v", len(illegal), illegal)
	}
	for _, mv := range illegal {
		err := machine.Check(mv.From, mv.To)
		var cond *apierr.ConditionError
		if !errors.As(err, &cond) || cond.Reason != apierr.ReasonInvalidTransition || cond.Metadata["from"] != mv.From.String() {
			t.Errorf("%v: %v", mv, err)
		}
	}
	if err := machine.Check(typev1.Center_CENTER_LAB, typev1.Center_CENTER_IMAGING); err != nil {
		t.Errorf("allowed move refused: %v", err)
	}
}

func TestEventName(t *testing.T) {
	if got := fsm.EventName(typev1.Center_CENTER_STERILIZATION); got != "sterilization" {
		t.Errorf("EventName = %q", got)
	}
	if got := fsm.EventName(typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC); got != "village_clinic" {
		t.Errorf("EventName = %q", got)
	}
}

// thingType builds a resource message type with name, state, timeline,
// update_time and etag fields.
func thingType(t *testing.T) protoreflect.MessageDescriptor {
	t.Helper()
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, repeated bool) *descriptorpb.FieldDescriptorProto {
		label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		if repeated {
			label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		}
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum(), JsonName: proto.String(name)}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:       proto.String("fsmtest/thing.proto"),
		Package:    proto.String("fsmtest"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"mcc/type/v1/identity.proto", "mcc/type/v1/workflow.proto", "google/protobuf/timestamp.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Thing"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("name", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, "", false),
				field("state", 2, descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".mcc.type.v1.Center", false),
				field("timeline", 3, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".mcc.type.v1.StateChange", true),
				field("update_time", 4, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".google.protobuf.Timestamp", false),
				field("etag", 5, descriptorpb.FieldDescriptorProto_TYPE_STRING, "", false),
			},
		}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().Get(0)
}

func TestTransition(t *testing.T) {
	ctx := context.Background()
	desc := thingType(t)
	things := resource.Table[*dynamicpb.Message]{
		Collection: "things", Prefix: "thing/", Event: "thing",
		New:        func() *dynamicpb.Message { return dynamicpb.NewMessage(desc) },
		Facilities: func(*dynamicpb.Message) []string { return []string{"facilities/dls"} },
	}
	s, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := auth.Caller{Subject: "tech", Community: "urad", Facility: "facilities/qrmyy", Roles: []typev1.Role{typev1.Role_ROLE_LAB_TECHNOLOGIST}}
	msg := things.New()
	msg.Set(desc.Fields().ByName("name"), protoreflect.ValueOfString("things/1"))
	msg.Set(desc.Fields().ByName("state"), protoreflect.ValueOfEnum(protoreflect.EnumNumber(typev1.Center_CENTER_LAB)))
	if err := s.Txn(ctx, "urad", func(tx store.Tx) error { return things.Create(tx, msg) }); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	step := func(to typev1.Center, etag string) (*dynamicpb.Message, error) {
		return fsm.Transition(ctx, s, things, machine, c, at, fsm.Step[*dynamicpb.Message, typev1.Center]{Name: "things/1", Etag: etag, To: to, Reason: "because"})
	}

	got, err := step(typev1.Center_CENTER_IMAGING, "1")
	if err != nil {
		t.Fatal(err)
	}
	if st := got.Get(desc.Fields().ByName("state")).Enum(); st != protoreflect.EnumNumber(typev1.Center_CENTER_IMAGING) {
		t.Errorf("state %v", st)
	}
	tl := got.Get(desc.Fields().ByName("timeline")).List()
	if tl.Len() != 1 {
		t.Fatalf("timeline has %d entries", tl.Len())
	}
	var change typev1.StateChange
	b, _ := proto.Marshal(tl.Get(0).Message().Interface())
	proto.Unmarshal(b, &change)
	if change.GetFrom() != "CENTER_LAB" || change.GetTo() != "CENTER_IMAGING" || change.GetActor().GetSubject() != "tech" || !change.GetTime().AsTime().Equal(at) || change.GetReason() != "because" {
		t.Errorf("timeline entry %v", &change)
	}
	ut, _ := proto.Marshal(got.Get(desc.Fields().ByName("update_time")).Message().Interface())
	var ts timestamppb.Timestamp
	proto.Unmarshal(ut, &ts)
	if !ts.AsTime().Equal(at) {
		t.Errorf("update_time %v", ts.AsTime())
	}

	// A stale etag, then an illegal move, change nothing.
	if _, err := step(typev1.Center_CENTER_ECG, "1"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("stale etag: %v", err)
	}
	if _, err := step(typev1.Center_CENTER_LAB, ""); !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Errorf("illegal move: %v", err)
	}
	evs, err := s.Events(ctx, "urad", 0, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%d events, %v; want the one of the legal move", len(evs), err)
	}
	var ev typev1.Event
	proto.Unmarshal(evs[0].Data, &ev)
	if ev.GetType() != "thing.imaging" || ev.GetResourceEtag() != "2" || ev.GetFacilities()[0] != "facilities/dls" {
		t.Errorf("event %v", &ev)
	}
}
