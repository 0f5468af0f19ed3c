package sterilization

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// unlockPasses is how many consecutive passing BI cycles unlock a sterilizer
// after a BI failure.
const unlockPasses = 3

// recalls are the recall reports. A recall's own events concern its CSSD;
// each affected facility gets a notice event of its own.
var recalls = resource.Table[*sterilizationv1.Recall]{
	Collection: "recalls",
	Prefix:     "rc/",
	New:        func() *sterilizationv1.Recall { return &sterilizationv1.Recall{} },
	Event:      "recall",
	Facilities: func(r *sterilizationv1.Recall) []string { return []string{r.GetFacility()} },
}

func recallItemPrefix(recall string) string {
	return "rci/" + strings.TrimPrefix(recall, "recalls/") + "/"
}

func recallItemKey(recall, barcode string, cycle int32) string {
	return fmt.Sprintf("%s%s/%06d", recallItemPrefix(recall), barcode, cycle)
}

func recallFacilityPrefix(facility string) string { return "rcf/" + facilityID(facility) + "/" }

// RecordBiologicalResult records a load's BI result. A pass frees its held
// implants, closes its early releases and counts toward unlocking the
// sterilizer. A failure locks the sterilizer and recalls, in the same
// transaction, every package sterilized on it since its last passing BI:
// once it commits, no recalled package can be dispatched or used.
func (s *Service) RecordBiologicalResult(ctx context.Context, req *sterilizationv1.RecordBiologicalResultRequest) (*sterilizationv1.RecordBiologicalResultResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	// The recall's ID is chosen outside the transaction, which may run
	// more than once.
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	recallName := recalls.Name(id.String())
	resp := &sterilizationv1.RecordBiologicalResultResponse{}
	resp.Load, err = s.changeLoad(ctx, c, req.GetName(), req.GetEtag(), now, func(tx store.Tx, load *sterilizationv1.Load) (string, error) {
		resp.Recall = ""
		switch got := load.GetBiological(); {
		case got == req.GetResult():
			return "", nil
		case got != sterilizationv1.Result_RESULT_UNSPECIFIED:
			return "", apierr.Condition(ReasonResultRecorded, "the biological result of %s is already recorded as %s", load.GetName(), got)
		}
		load.Biological = req.GetResult()
		load.BiologicalTime = timestamppb.New(now)
		load.BiologicalIndicator = true
		for _, r := range load.GetEarlyReleases() {
			r.BiologicalResult = req.GetResult()
		}
		load.Timeline = append(load.Timeline, &typev1.StateChange{
			From: load.GetState().String(), To: load.GetState().String(), Actor: c.Actor(), Time: timestamppb.New(now),
			Reason: "biological indicator " + req.GetResult().String(),
		})
		st, stVersion, err := sterilizers.Get(tx, load.GetSterilizer())
		if err != nil {
			return "", err
		}
		if req.GetResult() == sterilizationv1.Result_RESULT_PASS {
			if err := s.countLoadOf(tx, load, now, func(d *loadDay) { d.BiologicalPassed++ }); err != nil {
				return "", err
			}
			return "load.biological_passed", s.countTowardUnlock(tx, c, now, st, stVersion, load)
		}
		r := recaller{s: s, tx: tx, c: c, now: now, name: recallName, failed: load, sterilizer: st}
		if err := r.run(); err != nil {
			return "", err
		}
		if r.recall != nil {
			resp.Recall = recallName
		}
		st.Lock = &sterilizationv1.Lock{Load: load.GetName(), Recall: resp.Recall, Time: timestamppb.New(now), LockedAtCycle: st.GetLastCycle()}
		resource.Stamp(st, now, false)
		if err := sterilizers.Update(tx, st, stVersion); err != nil {
			return "", err
		}
		if err := events.Append(tx, c, now, sterilizers.Change("sterilizer.locked", st, stVersion+1)); err != nil {
			return "", err
		}
		return "load.biological_failed", s.countLoadOf(tx, load, now, func(d *loadDay) {
			d.BiologicalFailed++
			if r.recall != nil {
				d.Recalls++
				d.RecalledPackages += int64(r.recall.GetPackages())
			}
		})
	})
	if err != nil {
		return nil, err
	}
	if resp.GetRecall() != "" {
		// The log names the recall and the load only: the report itself,
		// with its patients, stays behind the API's access checks.
		s.logger.WarnContext(ctx, "biological indicator failed: sterilizer locked and packages recalled",
			"load", req.GetName(), "recall", resp.GetRecall(), "community", c.Community)
	}
	return resp, nil
}

