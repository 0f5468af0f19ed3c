package lab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// Orders are stored at ord/{id} (UUIDv7, so in time order), with indexes:
//
//	ordfac/{facility}/{id}            the orders a facility placed
//	wl/{lab}/{rank}/{id}              a lab center's worklist, STAT (rank 1) first
//	ordspec/{id}/{barcode}            an order's specimens
//	ordtest/{id}/{code}               the specimen carrying an ordered test
//	orddone/{id}/{code}               the ordered tests with a final report
var orders = resource.Table[*labv1.Order]{
	Collection: "orders",
	Prefix:     "ord/",
	New:        func() *labv1.Order { return &labv1.Order{} },
	Event:      "order",
	// An order's events concern the facility that placed it and the lab
	// center.
	Facilities: func(o *labv1.Order) []string { return []string{o.GetRequestingFacility(), o.GetLabFacility()} },
}

// OrderMachine is the order's state machine. An order can be cancelled only
// while no specimen has been received; the first reception starts it, and
// the last final report completes it.
func OrderMachine() fsm.Machine[labv1.Order_State] {
	return fsm.Machine[labv1.Order_State]{
		Kind: "order",
		Moves: map[labv1.Order_State][]labv1.Order_State{
			labv1.Order_STATE_UNSPECIFIED: {labv1.Order_STATE_PLACED},
			labv1.Order_STATE_PLACED:      {labv1.Order_STATE_IN_PROGRESS, labv1.Order_STATE_CANCELLED},
			labv1.Order_STATE_IN_PROGRESS: {labv1.Order_STATE_COMPLETED},
		},
	}
}

func facilityID(name string) string { return strings.TrimPrefix(name, "facilities/") }

func byFacilityKey(o *labv1.Order) string {
	return "ordfac/" + facilityID(o.GetRequestingFacility()) + "/" + orders.ID(o.GetName())
}

func worklistPrefix(lab string, p labv1.Priority) string {
	prefix := "wl/" + facilityID(lab) + "/"
	if p != labv1.Priority_PRIORITY_UNSPECIFIED {
		prefix += fmt.Sprintf("%d/", p)
	}
	return prefix
}

func worklistKey(o *labv1.Order) string {
	return worklistPrefix(o.GetLabFacility(), o.GetPriority()) + orders.ID(o.GetName())
}

func orderSpecimensPrefix(order string) string { return "ordspec/" + orders.ID(order) + "/" }

func orderTestKey(order, code string) string { return "ordtest/" + orders.ID(order) + "/" + code }

func orderDoneKey(order, code string) string { return "orddone/" + orders.ID(order) + "/" + code }

// CreateOrder places an order. The patient and the requesting facility's
// lab center are read from the directory before the transaction.
func (s *Service) CreateOrder(ctx context.Context, req *labv1.CreateOrderRequest) (*labv1.CreateOrderResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetOrder()
	patient, lab, err := s.fromDirectory(ctx, c, in.GetPatient())
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	o := &labv1.Order{
		Name:               orders.Name(id.String()),
		RequestingFacility: c.Facility,
		LabFacility:        lab,
		Clinician:          c.Subject,
		Patient:            in.GetPatient(),
		PatientSex:         patient.GetSex(),
		PatientBirthDate:   patient.GetBirthDate(),
		Tests:              in.GetTests(),
		Priority:           in.GetPriority(),
		ClinicalNote:       in.GetClinicalNote(),
	}
	if err := s.orderM.Apply(o, labv1.Order_STATE_PLACED, c, now, ""); err != nil {
		return nil, err
	}
	out, err := orders.StandardCreate(ctx, s.store, c, req.GetRequestId(), o, now, func(tx store.Tx, o *labv1.Order) error {
		lookup := s.testsIn(tx)
		o.TotalPriceFen = 0
		for i, code := range o.GetTests() {
			t, ok, err := lookup(code)
			if err != nil {
				return err
			}
			if !ok || !t.GetActive() {
				return apierr.Invalid(fmt.Sprintf("order.tests[%d]", i), "unknown test code %q", code)
			}
			o.TotalPriceFen += t.GetPriceFen()
		}
		if err := tx.Put(byFacilityKey(o), nil); err != nil {
			return err
		}
		return tx.Put(worklistKey(o), nil)
	})
	if err != nil {
		return nil, err
	}
	return &labv1.CreateOrderResponse{Order: out}, nil
}

// StoreOrder writes a placed order in tx as CreateOrder stores one (the
// record, its facility and worklist indexes, its order.created event) but
// without its checks and the directory: for loading test volumes (mcc bench
// -startup-records), so they keep the lab's own layout.
func StoreOrder(tx store.Tx, c auth.Caller, now time.Time, o *labv1.Order) error {
	resource.Stamp(o, now, true)
	if err := orders.Create(tx, o); err != nil {
		return err
	}
	if err := tx.Put(byFacilityKey(o), nil); err != nil {
		return err
	}
	if err := tx.Put(worklistKey(o), nil); err != nil {
		return err
	}
	return events.Append(tx, c, now, orders.Change(orders.Event+".created", o, 1))
}

