package sterilization

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// State is a package's state in its chain of custody.
type State = sterilizationv1.Package_State

// The states of the chain, in the order a cycle runs.
const (
	requested   = sterilizationv1.Package_STATE_REQUESTED
	collected   = sterilizationv1.Package_STATE_COLLECTED
	washed      = sterilizationv1.Package_STATE_WASHED
	disinfected = sterilizationv1.Package_STATE_DISINFECTED
	packed      = sterilizationv1.Package_STATE_PACKED
	sterilizing = sterilizationv1.Package_STATE_STERILIZING
	stored      = sterilizationv1.Package_STATE_STORED
	dispatched  = sterilizationv1.Package_STATE_DISPATCHED
	received    = sterilizationv1.Package_STATE_RECEIVED
	used        = sterilizationv1.Package_STATE_USED
)

// PackageMachine is the chain of custody as one table: the clinic's
// request, collection, washing, disinfection, inspection and packing,
// sterilization in a load, storage, dispatch, receipt and use, and
// collection again. A package leaves a load for the store when the load is
// released, or goes back to be reprocessed when the load fails or is
// recalled before release. A stored or received package that will not be
// used (expired, recalled) is collected to be reprocessed.
func PackageMachine() fsm.Machine[State] {
	return fsm.Machine[State]{
		Kind: "package",
		Moves: map[State][]State{
			requested:   {collected},
			collected:   {washed},
			washed:      {disinfected},
			disinfected: {packed},
			packed:      {sterilizing},
			sterilizing: {stored, collected},
			stored:      {dispatched, collected},
			dispatched:  {received},
			received:    {used, collected},
			used:        {collected},
		},
	}
}

// packages holds each package with its current cycle. A package's events
// concern its owner, its CSSD and the clinic it was dispatched to.
var packages = resource.Table[*sterilizationv1.Package]{
	Collection: "packages",
	Prefix:     "pkg/",
	New:        func() *sterilizationv1.Package { return &sterilizationv1.Package{} },
	Event:      "package",
	Facilities: func(p *sterilizationv1.Package) []string {
		return []string{p.GetFacility(), p.GetCssd(), p.GetHolder(), p.GetHandover().GetDestination()}
	},
}

// cycleKey is the key of a package's ended cycle.
func cycleKey(barcode string, cycle int32) string { return fmt.Sprintf("pcyc/%s/%06d", barcode, cycle) }

// inventoryKey indexes a sterile package under the facility holding it.
func inventoryKey(facility, barcode string) string {
	return "inv/" + facilityID(facility) + "/" + barcode
}

// sees reports whether the caller may see a package cycle: administrators,
// the owner, the CSSD, and the clinic the package was dispatched to.
func sees(c auth.Caller, p *sterilizationv1.Package) bool {
	return c.SeesCommunity() || c.Facility == p.GetFacility() || c.Facility == p.GetCssd() ||
		c.Facility == p.GetHolder() || c.Facility == p.GetHandover().GetDestination()
}