// countTowardUnlock counts a passing BI of a cycle run after the lock; the
// third in a row unlocks the sterilizer.
func (s *Service) countTowardUnlock(tx store.Tx, c auth.Caller, now time.Time, st *sterilizationv1.Sterilizer, version uint64, load *sterilizationv1.Load) error {
	lock := st.GetLock()
	if lock == nil || load.GetCycleNumber() <= lock.GetLockedAtCycle() {
		return nil
	}
	lock.ConsecutivePasses++
	typ := "sterilizer.unlock_progress"
	if lock.GetConsecutivePasses() >= unlockPasses {
		st.Lock, typ = nil, "sterilizer.unlocked"
	}
	resource.Stamp(st, now, false)
	if err := sterilizers.Update(tx, st, version); err != nil {
		return err
	}
	return events.Append(tx, c, now, sterilizers.Change(typ, st, version+1))
}

// recaller runs one recall inside the transaction of the failing BI.
type recaller struct {
	s          *Service
	tx         store.Tx
	c          auth.Caller
	now        time.Time
	name       string
	failed     *sterilizationv1.Load
	sterilizer *sterilizationv1.Sterilizer

	// recall is the report, once there was something to recall.
	recall *sterilizationv1.Recall
}

// run recalls the window of the failed load and writes the report.
func (r *recaller) run() error {
	window, err := r.window()
	if err != nil {
		return err
	}
	report := &sterilizationv1.Recall{
		Name: r.name, Sterilizer: r.sterilizer.GetName(), FailedLoad: r.failed.GetName(),
		Facility: r.sterilizer.GetFacility(), CreateTime: timestamppb.New(r.now),
	}
	impacts := map[string]*sterilizationv1.RecallImpact{}
	patients := map[string]map[string]bool{}
	m := LoadMachine()
	for _, w := range window {
		load := w.load
		if !recallable(load) {
			continue
		}
		report.Loads = append(report.Loads, load.GetName())
		for _, lp := range load.GetPackages() {
			item, err := r.locate(load, lp)
			if err != nil {
				return err
			}
			if err := putProto(r.tx, recallItemKey(r.name, packageID(lp.GetPackage()), lp.GetCycle()), item); err != nil {
				return err
			}
			concerned := concernedFacility(item)
			impact := impacts[concerned]
			if impact == nil {
				impact = &sterilizationv1.RecallImpact{Facility: concerned}
				impacts[concerned] = impact
				patients[concerned] = map[string]bool{}
			}
			report.Packages++
			switch item.GetLocation() {
			case sterilizationv1.RecallItem_LOCATION_IN_STORE:
				report.InStore++
				impact.InStore++
			case sterilizationv1.RecallItem_LOCATION_DISPATCHED:
				report.Dispatched++
				impact.Dispatched++
			case sterilizationv1.RecallItem_LOCATION_USED:
				report.Used++
				impact.Used++
				patients[concerned][item.GetUse().GetPatient()] = true
			}
		}
	}
	if report.GetPackages() == 0 {
		return r.markRecalled(window, m, "")
	}
	exposed := map[string]bool{}
	for _, f := range slicesSorted(impacts) {
		impact := impacts[f]
		impact.ExposedPatients = int32(len(patients[f]))
		for p := range patients[f] {
			exposed[p] = true
		}
		report.Facilities = append(report.Facilities, impact)
	}
	report.ExposedPatients = int32(len(exposed))
	if err := r.markRecalled(window, m, r.name); err != nil {
		return err
	}
	if err := recalls.Create(r.tx, report); err != nil {
		return err
	}
	if err := events.Append(r.tx, r.c, r.now, recalls.Change("recall.created", report, 1)); err != nil {
		return err
	}
	for _, impact := range report.GetFacilities() {
		if err := r.tx.Put(recallFacilityPrefix(impact.GetFacility())+strings.TrimPrefix(r.name, "recalls/"), nil); err != nil {
			return err
		}
		notice := recallFor(report, impact.GetFacility())
		change := recalls.Change("recall.notified", notice, 1)
		change.Facilities = []string{impact.GetFacility()}
		if err := events.Append(r.tx, r.c, r.now, change); err != nil {
			return err
		}
	}
	r.recall = report
	return nil
}

