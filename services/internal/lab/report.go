package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// Reports are stored at rep/{barcode}, one per specimen.
var reports = resource.Table[*labv1.Report]{
	Collection: "reports",
	Prefix:     "rep/",
	New:        func() *labv1.Report { return &labv1.Report{} },
	Event:      "report",
	// A report's events concern the requesting facility (this is how it is
	// notified of a release or an amendment) and the lab center.
	Facilities: func(r *labv1.Report) []string { return []string{r.GetRequestingFacility(), r.GetLabFacility()} },
}

// ReportMachine is the report's life: entered (and re-entered) as
// preliminary, verified into final, then amended any number of times.
func ReportMachine() fsm.Machine[labv1.Report_State] {
	const (
		preliminary = labv1.Report_STATE_PRELIMINARY
		final       = labv1.Report_STATE_FINAL
		amended     = labv1.Report_STATE_AMENDED
	)
	return fsm.Machine[labv1.Report_State]{
		Kind: "report",
		Moves: map[labv1.Report_State][]labv1.Report_State{
			labv1.Report_STATE_UNSPECIFIED: {preliminary},
			preliminary:                    {preliminary, final},
			final:                          {amended},
			amended:                        {amended},
		},
	}
}

// Reasons of refused report operations.
const (
	ReasonSamePerson        = "SAME_PERSON"
	ReasonResultsIncomplete = "RESULTS_INCOMPLETE"
)

// reported is what an instrument said about a result besides its value.
type reported struct{ rangeText, flag string }

// EnterResults enters results into the preliminary report of a specimen in
// testing.
func (s *Service) EnterResults(ctx context.Context, req *labv1.EnterResultsRequest) (*labv1.EnterResultsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	var out *labv1.Report
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		var err error
		out, err = s.enter(tx, c, now, reports.ID(req.GetName()), req.GetEtag(), req.GetResults(), nil, "results")
		return err
	})
	if err != nil {
		return nil, err
	}
	return &labv1.EnterResultsResponse{Report: out}, nil
}

// enter evaluates results for the specimen barcode and stores them in its
// preliminary report, inside tx. Field is the request field of inputs, for
// errors.
func (s *Service) enter(tx store.Tx, c auth.Caller, now time.Time, barcode, etag string, inputs []*labv1.ResultInput, extra map[string]reported, field string) (*labv1.Report, error) {
	name := reports.Name(barcode)
	sp, _, err := specimens.Get(tx, specimens.Name(barcode))
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, err
	}
	if err := atLab(c, name, sp.GetRequestingFacility(), sp.GetLabFacility()); err != nil {
		return nil, err
	}
	rep, version, err := reports.Get(tx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		rep = &labv1.Report{
			Name: name, Specimen: sp.GetName(), Order: sp.GetOrder(),
			RequestingFacility: sp.GetRequestingFacility(), LabFacility: sp.GetLabFacility(),
		}
		resource.Stamp(rep, now, true)
	case err != nil:
		return nil, err
	default:
		if err := resource.CheckEtag(name, etag, version); err != nil {
			return nil, err
		}
	}
	if err := s.reportM.Check(rep.GetState(), labv1.Report_STATE_PRELIMINARY); err != nil {
		return nil, err
	}
	if sp.GetState() != labv1.Specimen_STATE_IN_TESTING {
		return nil, apierr.Condition(ReasonSpecimenNotTesting, "%s is %s, not in testing", sp.GetName(), sp.GetState())
	}
	o, _, err := orders.Get(tx, sp.GetOrder())
	if err != nil {
		return nil, err
	}
	rep.Patient = o.GetPatient()
	results, err := s.evaluateAll(tx, o, sp, inputs, extra, field)
	if err != nil {
		return nil, err
	}
	rep.Results = merge(sp.GetTests(), rep.GetResults(), results)
	rep.EnteredBy, rep.EnterTime = c.Subject, timestamppb.New(now)
	if err := s.reportM.Apply(rep, labv1.Report_STATE_PRELIMINARY, c, now, ""); err != nil {
		return nil, err
	}
	if version == 0 {
		err = reports.Create(tx, rep)
	} else {
		err = reports.Update(tx, rep, version)
	}
	if err != nil {
		return nil, err
	}
	return rep, events.Append(tx, c, now, reports.Change(reports.Event+".preliminary", rep, version+1))
}

