package directory

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

var practitioners = resource.Table[*directoryv1.Practitioner]{
	Collection: "practitioners",
	Prefix:     "prac/",
	New:        func() *directoryv1.Practitioner { return &directoryv1.Practitioner{} },
	Event:      "practitioner",
	Mutable:    []string{"display_name", "facility", "roles", "active"},
	Facilities: func(p *directoryv1.Practitioner) []string { return []string{p.GetFacility()} },
}

// CreatePractitioner adds a practitioner to a facility of the community.
func (s *Service) CreatePractitioner(ctx context.Context, req *directoryv1.CreatePractitionerRequest) (*directoryv1.CreatePractitionerResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id := req.GetPractitionerId()
	if id == "" {
		id = uuid.NewString()
	}
	pr := proto.CloneOf(req.GetPractitioner())
	pr.Name = practitioners.Name(id)
	pr.Active = true
	out, err := practitioners.StandardCreate(ctx, s.store, c, req.GetRequestId(), pr, s.clock.Now(), checkPractitioner)
	if err != nil {
		return nil, err
	}
	return &directoryv1.CreatePractitionerResponse{Practitioner: out}, nil
}

// GetPractitioner returns one practitioner of the community.
func (s *Service) GetPractitioner(ctx context.Context, req *directoryv1.GetPractitionerRequest) (*directoryv1.GetPractitionerResponse, error) {
	_, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	pr, err := practitioners.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	return &directoryv1.GetPractitionerResponse{Practitioner: pr}, nil
}

// ListPractitioners lists practitioners in ID order, filtered by facility
// and role.
func (s *Service) ListPractitioners(ctx context.Context, req *directoryv1.ListPractitionersRequest) (*directoryv1.ListPractitionersResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	filter := fmt.Sprintf("%s|%d", req.GetFacility(), req.GetRole())
	list, next, err := practitioners.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), filter, func(p *directoryv1.Practitioner) bool {
		return (req.GetFacility() == "" || p.GetFacility() == req.GetFacility()) && (req.GetRole() == 0 || slices.Contains(p.GetRoles(), req.GetRole()))
	})
	if err != nil {
		return nil, err
	}
	return &directoryv1.ListPractitionersResponse{Practitioners: list, NextPageToken: next}, nil
}

// UpdatePractitioner changes the fields named in the update mask.
func (s *Service) UpdatePractitioner(ctx context.Context, req *directoryv1.UpdatePractitionerRequest) (*directoryv1.UpdatePractitionerResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := practitioners.StandardUpdate(ctx, s.store, c, req.GetPractitioner(), req.GetUpdateMask(), s.clock.Now(), func(tx store.Tx, p *directoryv1.Practitioner) error {
		if p.GetDisplayName() == "" || p.GetFacility() == "" || len(p.GetRoles()) == 0 {
			return apierr.Invalid("practitioner", "display_name, facility and roles cannot be cleared")
		}
		return checkPractitioner(tx, p)
	})
	if err != nil {
		return nil, err
	}
	return &directoryv1.UpdatePractitionerResponse{Practitioner: out}, nil
}

func checkPractitioner(tx store.Tx, p *directoryv1.Practitioner) error {
	_, err := existing(tx, "practitioner.facility", p.GetFacility())
	return err
}
