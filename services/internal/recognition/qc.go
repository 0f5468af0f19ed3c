package recognition

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// QC suspensions are stored at qc/{id}. Every change moves the rules
// version, so the next check sees it.
var qcSuspensions = resource.Table[*recognitionv1.QcSuspension]{
	Collection: "qcSuspensions",
	Prefix:     "qc/",
	New:        func() *recognitionv1.QcSuspension { return &recognitionv1.QcSuspension{} },
	Event:      "qcSuspension",
	Facilities: func(q *recognitionv1.QcSuspension) []string { return []string{q.GetFacility()} },
}

// QcMachine is a suspension's life: active, then lifted for good.
func QcMachine() fsm.Machine[recognitionv1.QcSuspension_State] {
	return fsm.Machine[recognitionv1.QcSuspension_State]{
		Kind: "QC suspension",
		Moves: map[recognitionv1.QcSuspension_State][]recognitionv1.QcSuspension_State{
			recognitionv1.QcSuspension_STATE_UNSPECIFIED: {recognitionv1.QcSuspension_STATE_ACTIVE},
			recognitionv1.QcSuspension_STATE_ACTIVE:      {recognitionv1.QcSuspension_STATE_LIFTED},
		},
	}
}

// CreateQcSuspension suspends the recognition of one item of one center.
// A center's staff suspend their own facility; administrators any.
func (s *Service) CreateQcSuspension(ctx context.Context, req *recognitionv1.CreateQcSuspensionRequest) (*recognitionv1.CreateQcSuspensionResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetQcSuspension()
	if !c.SeesCommunity() && in.GetFacility() != c.Facility {
		return nil, fmt.Errorf("qc_suspension.facility: only %s may be suspended by your facility: %w", c.Facility, apierr.ErrPermissionDenied)
	}
	if in.GetEndTime() != nil && !in.GetEndTime().AsTime().After(in.GetStartTime().AsTime()) {
		return nil, apierr.Invalid("qc_suspension.end_time", "must be after start_time")
	}
	r, err := s.rulesOf(ctx, p)
	if err != nil {
		return nil, err
	}
	if _, err := r.item("qc_suspension.item", in.GetItem()); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	q := proto.CloneOf(in)
	q.Name = qcSuspensions.Name(id.String())
	now := s.clock.Now()
	if err := s.qcM.Apply(q, recognitionv1.QcSuspension_STATE_ACTIVE, c, now, in.GetReason()); err != nil {
		return nil, err
	}
	out, err := qcSuspensions.StandardCreate(ctx, s.store, c, req.GetRequestId(), q, now, func(tx store.Tx, _ *recognitionv1.QcSuspension) error {
		return bumpRules(tx)
	})
	if err != nil {
		return nil, err
	}
	return &recognitionv1.CreateQcSuspensionResponse{QcSuspension: out}, nil
}

// ListQcSuspensions lists the community's suspensions.
func (s *Service) ListQcSuspensions(ctx context.Context, req *recognitionv1.ListQcSuspensionsRequest) (*recognitionv1.ListQcSuspensionsResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, next, err := qcSuspensions.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), "", func(*recognitionv1.QcSuspension) bool { return true })
	if err != nil {
		return nil, err
	}
	return &recognitionv1.ListQcSuspensionsResponse{QcSuspensions: out, NextPageToken: next}, nil
}

// LiftQcSuspension ends a suspension now.
func (s *Service) LiftQcSuspension(ctx context.Context, req *recognitionv1.LiftQcSuspensionRequest) (*recognitionv1.LiftQcSuspensionResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	out, err := fsm.Transition(ctx, s.store, qcSuspensions, s.qcM, c, now, fsm.Step[*recognitionv1.QcSuspension, recognitionv1.QcSuspension_State]{
		Name: req.GetName(), Etag: req.GetEtag(), To: recognitionv1.QcSuspension_STATE_LIFTED,
		Before: func(_ store.Tx, q *recognitionv1.QcSuspension) error {
			if !c.SeesCommunity() && q.GetFacility() != c.Facility {
				return fmt.Errorf("only %s may lift %s: %w", q.GetFacility(), q.GetName(), apierr.ErrPermissionDenied)
			}
			return nil
		},
		After: func(tx store.Tx, q *recognitionv1.QcSuspension) error {
			if q.GetEndTime() == nil || q.GetEndTime().AsTime().After(now) {
				q.EndTime = timestamppb.New(now)
			}
			return bumpRules(tx)
		},
	})
	if err != nil {
		return nil, err
	}
	return &recognitionv1.LiftQcSuspensionResponse{QcSuspension: out}, nil
}