// evaluateAll evaluates the inputs of one specimen: each must be one of
// its tests, once.
func (s *Service) evaluateAll(tx store.Tx, o *labv1.Order, sp *labv1.Specimen, inputs []*labv1.ResultInput, extra map[string]reported, field string) ([]*labv1.Result, error) {
	lookup := s.testsIn(tx)
	age := ageDays(o.GetPatientBirthDate(), sp.GetCollectTime().AsTime())
	seen := map[string]bool{}
	var out []*labv1.Result
	for i, in := range inputs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !slices.Contains(sp.GetTests(), in.GetCode()) {
			return nil, apierr.Invalid(f+".code", "%s was not ordered on %s", in.GetCode(), sp.GetName())
		}
		if seen[in.GetCode()] {
			return nil, apierr.Invalid(f+".code", "%s is given twice", in.GetCode())
		}
		seen[in.GetCode()] = true
		t, ok, err := lookup(in.GetCode())
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, apierr.Invalid(f+".code", "unknown test code %q", in.GetCode())
		}
		r, err := evaluate(f, t, in, o.GetPatientSex(), age)
		if err != nil {
			return nil, err
		}
		if x, ok := extra[in.GetCode()]; ok {
			r.ReportedRange, r.ReportedFlag = x.rangeText, x.flag
		}
		out = append(out, r)
	}
	return out, nil
}

// ageDays is the age in days at a time, or 0 when the birth date is not
// known.
func ageDays(birth string, at time.Time) int {
	b, err := time.Parse(time.DateOnly, birth)
	if err != nil || at.Before(b) {
		return 0
	}
	return int(at.Sub(b).Hours() / 24)
}

// merge replaces the results of the same tests and keeps them in the
// specimen's test order.
func merge(order []string, old, updated []*labv1.Result) []*labv1.Result {
	byCode := map[string]*labv1.Result{}
	for _, r := range old {
		byCode[r.GetCode()] = r
	}
	for _, r := range updated {
		byCode[r.GetCode()] = r
	}
	var out []*labv1.Result
	for _, code := range order {
		if r, ok := byCode[code]; ok {
			out = append(out, r)
		}
	}
	return out
}

// GetReport returns a report the caller may see.
func (s *Service) GetReport(ctx context.Context, req *labv1.GetReportRequest) (*labv1.GetReportResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	r, err := reports.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	if !sees(c, r.GetRequestingFacility(), r.GetLabFacility()) {
		return nil, notFound(req.GetName())
	}
	return &labv1.GetReportResponse{Report: r}, nil
}

// VerifyReport verifies and releases a preliminary report. In the same
// transaction the specimen is done, the order completed when this was its
// last test, a critical notification opened for every LL or HH result, and
// the specimen's figures recorded for the statistics.
func (s *Service) VerifyReport(ctx context.Context, req *labv1.VerifyReportRequest) (*labv1.VerifyReportResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	out, err := fsm.Transition(ctx, s.store, reports, s.reportM, c, now, fsm.Step[*labv1.Report, labv1.Report_State]{
		Name: req.GetName(), Etag: req.GetEtag(), To: labv1.Report_STATE_FINAL,
		Before: func(_ store.Tx, r *labv1.Report) error {
			if err := atLab(c, r.GetName(), r.GetRequestingFacility(), r.GetLabFacility()); err != nil {
				return err
			}
			if r.GetEnteredBy() == c.Subject {
				return apierr.Condition(ReasonSamePerson, "%s entered these results; another person must verify them", c.Subject)
			}
			return nil
		},
		After: func(tx store.Tx, r *labv1.Report) error { return s.release(tx, c, now, r) },
	})
	if err != nil {
		return nil, err
	}
	return &labv1.VerifyReportResponse{Report: out}, nil
}

// release does what the first release of a report changes besides the
// report.
func (s *Service) release(tx store.Tx, c auth.Caller, now time.Time, r *labv1.Report) error {
	sp, spVersion, err := specimens.Get(tx, r.GetSpecimen())
	if err != nil {
		return err
	}
	if len(r.GetResults()) != len(sp.GetTests()) {
		return apierr.Condition(ReasonResultsIncomplete, "%s has %d of its %d results", r.GetName(), len(r.GetResults()), len(sp.GetTests()))
	}
	r.Version = 1
	r.VerifiedBy, r.VerifyTime = c.Subject, timestamppb.New(now)
	if err := s.specimenM.Apply(sp, labv1.Specimen_STATE_DONE, c, now, ""); err != nil {
		return err
	}
	if err := specimens.Update(tx, sp, spVersion); err != nil {
		return err
	}
	if err := events.Append(tx, c, now, specimens.Change(specimens.Event+".done", sp, spVersion+1)); err != nil {
		return err
	}
	o, _, err := orders.Get(tx, r.GetOrder())
	if err != nil {
		return err
	}
	if err := s.completeOrder(tx, c, now, o, sp.GetTests()); err != nil {
		return err
	}
	crits, err := s.openCriticals(tx, c, now, o, r, r.GetResults())
	if err != nil {
		return err
	}
	return putFact(tx, doneFact(o, sp, r, crits, now))
}

