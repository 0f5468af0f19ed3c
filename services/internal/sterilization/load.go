package sterilization

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// LoadState is a load's state.
type LoadState = sterilizationv1.Load_State

const (
	running  = sterilizationv1.Load_STATE_RUNNING
	released = sterilizationv1.Load_STATE_RELEASED
	failed   = sterilizationv1.Load_STATE_FAILED
	recalled = sterilizationv1.Load_STATE_RECALLED
)

// LoadMachine is a load's life: a running load is released when its
// physical and chemical results pass, fails when one of them fails, and is
// recalled, released or not, when a BI failure on its sterilizer puts it in
// doubt.
func LoadMachine() fsm.Machine[LoadState] {
	return fsm.Machine[LoadState]{
		Kind: "load",
		Moves: map[LoadState][]LoadState{
			running:  {released, failed, recalled},
			released: {recalled},
		},
	}
}

// loadIDDigits is the width of the cycle number in a load's ID, so that a
// sterilizer's loads sort by cycle.
const loadIDDigits = 8

// loadName is the resource name of a sterilizer's cycle.
func loadName(sterilizer string, cycle int64) string {
	return fmt.Sprintf("%s/loads/%0*d", sterilizer, loadIDDigits, cycle)
}

// loadTable is the table of the loads of the sterilizer that name (a
// sterilizer or one of its loads) belongs to, keyed by cycle under
// load/{sterilizer}/.
func loadTable(name string) resource.Table[*sterilizationv1.Load] {
	id, _, _ := strings.Cut(strings.TrimPrefix(name, "sterilizers/"), "/")
	return resource.Table[*sterilizationv1.Load]{
		Collection: "sterilizers/" + id + "/loads",
		Prefix:     "load/" + id + "/",
		New:        func() *sterilizationv1.Load { return &sterilizationv1.Load{} },
		Event:      "load",
		Facilities: func(l *sterilizationv1.Load) []string { return []string{l.GetFacility()} },
	}
}

// allLoads lists the loads of every sterilizer: the key prefix of them all.
var allLoads = resource.Table[*sterilizationv1.Load]{
	Collection: "sterilizers/-/loads",
	Prefix:     "load/",
	New:        func() *sterilizationv1.Load { return &sterilizationv1.Load{} },
}

// CreateLoad starts a load of packed packages under the sterilizer's next
// cycle number, after the sterilizer's lock and B-D checks, in one
// transaction with every package's move into the load.
func (s *Service) CreateLoad(ctx context.Context, req *sterilizationv1.CreateLoadRequest) (*sterilizationv1.CreateLoadResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case req.GetTest() && len(req.GetPackages()) > 0:
		return nil, apierr.Invalid("packages", "a test cycle carries no packages")
	case !req.GetTest() && len(req.GetPackages()) == 0:
		return nil, apierr.Invalid("packages", "a load needs at least one package")
	}
	now := s.clock.Now()
	m := PackageMachine()
	var out *sterilizationv1.Load
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		lt := loadTable(req.GetParent())
		if name, found, err := idem.Lookup(tx, c, req.GetRequestId()); err != nil || found {
			if err == nil {
				out, _, err = lt.Get(tx, name)
			}
			return err
		}
		st, stVersion, err := ownSterilizer(tx, c, req.GetParent())
		if err != nil {
			return err
		}
		if err := s.checkCanRun(st, req.GetTest(), now); err != nil {
			return err
		}
		st.LastCycle++
		load := &sterilizationv1.Load{
			Name:                loadName(st.GetName(), st.GetLastCycle()),
			Sterilizer:          st.GetName(),
			CycleNumber:         st.GetLastCycle(),
			Program:             req.GetProgram(),
			Operator:            c.Subject,
			Facility:            st.GetFacility(),
			Test:                req.GetTest(),
			BiologicalIndicator: req.GetBiologicalIndicator() || req.GetTest(),
			State:               running,
			Timeline:            []*typev1.StateChange{{To: running.String(), Actor: c.Actor(), Time: timestamppb.New(now)}},
		}
		for i, name := range req.GetPackages() {
			p, version, err := packages.Get(tx, name)
			if errors.Is(err, store.ErrNotFound) || (err == nil && p.GetCssd() != c.Facility) {
				return apierr.Invalid(fmt.Sprintf("packages[%d]", i), "%s does not exist", name)
			}
			if err != nil {
				return err
			}
			if err := m.Apply(p, sterilizing, c, now, "in "+load.GetName()); err != nil {
				return err
			}
			p.Load = load.GetName()
			p.SterilizeTime = timestamppb.New(now)
			p.ExpireTime = timestamppb.New(now.Add(s.cfg.ShelfLife[p.GetMaterial()]))
			load.BiologicalIndicator = load.GetBiologicalIndicator() || p.GetImplant()
			load.Packages = append(load.Packages, &sterilizationv1.LoadPackage{
				Package: p.GetName(), Cycle: p.GetCycle(), Facility: p.GetFacility(), SetType: p.GetSetType(), Implant: p.GetImplant(),
			})
			if err := savePackage(tx, c, now, p, version, sterilizing); err != nil {
				return err
			}
		}
		resource.Stamp(st, now, false)
		if err := sterilizers.Update(tx, st, stVersion); err != nil {
			return err
		}
		resource.Stamp(load, now, true)
		if err := lt.Create(tx, load); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, req.GetRequestId(), load.GetName()); err != nil {
			return err
		}
		if err := s.countLoad(tx, st, now, func(d *loadDay) { d.Loads++ }); err != nil {
			return err
		}
		out = load
		return events.Append(tx, c, now, lt.Change("load.created", load, 1))
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.CreateLoadResponse{Load: out}, nil
}

