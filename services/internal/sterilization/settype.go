package sterilization

import (
	"context"

	"google.golang.org/protobuf/proto"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// setTypes is the community's catalog of instrument sets. Its events
// concern no facility in particular, so only administrators and services
// follow them.
var setTypes = resource.Table[*sterilizationv1.SetType]{
	Collection: "setTypes",
	Prefix:     "st/",
	New:        func() *sterilizationv1.SetType { return &sterilizationv1.SetType{} },
	Event:      "set_type",
	Mutable:    []string{"display_name", "instruments", "implant", "price_fen"},
}

// CreateSetType adds a set type to the catalog.
func (s *Service) CreateSetType(ctx context.Context, req *sterilizationv1.CreateSetTypeRequest) (*sterilizationv1.CreateSetTypeResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	st := proto.CloneOf(req.GetSetType())
	st.Name = setTypes.Name(req.GetSetTypeId())
	out, err := setTypes.StandardCreate(ctx, s.store, c, req.GetRequestId(), st, s.clock.Now(), noCheck)
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.CreateSetTypeResponse{SetType: out}, nil
}

// GetSetType returns one set type.
func (s *Service) GetSetType(ctx context.Context, req *sterilizationv1.GetSetTypeRequest) (*sterilizationv1.GetSetTypeResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	st, err := setTypes.Load(ctx, s.store, c.Partition(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.GetSetTypeResponse{SetType: st}, nil
}

// ListSetTypes lists the catalog in ID order.
func (s *Service) ListSetTypes(ctx context.Context, req *sterilizationv1.ListSetTypesRequest) (*sterilizationv1.ListSetTypesResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := setTypes.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), "", func(*sterilizationv1.SetType) bool { return true })
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ListSetTypesResponse{SetTypes: list, NextPageToken: next}, nil
}

// UpdateSetType changes the fields named in the update mask.
func (s *Service) UpdateSetType(ctx context.Context, req *sterilizationv1.UpdateSetTypeRequest) (*sterilizationv1.UpdateSetTypeResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	out, err := setTypes.StandardUpdate(ctx, s.store, c, req.GetSetType(), req.GetUpdateMask(), s.clock.Now(), func(_ store.Tx, st *sterilizationv1.SetType) error {
		if st.GetDisplayName() == "" {
			return apierr.Invalid("set_type.display_name", "cannot be cleared")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.UpdateSetTypeResponse{SetType: out}, nil
}

// noCheck is the check of a create that needs none beyond validation.
func noCheck[T proto.Message](store.Tx, T) error { return nil }