// completeOrder records tests as final and completes the order when all
// its tests are.
func (s *Service) completeOrder(tx store.Tx, c auth.Caller, now time.Time, o *labv1.Order, done []string) error {
	for _, code := range done {
		if err := tx.Put(orderDoneKey(o.GetName(), code), nil); err != nil {
			return err
		}
	}
	for _, code := range o.GetTests() {
		if _, err := tx.Get(orderDoneKey(o.GetName(), code)); errors.Is(err, store.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
	}
	return s.advanceOrder(tx, c, now, o.GetName(), labv1.Order_STATE_IN_PROGRESS, labv1.Order_STATE_COMPLETED)
}

// openCriticals opens a critical notification for each critical result of
// results, to the ordering facility and clinician, and records them on the
// report. It returns the test code of each notification by name.
func (s *Service) openCriticals(tx store.Tx, c auth.Caller, now time.Time, o *labv1.Order, r *labv1.Report, results []*labv1.Result) (map[string]string, error) {
	out := map[string]string{}
	for _, res := range results {
		if !isCritical(res.GetFlag()) {
			continue
		}
		n, err := s.critical.Open(tx, c, now, critical.Notice{
			Subject:   r.GetName(),
			Order:     o.GetName(),
			Patient:   o.GetPatient(),
			Item:      &typev1.Code{System: loincSystem, Code: res.GetCode(), Display: res.GetDisplay()},
			Value:     strconv.FormatFloat(res.GetValue(), 'f', -1, 64) + " " + res.GetUnit(),
			Flag:      flagCode(res.GetFlag()),
			Center:    o.GetLabFacility(),
			Facility:  o.GetRequestingFacility(),
			Clinician: o.GetClinician(),
		})
		if err != nil {
			return nil, err
		}
		r.CriticalNotifications = append(r.CriticalNotifications, n.GetName())
		out[n.GetName()] = res.GetCode()
	}
	return out, nil
}

// AmendReport amends a released report: the released version moves into
// the history, the corrected results replace those of the same tests, and
// a result that becomes critical opens a notification.
func (s *Service) AmendReport(ctx context.Context, req *labv1.AmendReportRequest) (*labv1.AmendReportResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	out, err := fsm.Transition(ctx, s.store, reports, s.reportM, c, now, fsm.Step[*labv1.Report, labv1.Report_State]{
		Name: req.GetName(), Etag: req.GetEtag(), To: labv1.Report_STATE_AMENDED, Reason: req.GetReason(),
		Before: func(_ store.Tx, r *labv1.Report) error {
			if err := atLab(c, r.GetName(), r.GetRequestingFacility(), r.GetLabFacility()); err != nil {
				return err
			}
			// The earlier version is recorded before the move changes
			// the state.
			r.History = append(r.History, &labv1.ReportVersion{
				Version: r.GetVersion(), State: r.GetState(), Results: r.GetResults(),
				VerifiedBy: r.GetVerifiedBy(), VerifyTime: r.GetVerifyTime(),
				AmendmentReason: r.GetAmendmentReason(), SupersedeTime: timestamppb.New(now),
			})
			return nil
		},
		After: func(tx store.Tx, r *labv1.Report) error {
			sp, _, err := specimens.Get(tx, r.GetSpecimen())
			if err != nil {
				return err
			}
			o, _, err := orders.Get(tx, r.GetOrder())
			if err != nil {
				return err
			}
			changed, err := s.evaluateAll(tx, o, sp, req.GetResults(), nil, "results")
			if err != nil {
				return err
			}
			var newlyCritical []*labv1.Result
			for _, res := range changed {
				if isCritical(res.GetFlag()) && !wasCritical(r.GetResults(), res) {
					newlyCritical = append(newlyCritical, res)
				}
			}
			r.Results = merge(sp.GetTests(), cloneResults(r.GetResults()), changed)
			r.Version++
			r.AmendmentReason = req.GetReason()
			r.EnteredBy, r.EnterTime = c.Subject, timestamppb.New(now)
			r.VerifiedBy, r.VerifyTime = c.Subject, timestamppb.New(now)
			_, err = s.openCriticals(tx, c, now, o, r, newlyCritical)
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	return &labv1.AmendReportResponse{Report: out}, nil
}

// wasCritical reports whether the result of the same test was critical with
// the same value already, in which case its notification exists.
func wasCritical(old []*labv1.Result, r *labv1.Result) bool {
	for _, o := range old {
		if o.GetCode() == r.GetCode() {
			return isCritical(o.GetFlag()) && o.GetValue() == r.GetValue()
		}
	}
	return false
}

func cloneResults(rs []*labv1.Result) []*labv1.Result {
	out := make([]*labv1.Result, len(rs))
	for i, r := range rs {
		out[i] = proto.CloneOf(r)
	}
	return out
}
