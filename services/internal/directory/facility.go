package directory

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

var facilities = resource.Table[*directoryv1.Facility]{
	Collection: "facilities",
	Prefix:     "fac/",
	New:        func() *directoryv1.Facility { return &directoryv1.Facility{} },
	Event:      "facility",
	Mutable:    []string{"display_name", "level", "parent", "centers", "active"},
	// A facility's events concern the facility and its parent.
	Facilities: func(f *directoryv1.Facility) []string { return []string{f.GetName(), f.GetParent()} },
}

// CreateFacility adds a member facility to the caller's community.
func (s *Service) CreateFacility(ctx context.Context, req *directoryv1.CreateFacilityRequest) (*directoryv1.CreateFacilityResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	f := proto.CloneOf(req.GetFacility())
	f.Name = facilities.Name(req.GetFacilityId())
	f.Community = c.Community
	f.Active = true
	out, err := facilities.StandardCreate(ctx, s.store, c, req.GetRequestId(), f, s.clock.Now(), checkFacility)
	if err != nil {
		return nil, err
	}
	return &directoryv1.CreateFacilityResponse{Facility: out}, nil
}

// GetFacility returns one facility of the caller's community.
func (s *Service) GetFacility(ctx context.Context, req *directoryv1.GetFacilityRequest) (*directoryv1.GetFacilityResponse, error) {
	_, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	f, err := facilities.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	return &directoryv1.GetFacilityResponse{Facility: f}, nil
}

// ListFacilities lists facilities in ID order, filtered by level and parent.
func (s *Service) ListFacilities(ctx context.Context, req *directoryv1.ListFacilitiesRequest) (*directoryv1.ListFacilitiesResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	filter := fmt.Sprintf("%d|%s", req.GetLevel(), req.GetParent())
	list, next, err := facilities.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), filter, func(f *directoryv1.Facility) bool {
		return (req.GetLevel() == 0 || f.GetLevel() == req.GetLevel()) && (req.GetParent() == "" || f.GetParent() == req.GetParent())
	})
	if err != nil {
		return nil, err
	}
	return &directoryv1.ListFacilitiesResponse{Facilities: list, NextPageToken: next}, nil
}

// UpdateFacility changes the fields named in the update mask.
func (s *Service) UpdateFacility(ctx context.Context, req *directoryv1.UpdateFacilityRequest) (*directoryv1.UpdateFacilityResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := facilities.StandardUpdate(ctx, s.store, c, req.GetFacility(), req.GetUpdateMask(), s.clock.Now(), func(tx store.Tx, f *directoryv1.Facility) error {
		if f.GetDisplayName() == "" || f.GetLevel() == 0 {
			return apierr.Invalid("facility", "display_name and level cannot be cleared")
		}
		return checkFacility(tx, f)
	})
	if err != nil {
		return nil, err
	}
	return &directoryv1.UpdateFacilityResponse{Facility: out}, nil
}

// maxDepth bounds the parent chain of a facility. A county has three tiers;
// the bound only stops a cycle from looping forever.
const maxDepth = 8

// checkFacility checks that f's parent and center hosts exist in the
// community, that each center is named once, and that the parent chain has
// no cycle.
func checkFacility(tx store.Tx, f *directoryv1.Facility) error {
	for parent, depth := f.GetParent(), 0; parent != ""; depth++ {
		if parent == f.GetName() || depth == maxDepth {
			return apierr.Invalid("facility.parent", "the parent chain would form a cycle")
		}
		p, err := existing(tx, "facility.parent", parent)
		if err != nil {
			return err
		}
		parent = p.GetParent()
	}
	seen := map[int32]bool{}
	for i, a := range f.GetCenters() {
		if seen[int32(a.GetCenter())] {
			return apierr.Invalid(fmt.Sprintf("facility.centers[%d].center", i), "%s is assigned twice", a.GetCenter())
		}
		seen[int32(a.GetCenter())] = true
		if a.GetFacility() == f.GetName() {
			continue
		}
		if _, err := existing(tx, fmt.Sprintf("facility.centers[%d].facility", i), a.GetFacility()); err != nil {
			return err
		}
	}
	return nil
}

// existing reads a facility that the field refers to; a missing one is bad
// input on that field.
func existing(tx store.Tx, field, name string) (*directoryv1.Facility, error) {
	f, _, err := facilities.Get(tx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.Invalid(field, "%s does not exist in this community", name)
	}
	return f, err
}

// Tier is a facility level's place in the community's hierarchy, the one
// referrals move along and the recognition rules' minimum levels compare:
// county hospitals (3) above township and community health centers (2),
// above village clinics (1). An unknown level is 0, below them all.
func Tier(l typev1.FacilityLevel) int {
	switch l {
	case typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL:
		return 3
	case typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, typev1.FacilityLevel_FACILITY_LEVEL_COMMUNITY_HEALTH_CENTER:
		return 2
	case typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC:
		return 1
	}
	return 0
}