// checkCanRun refuses a load on a locked sterilizer (test cycles excepted,
// since they are how it is unlocked), and on a pre-vacuum sterilizer whose
// latest B-D test is not a pass of today.
func (s *Service) checkCanRun(st *sterilizationv1.Sterilizer, test bool, now time.Time) error {
	if lock := st.GetLock(); lock != nil && !test {
		return apierr.Condition(ReasonLocked, "%s is locked since the biological indicator of %s failed; it runs only test cycles until %d more pass",
			st.GetName(), lock.GetLoad(), unlockPasses-lock.GetConsecutivePasses())
	}
	if st.GetType() != sterilizationv1.Sterilizer_TYPE_PRE_VACUUM {
		return nil
	}
	bd := st.GetLastBowieDickTest()
	switch {
	case bd.GetDay() != s.day(now):
		return apierr.Condition(ReasonBowieDick, "%s has no B-D test today (%s); a pre-vacuum sterilizer needs a passing one before its first load", st.GetName(), s.day(now))
	case bd.GetResult() != sterilizationv1.Result_RESULT_PASS:
		return apierr.Condition(ReasonBowieDick, "today's latest B-D test of %s failed; it runs no load until one passes", st.GetName())
	}
	return nil
}

// savePackage stores a package that has just made a move, with the move's
// event: what fsm.Transition does for one package, for the moves a load
// makes for many in one transaction.
func savePackage(tx store.Tx, c auth.Caller, now time.Time, p *sterilizationv1.Package, version uint64, to State) error {
	if err := packages.Update(tx, p, version); err != nil {
		return err
	}
	return events.Append(tx, c, now, packages.Change(packages.Event+"."+fsm.EventName(to), p, version+1))
}

// GetLoad returns a load of the caller's CSSD.
func (s *Service) GetLoad(ctx context.Context, req *sterilizationv1.GetLoadRequest) (*sterilizationv1.GetLoadResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	load, err := loadTable(req.GetName()).Load(ctx, s.store, c.Partition(), req.GetName())
	if err != nil {
		return nil, err
	}
	if load.GetFacility() != c.Facility && !c.SeesCommunity() {
		return nil, notFound(req.GetName())
	}
	return &sterilizationv1.GetLoadResponse{Load: load}, nil
}

// ListLoads lists a sterilizer's loads (or every sterilizer's) in cycle
// order.
func (s *Service) ListLoads(ctx context.Context, req *sterilizationv1.ListLoadsRequest) (*sterilizationv1.ListLoadsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	table := allLoads
	if req.GetParent() != "sterilizers/-" {
		table = loadTable(req.GetParent())
	}
	filter := fmt.Sprintf("%s|%d|%t", c.Facility, req.GetState(), req.GetOpenEarlyReleases())
	list, next, err := table.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), filter, func(l *sterilizationv1.Load) bool {
		return (l.GetFacility() == c.Facility || c.SeesCommunity()) &&
			(req.GetState() == 0 || l.GetState() == req.GetState()) &&
			(!req.GetOpenEarlyReleases() || (len(l.GetEarlyReleases()) > 0 && l.GetBiological() == sterilizationv1.Result_RESULT_UNSPECIFIED))
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ListLoadsResponse{Loads: list, NextPageToken: next}, nil
}