// CreatePackage registers the caller's facility's request for a package.
// The CSSD that will process it is read from the directory first.
func (s *Service) CreatePackage(ctx context.Context, req *sterilizationv1.CreatePackageRequest) (*sterilizationv1.CreatePackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	cssd, err := s.cssdOf(ctx, c, c.Facility)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	p := &sterilizationv1.Package{
		Name:     packages.Name(req.GetBarcode()),
		Barcode:  req.GetBarcode(),
		SetType:  req.GetSetType(),
		Facility: c.Facility,
		Cssd:     cssd,
		State:    requested,
		Cycle:    1,
		Holder:   c.Facility,
		Timeline: []*typev1.StateChange{{To: requested.String(), Actor: c.Actor(), Time: timestamppb.New(now)}},
	}
	out, err := packages.StandardCreate(ctx, s.store, c, req.GetRequestId(), p, now, func(tx store.Tx, p *sterilizationv1.Package) error {
		st, _, err := setTypes.Get(tx, p.GetSetType())
		if errors.Is(err, store.ErrNotFound) {
			return apierr.Invalid("set_type", "%s does not exist", p.GetSetType())
		}
		if err != nil {
			return err
		}
		p.Implant = st.GetImplant()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.CreatePackageResponse{Package: s.present(c, out, nil, now)}, nil
}

// GetPackage returns a package the caller may see.
func (s *Service) GetPackage(ctx context.Context, req *sterilizationv1.GetPackageRequest) (*sterilizationv1.GetPackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.visiblePackage(ctx, c, req.GetName())
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.GetPackageResponse{Package: p}, nil
}

// visiblePackage loads a package the caller may see, as the caller sees it.
func (s *Service) visiblePackage(ctx context.Context, c auth.Caller, name string) (*sterilizationv1.Package, error) {
	p, err := packages.Load(ctx, s.store, c.Partition(), name)
	if err != nil {
		return nil, err
	}
	if !sees(c, p) {
		return nil, notFound(name)
	}
	return s.view(ctx, c, p, newLoadCache())
}

// ListPackages lists the packages the caller may see, in barcode order.
func (s *Service) ListPackages(ctx context.Context, req *sterilizationv1.ListPackagesRequest) (*sterilizationv1.ListPackagesResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	filter := fmt.Sprintf("%s|%d|%s", c.Facility, req.GetState(), req.GetFacility())
	list, next, err := packages.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), filter, func(p *sterilizationv1.Package) bool {
		return sees(c, p) && (req.GetState() == 0 || p.GetState() == req.GetState()) && (req.GetFacility() == "" || p.GetFacility() == req.GetFacility())
	})
	if err != nil {
		return nil, err
	}
	cache := newLoadCache()
	for i, p := range list {
		if list[i], err = s.view(ctx, c, p, cache); err != nil {
			return nil, err
		}
	}
	return &sterilizationv1.ListPackagesResponse{Packages: list, NextPageToken: next}, nil
}

// errAlreadyDone stops the transaction of a scan that repeats the step the
// package is already at: nothing is written, and the package is returned
// as it is.
var errAlreadyDone = errors.New("the package is already at this step")

// step is one scan of the chain.
type step struct {
	to State
	// atCSSD is true for the center's steps, which only the package's CSSD
	// may scan; the others are scanned at the clinic holding the package.
	atCSSD bool
	// repeats reports whether a package already at the target state shows
	// this very request (the same scan made twice); nil means it always
	// does. A different request to the same state is an illegal move.
	repeats func(p *sterilizationv1.Package) bool
	// check refuses the step for reasons the table does not know.
	check func(tx store.Tx, p *sterilizationv1.Package) error
	// apply changes what else the step changes, after the move.
	apply func(tx store.Tx, p *sterilizationv1.Package, from State) error
}

// scan runs one step of the chain on a package in one transaction, through
// fsm.Transition: the table, the stamp of who, where and when, the event.
func (s *Service) scan(ctx context.Context, c auth.Caller, name, etag string, st step) (*sterilizationv1.Package, error) {
	now := s.clock.Now()
	m := PackageMachine()
	var from State
	out, err := fsm.Transition(ctx, s.store, packages, m, c, now, fsm.Step[*sterilizationv1.Package, State]{
		Name: name,
		Etag: etag,
		To:   st.to,
		Before: func(tx store.Tx, p *sterilizationv1.Package) error {
			if !sees(c, p) {
				return notFound(name)
			}
			here := c.Facility == p.GetHolder()
			if st.atCSSD {
				here = c.Facility == p.GetCssd()
			}
			if here && p.GetState() == st.to && (st.repeats == nil || st.repeats(p)) {
				return errAlreadyDone
			}
			if err := m.Check(p.GetState(), st.to); err != nil {
				return err
			}
			switch {
			case here:
			case st.atCSSD:
				return fmt.Errorf("only %s, the package's sterilization center, scans this step: %w", p.GetCssd(), apierr.ErrPermissionDenied)
			default:
				return apierr.Condition(ReasonElsewhere, "%s is at %s, not at %s", name, p.GetHolder(), c.Facility)
			}
			from = p.GetState()
			if st.check != nil {
				return st.check(tx, p)
			}
			return nil
		},
		After: func(tx store.Tx, p *sterilizationv1.Package) error {
			if st.apply != nil {
				return st.apply(tx, p, from)
			}
			return nil
		},
	})
	if errors.Is(err, errAlreadyDone) {
		return s.visiblePackage(ctx, c, name)
	}
	if err != nil {
		return nil, err
	}
	return s.view(ctx, c, out, newLoadCache())
}

