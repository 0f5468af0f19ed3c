package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// Specimens are stored at spec/{barcode}; the barcode is unique in the
// community because the key is.
var specimens = resource.Table[*labv1.Specimen]{
	Collection: "specimens",
	Prefix:     "spec/",
	New:        func() *labv1.Specimen { return &labv1.Specimen{} },
	Event:      "specimen",
	Facilities: func(sp *labv1.Specimen) []string { return []string{sp.GetRequestingFacility(), sp.GetLabFacility()} },
}

// SpecimenMachine is the specimen chain: collected -> in transit ->
// received -> in testing -> done, and rejected from any step before done.
func SpecimenMachine() fsm.Machine[labv1.Specimen_State] {
	const (
		collected = labv1.Specimen_STATE_COLLECTED
		transit   = labv1.Specimen_STATE_IN_TRANSIT
		received  = labv1.Specimen_STATE_RECEIVED
		testing   = labv1.Specimen_STATE_IN_TESTING
		done      = labv1.Specimen_STATE_DONE
		rejected  = labv1.Specimen_STATE_REJECTED
	)
	return fsm.Machine[labv1.Specimen_State]{
		Kind: "specimen",
		Moves: map[labv1.Specimen_State][]labv1.Specimen_State{
			labv1.Specimen_STATE_UNSPECIFIED: {collected},
			collected:                        {transit, rejected},
			transit:                          {received, rejected},
			received:                         {testing, rejected},
			testing:                          {done, rejected},
		},
	}
}

// Reasons of refused specimen operations.
const (
	ReasonOrderCancelled     = "ORDER_CANCELLED"
	ReasonOrderCompleted     = "ORDER_COMPLETED"
	ReasonTransportTime      = "TRANSPORT_TIME_EXCEEDED"
	ReasonTransportTemp      = "TRANSPORT_TEMPERATURE_EXCEEDED"
	ReasonSpecimenNotTesting = "SPECIMEN_NOT_IN_TESTING"
)

// CreateSpecimen records a collected specimen.
func (s *Service) CreateSpecimen(ctx context.Context, req *labv1.CreateSpecimenRequest) (*labv1.CreateSpecimenResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	in := req.GetSpecimen()
	sp := &labv1.Specimen{
		Name:        specimens.Name(req.GetBarcode()),
		Order:       in.GetOrder(),
		Tests:       in.GetTests(),
		VolumeMl:    in.GetVolumeMl(),
		Collector:   c.Subject,
		CollectTime: timestamppb.New(now),
	}
	if err := s.specimenM.Apply(sp, labv1.Specimen_STATE_COLLECTED, c, now, ""); err != nil {
		return nil, err
	}
	out, err := specimens.StandardCreate(ctx, s.store, c, req.GetRequestId(), sp, now, func(tx store.Tx, sp *labv1.Specimen) error {
		return s.checkSpecimen(tx, c, sp)
	})
	if err != nil {
		return nil, err
	}
	return &labv1.CreateSpecimenResponse{Specimen: out}, nil
}