// RecordLoadResults records a running load's physical and chemical
// results. A failing one fails the load, and each of its packages goes back
// to be reprocessed in a new cycle, in the same transaction.
func (s *Service) RecordLoadResults(ctx context.Context, req *sterilizationv1.RecordLoadResultsRequest) (*sterilizationv1.RecordLoadResultsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	out, err := s.changeLoad(ctx, c, req.GetName(), req.GetEtag(), now, func(tx store.Tx, load *sterilizationv1.Load) (string, error) {
		if load.GetState() != running {
			return "", apierr.Condition(ReasonLoadNotRunning, "%s is %s; results are recorded while it runs", load.GetName(), load.GetState())
		}
		changed := false
		for _, r := range []struct {
			name      string
			got, sent sterilizationv1.Result
			set       func(sterilizationv1.Result)
		}{
			{"physical", load.GetPhysical(), req.GetPhysical(), func(v sterilizationv1.Result) { load.Physical = v }},
			{"chemical", load.GetChemical(), req.GetChemical(), func(v sterilizationv1.Result) { load.Chemical = v }},
		} {
			switch {
			case r.sent == 0 || r.sent == r.got:
			case r.got != 0:
				return "", apierr.Condition(ReasonResultRecorded, "the %s result of %s is already recorded as %s", r.name, load.GetName(), r.got)
			default:
				r.set(r.sent)
				changed = true
			}
		}
		switch {
		case !changed:
			return "", nil
		case load.GetPhysical() != sterilizationv1.Result_RESULT_FAIL && load.GetChemical() != sterilizationv1.Result_RESULT_FAIL:
			return "load.results_recorded", nil
		}
		if err := LoadMachine().Apply(load, failed, c, now, "physical or chemical monitoring failed"); err != nil {
			return "", err
		}
		if err := s.reprocess(tx, c, now, load, "load "+load.GetName()+" failed"); err != nil {
			return "", err
		}
		return "load.failed", s.countLoadOf(tx, load, now, func(d *loadDay) { d.Failed++ })
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.RecordLoadResultsResponse{Load: out}, nil
}

// ReleaseLoad releases a load whose physical and chemical results passed:
// each of its packages is stored, in the same transaction.
func (s *Service) ReleaseLoad(ctx context.Context, req *sterilizationv1.ReleaseLoadRequest) (*sterilizationv1.ReleaseLoadResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	m := PackageMachine()
	out, err := s.changeLoad(ctx, c, req.GetName(), req.GetEtag(), now, func(tx store.Tx, load *sterilizationv1.Load) (string, error) {
		if err := LoadMachine().Check(load.GetState(), released); err != nil {
			return "", err
		}
		if load.GetPhysical() != sterilizationv1.Result_RESULT_PASS || load.GetChemical() != sterilizationv1.Result_RESULT_PASS {
			return "", apierr.Condition(ReasonResultsNotPassed, "%s cannot be released: physical %s, chemical %s; both must pass", load.GetName(), load.GetPhysical(), load.GetChemical())
		}
		if err := LoadMachine().Apply(load, released, c, now, ""); err != nil {
			return "", err
		}
		for _, lp := range load.GetPackages() {
			p, version, err := packages.Get(tx, lp.GetPackage())
			if err != nil {
				return "", err
			}
			if p.GetCycle() != lp.GetCycle() || p.GetState() != sterilizing {
				return "", fmt.Errorf("%s of %s is at cycle %d, %s: the load and its packages disagree", p.GetName(), load.GetName(), p.GetCycle(), p.GetState())
			}
			if err := m.Apply(p, stored, c, now, "released with "+load.GetName()); err != nil {
				return "", err
			}
			p.Holder = p.GetCssd()
			if err := tx.Put(inventoryKey(p.GetHolder(), p.GetBarcode()), nil); err != nil {
				return "", err
			}
			if err := savePackage(tx, c, now, p, version, stored); err != nil {
				return "", err
			}
		}
		return "load.released", s.countLoadOf(tx, load, now, func(d *loadDay) { d.Released++ })
	})
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.ReleaseLoadResponse{Load: out}, nil
}

// changeLoad runs change on a load of the caller's CSSD in one
// transaction, and saves the load with the event whose type change returns.
// An empty type means nothing changed: nothing is written.
func (s *Service) changeLoad(ctx context.Context, c auth.Caller, name, etag string, now time.Time, change func(store.Tx, *sterilizationv1.Load) (string, error)) (*sterilizationv1.Load, error) {
	lt := loadTable(name)
	var out *sterilizationv1.Load
	err := s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		load, version, err := lt.Get(tx, name)
		if err != nil {
			return err
		}
		if load.GetFacility() != c.Facility && !c.SeesCommunity() {
			return notFound(name)
		}
		if err := resource.CheckEtag(name, etag, version); err != nil {
			return err
		}
		typ, err := change(tx, load)
		if err != nil || typ == "" {
			out = load
			return err
		}
		resource.Stamp(load, now, false)
		if err := lt.Update(tx, load, version); err != nil {
			return err
		}
		out = load
		return events.Append(tx, c, now, lt.Change(typ, load, version+1))
	})
	return out, err
}

// reprocess sends the packages still sterilizing in a load that will not be
// released back to the start of the chain: each is collected again, in a
// new cycle.
func (s *Service) reprocess(tx store.Tx, c auth.Caller, now time.Time, load *sterilizationv1.Load, reason string) error {
	m := PackageMachine()
	for _, lp := range load.GetPackages() {
		p, version, err := packages.Get(tx, lp.GetPackage())
		if err != nil {
			return err
		}
		if p.GetCycle() != lp.GetCycle() || p.GetState() != sterilizing {
			continue
		}
		if err := m.Apply(p, collected, c, now, reason); err != nil {
			return err
		}
		if err := startCycle(tx, p, sterilizing); err != nil {
			return err
		}
		if err := savePackage(tx, c, now, p, version, collected); err != nil {
			return err
		}
	}
	return nil
}