// CollectPackage records a collection by the CSSD.
func (s *Service) CollectPackage(ctx context.Context, req *sterilizationv1.CollectPackageRequest) (*sterilizationv1.CollectPackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{
		to:     collected,
		atCSSD: true,
		check: func(_ store.Tx, p *sterilizationv1.Package) error {
			if p.GetState() == sterilizing {
				return apierr.Condition(ReasonInLoad, "%s is in load %s; it leaves it when the load is released or fails", p.GetName(), p.GetLoad())
			}
			return nil
		},
		apply: func(tx store.Tx, p *sterilizationv1.Package, from State) error {
			return startCycle(tx, p, from)
		},
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.CollectPackageResponse{Package: p}, nil
}

// startCycle finishes a collection that has just moved p to COLLECTED. The
// first collection continues the requested cycle; any later one keeps the
// ended cycle, as it ended, under its own key, and starts the next one. The
// package comes back to its CSSD and leaves any inventory.
func startCycle(tx store.Tx, p *sterilizationv1.Package, from State) error {
	if err := tx.Delete(inventoryKey(p.GetHolder(), p.GetBarcode()), 0); err != nil {
		return err
	}
	p.Holder = p.GetCssd()
	if from == requested {
		return nil
	}
	timeline := p.GetTimeline()
	ended := proto.CloneOf(p)
	ended.State = from
	ended.Timeline = timeline[:len(timeline)-1]
	ended.UpdateTime = ended.Timeline[len(ended.Timeline)-1].GetTime()
	ended.Holder = ""
	if from == dispatched || from == received || from == used {
		ended.Holder = p.GetHandover().GetDestination()
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(ended)
	if err != nil {
		return err
	}
	if err := tx.Create(cycleKey(p.GetBarcode(), p.GetCycle()), data); err != nil {
		return err
	}
	p.Cycle++
	p.Material, p.Packer, p.PackTime = 0, "", nil
	p.Load, p.SterilizeTime, p.ExpireTime = "", nil, nil
	p.Handover, p.Use, p.EarlyRelease = nil, nil, nil
	p.Timeline = timeline[len(timeline)-1:]
	return nil
}

// WashPackage records the washing.
func (s *Service) WashPackage(ctx context.Context, req *sterilizationv1.WashPackageRequest) (*sterilizationv1.WashPackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{to: washed, atCSSD: true})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.WashPackageResponse{Package: p}, nil
}

// DisinfectPackage records the disinfection.
func (s *Service) DisinfectPackage(ctx context.Context, req *sterilizationv1.DisinfectPackageRequest) (*sterilizationv1.DisinfectPackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{to: disinfected, atCSSD: true})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.DisinfectPackageResponse{Package: p}, nil
}