// checkSpecimen checks a new specimen against its order and the catalog,
// fills in what follows from them, and indexes it.
func (s *Service) checkSpecimen(tx store.Tx, c auth.Caller, sp *labv1.Specimen) error {
	if _, err := tx.Get(specimens.Key(sp.GetName())); err == nil {
		return fmt.Errorf("barcode %s is already used in this community: %w", specimens.ID(sp.GetName()), store.ErrAlreadyExists)
	}
	o, _, err := orders.Get(tx, sp.GetOrder())
	if errors.Is(err, store.ErrNotFound) || err == nil && !sees(c, o.GetRequestingFacility(), o.GetLabFacility()) {
		return apierr.Invalid("specimen.order", "no such order")
	}
	if err != nil {
		return err
	}
	switch o.GetState() {
	case labv1.Order_STATE_CANCELLED:
		return apierr.Condition(ReasonOrderCancelled, "%s was cancelled", o.GetName())
	case labv1.Order_STATE_COMPLETED:
		return apierr.Condition(ReasonOrderCompleted, "%s is completed", o.GetName())
	}
	lookup := s.testsIn(tx)
	for i, code := range sp.GetTests() {
		field := fmt.Sprintf("specimen.tests[%d]", i)
		if !slices.Contains(o.GetTests(), code) {
			return apierr.Invalid(field, "%s was not ordered in %s", code, o.GetName())
		}
		if other, err := tx.Get(orderTestKey(o.GetName(), code)); err == nil {
			prev, _, err := specimens.Get(tx, specimens.Name(string(other.Value)))
			if err != nil {
				return err
			}
			if prev.GetState() != labv1.Specimen_STATE_REJECTED {
				return apierr.Invalid(field, "%s is already on specimen %s", code, specimens.ID(prev.GetName()))
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		t, ok, err := lookup(code)
		if err != nil {
			return err
		}
		if !ok {
			return apierr.Invalid(field, "unknown test code %q", code)
		}
		if i == 0 {
			sp.SpecimenType, sp.Container = t.GetSpecimenType(), t.GetContainer()
		} else if t.GetSpecimenType() != sp.GetSpecimenType() {
			return apierr.Invalid(field, "%s needs %s, not %s like %s", code, t.GetSpecimenType(), sp.GetSpecimenType(), sp.GetTests()[0])
		}
		if err := tx.Put(orderTestKey(o.GetName(), code), []byte(specimens.ID(sp.GetName()))); err != nil {
			return err
		}
	}
	sp.RequestingFacility, sp.LabFacility = o.GetRequestingFacility(), o.GetLabFacility()
	return tx.Put(orderSpecimensPrefix(o.GetName())+specimens.ID(sp.GetName()), nil)
}

// GetSpecimen returns a specimen the caller may see.
func (s *Service) GetSpecimen(ctx context.Context, req *labv1.GetSpecimenRequest) (*labv1.GetSpecimenResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	sp, err := specimens.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	if !sees(c, sp.GetRequestingFacility(), sp.GetLabFacility()) {
		return nil, notFound(req.GetName())
	}
	return &labv1.GetSpecimenResponse{Specimen: sp}, nil
}

// moveSpecimen runs one specimen transition for the party who may make it.
func (s *Service) moveSpecimen(ctx context.Context, c auth.Caller, name, etag, reason string, to labv1.Specimen_State, atLabOnly bool, after func(tx store.Tx, sp *labv1.Specimen, now time.Time) error) (*labv1.Specimen, error) {
	now := s.clock.Now()
	return fsm.Transition(ctx, s.store, specimens, s.specimenM, c, now, fsm.Step[*labv1.Specimen, labv1.Specimen_State]{
		Name: name, Etag: etag, To: to, Reason: reason,
		Before: func(_ store.Tx, sp *labv1.Specimen) error {
			if atLabOnly {
				return atLab(c, sp.GetName(), sp.GetRequestingFacility(), sp.GetLabFacility())
			}
			if !sees(c, sp.GetRequestingFacility(), sp.GetLabFacility()) {
				return notFound(sp.GetName())
			}
			return nil
		},
		After: func(tx store.Tx, sp *labv1.Specimen) error {
			if after == nil {
				return nil
			}
			return after(tx, sp, now)
		},
	})
}

// DispatchSpecimen records the courier's pick-up.
func (s *Service) DispatchSpecimen(ctx context.Context, req *labv1.DispatchSpecimenRequest) (*labv1.DispatchSpecimenResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.moveSpecimen(ctx, c, req.GetName(), req.GetEtag(), "", labv1.Specimen_STATE_IN_TRANSIT, false, func(_ store.Tx, sp *labv1.Specimen, now time.Time) error {
		sp.Courier = req.GetCourier()
		sp.PickupTime = timestamppb.New(now)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &labv1.DispatchSpecimenResponse{Specimen: out}, nil
}

// ReceiveSpecimen records the specimen's reception at the lab center,
// after checking its order and its transport limits.
func (s *Service) ReceiveSpecimen(ctx context.Context, req *labv1.ReceiveSpecimenRequest) (*labv1.ReceiveSpecimenResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.moveSpecimen(ctx, c, req.GetName(), req.GetEtag(), "", labv1.Specimen_STATE_RECEIVED, true, func(tx store.Tx, sp *labv1.Specimen, now time.Time) error {
		o, _, err := orders.Get(tx, sp.GetOrder())
		if err != nil {
			return err
		}
		if o.GetState() == labv1.Order_STATE_CANCELLED {
			return apierr.Condition(ReasonOrderCancelled, "%s was cancelled; reject the specimen instead", o.GetName())
		}
		if err := s.checkTransport(tx, sp, now, req.TemperatureCelsius); err != nil {
			return err
		}
		sp.ReceiveTime = timestamppb.New(now)
		sp.ReceiveTemperatureCelsius = req.TemperatureCelsius
		return s.advanceOrder(tx, c, now, o.GetName(), labv1.Order_STATE_PLACED, labv1.Order_STATE_IN_PROGRESS)
	})
	if err != nil {
		return nil, err
	}
	return &labv1.ReceiveSpecimenResponse{Specimen: out}, nil
}

// checkTransport applies the strictest transport limits of the specimen's
// tests: the shortest time and the narrowest temperature range.
func (s *Service) checkTransport(tx store.Tx, sp *labv1.Specimen, now time.Time, temperature *float64) error {
	lookup := s.testsIn(tx)
	maxHours, low, high := math.Inf(1), math.Inf(-1), math.Inf(1)
	for _, code := range sp.GetTests() {
		t, ok, err := lookup(code)
		if err != nil || !ok {
			return err
		}
		tr := t.GetTransport()
		if tr.GetMaxHours() > 0 {
			maxHours = min(maxHours, tr.GetMaxHours())
		}
		if tr.GetMinCelsius() != 0 || tr.GetMaxCelsius() != 0 {
			low, high = max(low, tr.GetMinCelsius()), min(high, tr.GetMaxCelsius())
		}
	}
	elapsed := now.Sub(sp.GetCollectTime().AsTime())
	if elapsed.Hours() > maxHours {
		return apierr.Condition(ReasonTransportTime, "%s travelled %s; its tests allow %g hours; reject it with REJECTION_REASON_TRANSPORT_TIME_EXCEEDED",
			sp.GetName(), elapsed.Round(time.Minute), maxHours)
	}
	if temperature != nil && (*temperature < low || *temperature > high) {
		return apierr.Condition(ReasonTransportTemp, "%s arrived at %g °C; its tests allow %g to %g °C; reject it with REJECTION_REASON_TRANSPORT_TEMPERATURE_EXCEEDED",
			sp.GetName(), *temperature, low, high)
	}
	return nil
}

// StartTesting moves a received specimen into testing.
func (s *Service) StartTesting(ctx context.Context, req *labv1.StartTestingRequest) (*labv1.StartTestingResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.moveSpecimen(ctx, c, req.GetName(), req.GetEtag(), "", labv1.Specimen_STATE_IN_TESTING, true, nil)
	if err != nil {
		return nil, err
	}
	return &labv1.StartTestingResponse{Specimen: out}, nil
}

// RejectSpecimen rejects a specimen. The event it appends concerns the
// requesting facility, which is how the requester is notified.
func (s *Service) RejectSpecimen(ctx context.Context, req *labv1.RejectSpecimenRequest) (*labv1.RejectSpecimenResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	reason := req.GetReason().String()
	out, err := s.moveSpecimen(ctx, c, req.GetName(), req.GetEtag(), reason, labv1.Specimen_STATE_REJECTED, true, func(tx store.Tx, sp *labv1.Specimen, now time.Time) error {
		sp.Rejection = &labv1.Rejection{Reason: req.GetReason(), Action: req.GetAction(), Note: req.GetNote()}
		o, _, err := orders.Get(tx, sp.GetOrder())
		if err != nil {
			return err
		}
		return putFact(tx, rejectedFact(o, proto.CloneOf(sp), now))
	})
	if err != nil {
		return nil, err
	}
	return &labv1.RejectSpecimenResponse{Specimen: out}, nil
}
