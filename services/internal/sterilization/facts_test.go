package sterilization

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/store"
)

// TestFactFields keeps readFacts's field numbers in step with the Package
// message.
func TestFactFields(t *testing.T) {
	fields := (&sterilizationv1.Package{}).ProtoReflect().Descriptor().Fields()
	for name, num := range map[protoreflect.Name]protoreflect.FieldNumber{
		"state": fieldState, "cycle": fieldCycle, "holder": fieldHolder, "use": fieldUse, "early_release": fieldEarlyRelease,
	} {
		if fd := fields.ByName(name); fd == nil || fd.Number() != num {
			t.Errorf("Package.%s is not field %d", name, num)
		}
	}
}

// TestReadFacts reads the facts of a stored package as a full decode would.
func TestReadFacts(t *testing.T) {
	use := &sterilizationv1.Use{Patient: "patients/p1", Clinician: "practitioners/d1", Facility: "facilities/dls", Time: timestamppb.Now(), Procedure: &typev1.Code{Code: "86.59"}}
	p := &sterilizationv1.Package{
		Name: "packages/B-0001", Barcode: "B-0001", State: used, Cycle: 7, Holder: "facilities/dls", Use: use,
		EarlyRelease: &sterilizationv1.EarlyRelease{Reason: "急诊"},
		Timeline:     []*typev1.StateChange{{From: "STATE_RECEIVED", To: "STATE_USED", Actor: &typev1.Actor{Subject: "x"}}},
		Handover:     &sterilizationv1.Handover{Destination: "facilities/dls"},
	}
	data, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readFacts(store.Record{Key: "pkg/B-0001", Value: data})
	if err != nil {
		t.Fatal(err)
	}
	if got.cycle != 7 || got.state != used || got.holder != "facilities/dls" || !got.early {
		t.Errorf("facts %+v", got)
	}
	if diff := cmp.Diff(use, got.use, protocmp.Transform()); diff != "" {
		t.Errorf("use (-want +got):\n%s", diff)
	}
	if _, err := readFacts(store.Record{Key: "pkg/bad", Value: []byte{0xff, 0xff}}); err == nil {
		t.Error("a corrupt record was read")
	}
}
