package sterilization

import (
	"context"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

var sterilizers = resource.Table[*sterilizationv1.Sterilizer]{
	Collection: "sterilizers",
	Prefix:     "ster/",
	New:        func() *sterilizationv1.Sterilizer { return &sterilizationv1.Sterilizer{} },
	Event:      "sterilizer",
	Facilities: func(st *sterilizationv1.Sterilizer) []string { return []string{st.GetFacility()} },
}

// bowieDickTests is the table of one sterilizer's B-D tests: nested
// resources live under their parent's key, so they list per sterilizer.
func bowieDickTests(sterilizer string) resource.Table[*sterilizationv1.BowieDickTest] {
	id := strings.TrimPrefix(sterilizer, "sterilizers/")
	return resource.Table[*sterilizationv1.BowieDickTest]{
		Collection: "sterilizers/" + id + "/bowieDickTests",
		Prefix:     "bd/" + id + "/",
		New:        func() *sterilizationv1.BowieDickTest { return &sterilizationv1.BowieDickTest{} },
		Event:      "bowie_dick_test",
	}
}

// ownSterilizer reads a sterilizer of the caller's CSSD inside a
// transaction; any other is not found.
func ownSterilizer(tx store.Tx, c auth.Caller, name string) (*sterilizationv1.Sterilizer, uint64, error) {
	st, version, err := sterilizers.Get(tx, name)
	if err != nil {
		return nil, 0, err
	}
	if st.GetFacility() != c.Facility && !c.SeesCommunity() {
		return nil, 0, notFound(name)
	}
	return st, version, nil
}

// CreateSterilizer registers a sterilizer of the caller's facility, which
// must host a sterilization center.
func (s *Service) CreateSterilizer(ctx context.Context, req *sterilizationv1.CreateSterilizerRequest) (*sterilizationv1.CreateSterilizerResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkCenter(ctx, c); err != nil {
		return nil, err
	}
	st := &sterilizationv1.Sterilizer{
		Name:        sterilizers.Name(req.GetSterilizerId()),
		DisplayName: req.GetSterilizer().GetDisplayName(),
		Type:        req.GetSterilizer().GetType(),
		Facility:    c.Facility,
	}
	out, err := sterilizers.StandardCreate(ctx, s.store, c, req.GetRequestId(), st, s.clock.Now(), noCheck)
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.CreateSterilizerResponse{Sterilizer: out}, nil
}

// GetSterilizer returns a sterilizer of the caller's CSSD.
func (s *Service) GetSterilizer(ctx context.Context, req *sterilizationv1.GetSterilizerRequest) (*sterilizationv1.GetSterilizerResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	st, err := sterilizers.Load(ctx, s.store, c.Partition(), req.GetName())
	if err != nil {
		return nil, err
	}
	if st.GetFacility() != c.Facility && !c.SeesCommunity() {
		return nil, notFound(req.GetName())
	}
	return &sterilizationv1.GetSterilizerResponse{Sterilizer: st}, nil
}

// ListSterilizers lists the caller's CSSD's sterilizers.
func (s *Service) ListSterilizers(ctx context.Context, req *sterilizationv1.ListSterilizersRequest) (*sterilizationv1.ListSterilizersResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := sterilizers.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), c.Facility, func(st *sterilizationv1.Sterilizer) bool {
		return st.GetFacility() == c.Facility || c.SeesCommunity()
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ListSterilizersResponse{Sterilizers: list, NextPageToken: next}, nil
}

// CreateBowieDickTest records a B-D test and makes it the sterilizer's
// latest, in one transaction.
func (s *Service) CreateBowieDickTest(ctx context.Context, req *sterilizationv1.CreateBowieDickTestRequest) (*sterilizationv1.CreateBowieDickTestResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	tests := bowieDickTests(req.GetParent())
	var out *sterilizationv1.BowieDickTest
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		if name, found, err := idem.Lookup(tx, c, req.GetRequestId()); err != nil || found {
			if err == nil {
				out, _, err = tests.Get(tx, name)
			}
			return err
		}
		st, version, err := ownSterilizer(tx, c, req.GetParent())
		if err != nil {
			return err
		}
		test := &sterilizationv1.BowieDickTest{
			Name:     tests.Name(id.String()),
			Result:   req.GetBowieDickTest().GetResult(),
			Day:      s.day(now),
			Operator: c.Subject,
			TestTime: timestamppb.New(now),
		}
		if err := tests.Create(tx, test); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, req.GetRequestId(), test.GetName()); err != nil {
			return err
		}
		st.LastBowieDickTest = proto.CloneOf(test)
		resource.Stamp(st, now, false)
		if err := sterilizers.Update(tx, st, version); err != nil {
			return err
		}
		out = test
		change := tests.Change("bowie_dick_test.created", test, 1)
		change.Facilities = []string{st.GetFacility()}
		if err := events.Append(tx, c, now, change); err != nil {
			return err
		}
		return events.Append(tx, c, now, sterilizers.Change("sterilizer.bowie_dick_tested", st, version+1))
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.CreateBowieDickTestResponse{BowieDickTest: out}, nil
}

// ListBowieDickTests lists a sterilizer's B-D tests, oldest first.
func (s *Service) ListBowieDickTests(ctx context.Context, req *sterilizationv1.ListBowieDickTestsRequest) (*sterilizationv1.ListBowieDickTestsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.GetSterilizer(ctx, &sterilizationv1.GetSterilizerRequest{Name: req.GetParent()}); err != nil {
		return nil, err
	}
	list, next, err := bowieDickTests(req.GetParent()).StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), "", func(*sterilizationv1.BowieDickTest) bool { return true })
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ListBowieDickTestsResponse{BowieDickTests: list, NextPageToken: next}, nil
}