// windowLoad is a load of the recall window with its store version.
type windowLoad struct {
	load    *sterilizationv1.Load
	version uint64
}

// window returns the loads a BI failure puts in doubt: going back from the
// failed cycle to the last one whose BI passed (or that an earlier recall
// already covered), and forward to the sterilizer's latest cycle. Loads are
// keyed by sterilizer and cycle, so it reads exactly those loads and the
// one that bounds them.
func (r *recaller) window() ([]windowLoad, error) {
	lt := loadTable(r.failed.GetName())
	get := func(cycle int64) (*sterilizationv1.Load, uint64, bool, error) {
		if cycle == r.failed.GetCycleNumber() {
			return r.failed, 0, true, nil
		}
		load, version, err := lt.Get(r.tx, loadName(r.sterilizer.GetName(), cycle))
		if errors.Is(err, store.ErrNotFound) {
			return nil, 0, false, nil
		}
		return load, version, err == nil, err
	}
	var out []windowLoad
	for cycle := r.failed.GetCycleNumber() - 1; cycle >= 1; cycle-- {
		load, version, ok, err := get(cycle)
		if err != nil {
			return nil, err
		}
		if !ok || load.GetBiological() == sterilizationv1.Result_RESULT_PASS || load.GetState() == recalled {
			break
		}
		out = append(out, windowLoad{load, version})
	}
	slices.Reverse(out)
	for cycle := r.failed.GetCycleNumber(); cycle <= r.sterilizer.GetLastCycle(); cycle++ {
		load, version, ok, err := get(cycle)
		if err != nil {
			return nil, err
		}
		if ok && (load.GetState() != recalled || cycle == r.failed.GetCycleNumber()) {
			out = append(out, windowLoad{load, version})
		}
	}
	return out, nil
}

// markRecalled moves the window's loads that were not failed already to
// RECALLED (the failed load itself is saved by the caller), and sends the
// packages of a load still running back to be reprocessed.
func (r *recaller) markRecalled(window []windowLoad, m fsm.Machine[LoadState], recall string) error {
	reason := "biological indicator of " + r.failed.GetName() + " failed"
	for _, w := range window {
		load := w.load
		if !recallable(load) {
			continue
		}
		if load.GetState() == running {
			if err := r.s.reprocess(r.tx, r.c, r.now, load, "recalled: "+reason); err != nil {
				return err
			}
		}
		if err := m.Apply(load, recalled, r.c, r.now, reason); err != nil {
			return err
		}
		load.Recall = recall
		if load == r.failed {
			continue
		}
		resource.Stamp(load, r.now, false)
		lt := loadTable(load.GetName())
		if err := lt.Update(r.tx, load, w.version); err != nil {
			return err
		}
		if err := events.Append(r.tx, r.c, r.now, lt.Change("load.recalled", load, w.version+1)); err != nil {
			return err
		}
	}
	return nil
}

// recallable reports whether a load of the window is recalled: it has
// packages that left or may leave the CSSD, and no earlier recall or
// failure already dealt with them. Test cycles carry no packages.
func recallable(load *sterilizationv1.Load) bool {
	return len(load.GetPackages()) > 0 && (load.GetState() == running || load.GetState() == released)
}