// fromDirectory reads the patient and the caller's facility from the
// directory, as the lab service itself: the patient must exist in the
// community, and the facility's directory record names its lab center.
func (s *Service) fromDirectory(ctx context.Context, c auth.Caller, patient string) (*directoryv1.Patient, string, error) {
	p, err := s.dir.Patient(ctx, c, patient)
	if errors.Is(err, directory.ErrNoPatient) {
		return nil, "", apierr.Invalid("order.patient", "is not a patient of the community's directory")
	}
	if err != nil {
		return nil, "", err
	}
	lab, err := s.dir.Center(ctx, c, typev1.Center_CENTER_LAB)
	switch {
	case errors.Is(err, directory.ErrFacilityUnknown):
		return nil, "", apierr.Condition("FACILITY_UNKNOWN", "the caller's facility %s is not in the directory", c.Facility)
	case errors.Is(err, directory.ErrNoCenter):
		return nil, "", apierr.Condition("NO_LAB_CENTER", "the directory assigns no lab center to %s", c.Facility)
	}
	return p, lab, err
}

// GetOrder returns an order with its specimens and reports.
func (s *Service) GetOrder(ctx context.Context, req *labv1.GetOrderRequest) (*labv1.GetOrderResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	o, err := orders.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	if !sees(c, o.GetRequestingFacility(), o.GetLabFacility()) {
		return nil, notFound(req.GetName())
	}
	resp := &labv1.GetOrderResponse{Order: o}
	prefix := orderSpecimensPrefix(o.GetName())
	_, err = paging.Scan(ctx, s.store, p, prefix, "", paging.Max, func(rec store.Record) (bool, error) {
		barcode := strings.TrimPrefix(rec.Key, prefix)
		sp, err := specimens.Load(ctx, s.store, p, specimens.Name(barcode))
		if err != nil {
			return false, err
		}
		resp.Specimens = append(resp.Specimens, sp)
		r, err := reports.Load(ctx, s.store, p, reports.Name(barcode))
		switch {
		case err == nil:
			resp.Reports = append(resp.Reports, r)
		case !errors.Is(err, store.ErrNotFound):
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ListOrders lists the orders the caller's facility placed, oldest first;
// the whole community for administrators.
func (s *Service) ListOrders(ctx context.Context, req *labv1.ListOrdersRequest) (*labv1.ListOrdersResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	prefix := "ordfac/" + facilityID(c.Facility) + "/"
	if c.SeesCommunity() {
		prefix = orders.Prefix
	}
	list, next, err := s.scanOrders(ctx, c, prefix, req.GetPageToken(), req.GetPageSize(), req.GetState(), req.GetPriority())
	if err != nil {
		return nil, err
	}
	return &labv1.ListOrdersResponse{Orders: list, NextPageToken: next}, nil
}

// ListWorklist lists the orders sent to the caller's facility as lab
// center, STAT first, then urgent, then routine, oldest first within each.
func (s *Service) ListWorklist(ctx context.Context, req *labv1.ListWorklistRequest) (*labv1.ListWorklistResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := s.scanOrders(ctx, c, worklistPrefix(c.Facility, req.GetPriority()), req.GetPageToken(), req.GetPageSize(), req.GetState(), req.GetPriority())
	if err != nil {
		return nil, err
	}
	return &labv1.ListWorklistResponse{Orders: list, NextPageToken: next}, nil
}

// scanOrders pages through an order index (or the orders themselves),
// keeping the orders in state and of priority where they are set.
func (s *Service) scanOrders(ctx context.Context, c auth.Caller, prefix, token string, size int32, state labv1.Order_State, priority labv1.Priority) ([]*labv1.Order, string, error) {
	p := c.Partition()
	filter := fmt.Sprintf("orders|%s|%d|%d", prefix, state, priority)
	after, err := paging.Decode(token, filter)
	if err != nil {
		return nil, "", err
	}
	var out []*labv1.Order
	last, err := paging.Scan(ctx, s.store, p, prefix, after, paging.Size(size), func(rec store.Record) (bool, error) {
		var o *labv1.Order
		var err error
		if prefix == orders.Prefix {
			o, err = orders.Decode(rec)
		} else {
			id := rec.Key[strings.LastIndexByte(rec.Key, '/')+1:]
			o, err = orders.Load(ctx, s.store, p, orders.Name(id))
		}
		if err != nil || (state != 0 && o.GetState() != state) || (priority != 0 && o.GetPriority() != priority) {
			return false, err
		}
		out = append(out, o)
		return true, nil
	})
	if err != nil || last == "" {
		return out, "", err
	}
	return out, paging.Encode(last, filter), nil
}

// CancelOrder cancels an order for its requesting facility.
func (s *Service) CancelOrder(ctx context.Context, req *labv1.CancelOrderRequest) (*labv1.CancelOrderResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := fsm.Transition(ctx, s.store, orders, s.orderM, c, s.clock.Now(), fsm.Step[*labv1.Order, labv1.Order_State]{
		Name: req.GetName(), Etag: req.GetEtag(), To: labv1.Order_STATE_CANCELLED, Reason: req.GetReason(),
		Before: func(_ store.Tx, o *labv1.Order) error {
			return atRequester(c, o.GetName(), o.GetRequestingFacility(), o.GetLabFacility())
		},
	})
	if err != nil {
		return nil, err
	}
	return &labv1.CancelOrderResponse{Order: out}, nil
}

// advanceOrder moves an order from one state to another inside tx, and
// does nothing if the order is not in from (a second specimen's reception
// finds the order already in progress).
func (s *Service) advanceOrder(tx store.Tx, c auth.Caller, now time.Time, name string, from, to labv1.Order_State) error {
	o, version, err := orders.Get(tx, name)
	if err != nil || o.GetState() != from {
		return err
	}
	if err := s.orderM.Apply(o, to, c, now, ""); err != nil {
		return err
	}
	if err := orders.Update(tx, o, version); err != nil {
		return err
	}
	return events.Append(tx, c, now, orders.Change(orders.Event+"."+fsm.EventName(to), o, version+1))
}