// PackPackage records the inspection and packing, by the caller, in a
// material the shelf-life table knows.
func (s *Service) PackPackage(ctx context.Context, req *sterilizationv1.PackPackageRequest) (*sterilizationv1.PackPackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := s.cfg.ShelfLife[req.GetMaterial()]; !ok {
		return nil, apierr.Invalid("material", "no shelf life is configured for %s", materialName(req.GetMaterial()))
	}
	now := s.clock.Now()
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{
		to:      packed,
		atCSSD:  true,
		repeats: func(p *sterilizationv1.Package) bool { return p.GetMaterial() == req.GetMaterial() },
		apply: func(_ store.Tx, p *sterilizationv1.Package, _ State) error {
			p.Material, p.Packer, p.PackTime = req.GetMaterial(), c.Subject, timestamppb.New(now)
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.PackPackageResponse{Package: p}, nil
}

// DispatchPackage records a dispatch with its handover. The destination, if
// named, is checked with the directory first.
func (s *Service) DispatchPackage(ctx context.Context, req *sterilizationv1.DispatchPackageRequest) (*sterilizationv1.DispatchPackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetDestination() != "" {
		if err := s.checkDestination(ctx, c, req.GetDestination()); err != nil {
			return nil, err
		}
	}
	now := s.clock.Now()
	destination := func(p *sterilizationv1.Package) string {
		if req.GetDestination() != "" {
			return req.GetDestination()
		}
		return p.GetFacility()
	}
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{
		to:     dispatched,
		atCSSD: true,
		repeats: func(p *sterilizationv1.Package) bool {
			return p.GetHandover().GetDestination() == destination(p) && p.GetHandover().GetReceiver() == req.GetReceiver()
		},
		check: func(tx store.Tx, p *sterilizationv1.Package) error {
			return s.checkUsable(tx, p, now, true)
		},
		apply: func(tx store.Tx, p *sterilizationv1.Package, _ State) error {
			to := destination(p)
			p.Handover = &sterilizationv1.Handover{Destination: to, Giver: c.Subject, Receiver: req.GetReceiver(), Time: timestamppb.New(now)}
			if err := tx.Delete(inventoryKey(p.GetHolder(), p.GetBarcode()), 0); err != nil {
				return err
			}
			p.Holder = to
			if err := tx.Put(inventoryKey(to, p.GetBarcode()), nil); err != nil {
				return err
			}
			return s.countDispatch(tx, p, now)
		},
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.DispatchPackageResponse{Package: p}, nil
}

// ReceivePackage records the receipt at the clinic the package was
// dispatched to.
func (s *Service) ReceivePackage(ctx context.Context, req *sterilizationv1.ReceivePackageRequest) (*sterilizationv1.ReceivePackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{to: received})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ReceivePackageResponse{Package: p}, nil
}

// UsePackage records the use of a package on a patient. The patient and the
// clinician are checked with the directory first.
func (s *Service) UsePackage(ctx context.Context, req *sterilizationv1.UsePackageRequest) (*sterilizationv1.UsePackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkPatient(ctx, req.GetPatient()); err != nil {
		return nil, err
	}
	if err := s.checkClinician(ctx, c, req.GetClinician()); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	p, err := s.scan(ctx, c, req.GetName(), req.GetEtag(), step{
		to: used,
		repeats: func(p *sterilizationv1.Package) bool {
			u := p.GetUse()
			return u.GetPatient() == req.GetPatient() && u.GetClinician() == req.GetClinician() && proto.Equal(u.GetProcedure(), req.GetProcedure())
		},
		check: func(tx store.Tx, p *sterilizationv1.Package) error {
			return s.checkUsable(tx, p, now, false)
		},
		apply: func(tx store.Tx, p *sterilizationv1.Package, _ State) error {
			p.Use = &sterilizationv1.Use{Patient: req.GetPatient(), Procedure: req.GetProcedure(), Clinician: req.GetClinician(), Facility: c.Facility, Time: timestamppb.New(now)}
			if err := tx.Delete(inventoryKey(p.GetHolder(), p.GetBarcode()), 0); err != nil {
				return err
			}
			return putPatientLink(tx, p)
		},
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.UsePackageResponse{Package: p}, nil
}

// checkUsable refuses to let a package out of the store, or onto a patient,
// when its cycle's load is recalled, when it has expired, or (for a
// dispatch) when it is an implant still held for its BI. It reads the load
// in the same transaction as the move, so a recall that commits first is
// always seen: a recalled package never gets out.
func (s *Service) checkUsable(tx store.Tx, p *sterilizationv1.Package, now time.Time, dispatch bool) error {
	load, _, err := loadTable(p.GetLoad()).Get(tx, p.GetLoad())
	if err != nil {
		return err
	}
	if load.GetState() == sterilizationv1.Load_STATE_RECALLED {
		return apierr.Condition(ReasonRecalled, "%s is recalled by %s: a biological indicator failed on %s", p.GetName(), load.GetRecall(), load.GetSterilizer())
	}
	if expired(p, now) {
		return apierr.Condition(ReasonExpired, "%s expired at %s", p.GetName(), p.GetExpireTime().AsTime().In(s.zone).Format(time.DateTime))
	}
	if dispatch && held(p, load) {
		return apierr.Condition(ReasonImplantHeld, "%s is an implant held until the biological indicator of %s passes", p.GetName(), load.GetName())
	}
	return nil
}

// expired reports whether p's sterility has run out.
func expired(p *sterilizationv1.Package, now time.Time) bool {
	return p.GetExpireTime() != nil && !now.Before(p.GetExpireTime().AsTime())
}

// held reports whether p is an implant waiting for its load's BI.
func held(p *sterilizationv1.Package, load *sterilizationv1.Load) bool {
	return p.GetImplant() && load.GetBiological() != sterilizationv1.Result_RESULT_PASS && p.GetEarlyRelease() == nil
}

// ReleasePackageEarly releases a held implant before its BI result, and
// records the release on the load, where it stays open until the result.
func (s *Service) ReleasePackageEarly(ctx context.Context, req *sterilizationv1.ReleasePackageEarlyRequest) (*sterilizationv1.ReleasePackageEarlyResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	var out *sterilizationv1.Package
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		p, version, err := packages.Get(tx, req.GetName())
		if err != nil {
			return err
		}
		if !sees(c, p) || c.Facility != p.GetCssd() {
			return notFound(req.GetName())
		}
		if err := resource.CheckEtag(req.GetName(), req.GetEtag(), version); err != nil {
			return err
		}
		if p.GetEarlyRelease() != nil {
			out = p
			return nil
		}
		if p.GetState() != stored || !p.GetImplant() {
			return apierr.Condition(ReasonImplantNotHeld, "only a stored implant can be released early; %s is %s", req.GetName(), p.GetState())
		}
		lt := loadTable(p.GetLoad())
		load, loadVersion, err := lt.Get(tx, p.GetLoad())
		if err != nil {
			return err
		}
		if !held(p, load) {
			return apierr.Condition(ReasonImplantNotHeld, "%s is not held: the biological indicator of %s passed", req.GetName(), load.GetName())
		}
		if load.GetState() == sterilizationv1.Load_STATE_RECALLED {
			return apierr.Condition(ReasonRecalled, "%s is recalled by %s", req.GetName(), load.GetRecall())
		}
		release := &sterilizationv1.EarlyRelease{Package: p.GetName(), Reason: req.GetReason(), Actor: c.Subject, Time: timestamppb.New(now)}
		p.EarlyRelease = release
		p.Timeline = append(p.Timeline, &typev1.StateChange{From: stored.String(), To: stored.String(), Actor: c.Actor(), Time: timestamppb.New(now), Reason: "early release: " + req.GetReason()})
		resource.Stamp(p, now, false)
		if err := packages.Update(tx, p, version); err != nil {
			return err
		}
		load.EarlyReleases = append(load.EarlyReleases, proto.CloneOf(release))
		resource.Stamp(load, now, false)
		if err := lt.Update(tx, load, loadVersion); err != nil {
			return err
		}
		out = p
		if err := events.Append(tx, c, now, packages.Change("package.released_early", p, version+1)); err != nil {
			return err
		}
		return events.Append(tx, c, now, lt.Change("load.early_release", load, loadVersion+1))
	})
	if err != nil {
		return nil, err
	}
	out, err = s.view(ctx, c, out, newLoadCache())
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ReleasePackageEarlyResponse{Package: out}, nil
}

// loadCache keeps the loads read while presenting a list of packages, which
// mostly share a few loads.
type loadCache map[string]*sterilizationv1.Load

func newLoadCache() loadCache { return loadCache{} }

// view is a package cycle as the caller sees it: with the derived fields
// (held, recall, expired) filled from its load, and the patient left out
// unless the caller used the package or is its CSSD.
func (s *Service) view(ctx context.Context, c auth.Caller, p *sterilizationv1.Package, cache loadCache) (*sterilizationv1.Package, error) {
	var load *sterilizationv1.Load
	if name := p.GetLoad(); name != "" {
		load = cache[name]
		if load == nil {
			var err error
			if load, err = loadTable(name).Load(ctx, s.store, c.Partition(), name); err != nil {
				return nil, err
			}
			cache[name] = load
		}
	}
	return s.present(c, p, load, s.clock.Now()), nil
}

// present fills a copy of p with what is derived from its load and the
// time, and redacts what the caller may not see.
func (s *Service) present(c auth.Caller, p *sterilizationv1.Package, load *sterilizationv1.Load, now time.Time) *sterilizationv1.Package {
	out := proto.CloneOf(p)
	if load != nil {
		if load.GetState() == sterilizationv1.Load_STATE_RECALLED {
			out.Recall = load.GetRecall()
		}
		out.Held = held(p, load) && (p.GetState() == sterilizing || p.GetState() == stored)
	}
	switch p.GetState() {
	case stored, dispatched, received:
		out.Expired = expired(p, now)
	}
	if u := out.GetUse(); u != nil && !c.SeesCommunity() && c.Facility != p.GetCssd() && c.Facility != u.GetFacility() {
		u.Patient = ""
	}
	return out
}

// packageID is the barcode in a package name.
func packageID(name string) string { return strings.TrimPrefix(name, "packages/") }