// locate finds where one recalled package cycle is. A package still in
// that cycle is where its state says; one that has moved on was used on a
// patient in that cycle, or came back to the CSSD unused.
func (r *recaller) locate(load *sterilizationv1.Load, lp *sterilizationv1.LoadPackage) (*sterilizationv1.RecallItem, error) {
	item := &sterilizationv1.RecallItem{
		Recall: r.name, Package: lp.GetPackage(), Cycle: lp.GetCycle(), Load: load.GetName(),
		SetType: lp.GetSetType(), Owner: lp.GetFacility(), Implant: lp.GetImplant(),
		Location: sterilizationv1.RecallItem_LOCATION_IN_STORE, Facility: load.GetFacility(),
	}
	rec, err := r.tx.Get(packages.Key(lp.GetPackage()))
	if err != nil {
		return nil, err
	}
	p, err := readFacts(rec)
	if err != nil {
		return nil, err
	}
	if p.cycle != lp.GetCycle() {
		if rec, err = r.tx.Get(cycleKey(packageID(lp.GetPackage()), lp.GetCycle())); err != nil {
			return nil, err
		}
		if p, err = readFacts(rec); err != nil || p.use == nil {
			return item, err
		}
	}
	item.EarlyReleased = p.early
	switch {
	case p.use != nil:
		item.Location, item.Facility, item.Use = sterilizationv1.RecallItem_LOCATION_USED, p.use.GetFacility(), p.use
	case p.state == dispatched || p.state == received:
		item.Location, item.Facility = sterilizationv1.RecallItem_LOCATION_DISPATCHED, p.holder
	}
	return item, nil
}

// cycleFacts are what a recall needs of a stored package cycle.
type cycleFacts struct {
	cycle  int32
	state  State
	holder string
	use    *sterilizationv1.Use
	early  bool
}

// Field numbers of the Package fields readFacts reads.
const (
	fieldState        = 7
	fieldCycle        = 8
	fieldHolder       = 9
	fieldUse          = 17
	fieldEarlyRelease = 18
)

// readFacts reads those fields of a stored package and skips the rest, its
// timeline above all: a recall reads thousands of packages, and decoding
// their whole timelines was most of its time. TestFactFields keeps the
// numbers in step with the contract.
func readFacts(rec store.Record) (cycleFacts, error) {
	var f cycleFacts
	b := rec.Value
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return f, fmt.Errorf("decode %s: %w", rec.Key, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldState || num == fieldCycle):
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if num == fieldState {
				f.state = State(v)
			} else {
				f.cycle = int32(v)
			}
		case typ == protowire.BytesType && (num == fieldHolder || num == fieldUse || num == fieldEarlyRelease):
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n < 0 {
				break
			}
			switch num {
			case fieldHolder:
				f.holder = string(v)
			case fieldUse:
				f.use = &sterilizationv1.Use{}
				if err := proto.Unmarshal(v, f.use); err != nil {
					return f, fmt.Errorf("decode %s: %w", rec.Key, err)
				}
			case fieldEarlyRelease:
				f.early = true
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return f, fmt.Errorf("decode %s: %w", rec.Key, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return f, nil
}

// concernedFacility is the facility a recall item is notified to: where the
// package was found, or its owner when it was still at the CSSD.
func concernedFacility(item *sterilizationv1.RecallItem) string {
	if item.GetLocation() == sterilizationv1.RecallItem_LOCATION_IN_STORE {
		return item.GetOwner()
	}
	return item.GetFacility()
}

// recallFor is the recall as facility sees it: only its own figures.
func recallFor(r *sterilizationv1.Recall, facility string) *sterilizationv1.Recall {
	out := proto.CloneOf(r)
	out.Facilities, out.Packages, out.InStore, out.Dispatched, out.Used, out.ExposedPatients = nil, 0, 0, 0, 0, 0
	for _, impact := range r.GetFacilities() {
		if impact.GetFacility() == facility {
			out.Facilities = []*sterilizationv1.RecallImpact{impact}
			out.InStore, out.Dispatched, out.Used = impact.GetInStore(), impact.GetDispatched(), impact.GetUsed()
			out.Packages = out.InStore + out.Dispatched + out.Used
			out.ExposedPatients = impact.GetExposedPatients()
		}
	}
	return out
}

// visibleRecall returns a recall as the caller may see it: whole for its
// CSSD and administrators, a facility's own share for an affected
// facility, and not found for anyone else.
func (s *Service) visibleRecall(ctx context.Context, c auth.Caller, name string) (*sterilizationv1.Recall, error) {
	r, err := recalls.Load(ctx, s.store, c.Partition(), name)
	if err != nil {
		return nil, err
	}
	if c.SeesCommunity() || r.GetFacility() == c.Facility {
		return r, nil
	}
	for _, impact := range r.GetFacilities() {
		if impact.GetFacility() == c.Facility {
			return recallFor(r, c.Facility), nil
		}
	}
	return nil, notFound(name)
}

// GetRecall returns a recall report.
func (s *Service) GetRecall(ctx context.Context, req *sterilizationv1.GetRecallRequest) (*sterilizationv1.GetRecallResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.visibleRecall(ctx, c, req.GetName())
	if err != nil {
		return nil, err
	}
	return &sterilizationv1.GetRecallResponse{Recall: r}, nil
}

// ListRecalls lists the recalls the caller may see, oldest first: a CSSD's
// own from the recall keys, a clinic's from its index of the recalls that
// concern it.
func (s *Service) ListRecalls(ctx context.Context, req *sterilizationv1.ListRecallsRequest) (*sterilizationv1.ListRecallsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	prefix := recallFacilityPrefix(c.Facility)
	if c.SeesCommunity() || c.Has(typev1.Role_ROLE_CSSD_OPERATOR) {
		prefix = recalls.Prefix
	}
	resp := &sterilizationv1.ListRecallsResponse{}
	resp.NextPageToken, err = s.page(ctx, c, prefix, "recalls|"+c.Facility+"|"+prefix, req.GetPageToken(), req.GetPageSize(), func(rec store.Record) (bool, error) {
		r, err := s.visibleRecall(ctx, c, recalls.Name(strings.TrimPrefix(rec.Key, prefix)))
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		resp.Recalls = append(resp.Recalls, r)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ListRecallItems lists a recall's package cycles and where each was
// found; a clinic sees only those that concern it.
func (s *Service) ListRecallItems(ctx context.Context, req *sterilizationv1.ListRecallItemsRequest) (*sterilizationv1.ListRecallItemsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.visibleRecall(ctx, c, req.GetParent())
	if err != nil {
		return nil, err
	}
	whole := c.SeesCommunity() || r.GetFacility() == c.Facility
	filter := fmt.Sprintf("%s|%s|%d", req.GetParent(), c.Facility, req.GetLocation())
	resp := &sterilizationv1.ListRecallItemsResponse{}
	resp.NextPageToken, err = s.page(ctx, c, recallItemPrefix(req.GetParent()), filter, req.GetPageToken(), req.GetPageSize(), func(rec store.Record) (bool, error) {
		item := &sterilizationv1.RecallItem{}
		if err := proto.Unmarshal(rec.Value, item); err != nil {
			return false, fmt.Errorf("decode %s: %w", rec.Key, err)
		}
		if req.GetLocation() != 0 && item.GetLocation() != req.GetLocation() {
			return false, nil
		}
		if !whole && concernedFacility(item) != c.Facility && item.GetOwner() != c.Facility {
			return false, nil
		}
		if !whole && item.GetUse().GetFacility() != c.Facility && item.GetUse() != nil {
			item.Use.Patient = ""
		}
		resp.Items = append(resp.Items, item)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// page lists one page of the records under prefix for a List method whose
// filters filter describes: the page token's check, the bounded scan, the
// next token.
func (s *Service) page(ctx context.Context, c auth.Caller, prefix, filter, token string, size int32, keep func(store.Record) (bool, error)) (string, error) {
	after, err := paging.Decode(token, filter)
	if err != nil {
		return "", err
	}
	last, err := paging.Scan(ctx, s.store, c.Partition(), prefix, after, paging.Size(size), keep)
	if err != nil || last == "" {
		return "", err
	}
	return paging.Encode(last, filter), nil
}

// putProto stores a record that is not a resource (an ended cycle, a
// recall item) as a binary proto.
func putProto(tx store.Tx, key string, msg proto.Message) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return err
	}
	return tx.Put(key, data)
}

// slicesSorted returns the keys of m in order, so reports come out the same
// on every run.
func slicesSorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
