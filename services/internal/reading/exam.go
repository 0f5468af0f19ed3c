package reading

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The exam keys of a community partition:
//
//	exam/{id}                               the exam (IDs are UUIDv7: oldest first)
//	byfac/{facility}/{id}                   the exams a facility requested
//	wl/{center}/{rank}/{due}/{id}           a center's pending exams, expedited (rank 0) first, then by due time
//	open/{center}/{exam type}               how many exams of the type are open at the center
//	load/{center}/{reader}                  how many open exams a reader has
//
// The indexes and counters follow from the exam's fields alone
// (footprint), so every change keeps them in step the same way (settle).
var exams = resource.Table[*typev1.Exam]{
	Collection: "exams",
	Prefix:     "exam/",
	New:        func() *typev1.Exam { return &typev1.Exam{} },
	Event:      "exam",
	// An exam's events concern the requester, which is how it learns of
	// arrivals, rejections, releases and amendments, and the center.
	Facilities: func(e *typev1.Exam) []string { return []string{e.GetRequestingFacility(), e.GetCenterFacility()} },
	Snapshot:   func(e *typev1.Exam) proto.Message { return examSnapshot(e) },
}

// timerTurnaround is the kind of the turnaround deadline of an exam.
const timerTurnaround = "turnaround"

// noDue sorts after every due time in the worklist: an exam whose material
// has not arrived has no deadline yet.
const noDue = "99999999999999999999"

// Side is who may make a change to an exam.
type Side uint8

// The sides.
const (
	// ByRequester is the requesting facility.
	ByRequester Side = 1 << iota
	// ByCenter is the center's facility.
	ByCenter
	// ByEither is both.
	ByEither = ByRequester | ByCenter
)

// sees reports whether c may read an exam: its requester, its center, and
// those who see the whole community.
func sees(c auth.Caller, e *typev1.Exam) bool {
	return c.SeesCommunity() || c.Facility == e.GetRequestingFacility() || c.Facility == e.GetCenterFacility()
}

// notFound is the error of a missing exam and of one the caller may not
// see, so that existence does not leak across facilities.
func notFound(name string) error { return fmt.Errorf("%s: %w", name, store.ErrNotFound) }

// may checks that c may make a change reserved to side.
func may(c auth.Caller, e *typev1.Exam, side Side) error {
	if !sees(c, e) {
		return notFound(e.GetName())
	}
	if side&ByRequester != 0 && c.Facility == e.GetRequestingFacility() {
		return nil
	}
	if side&ByCenter != 0 && c.Facility == e.GetCenterFacility() {
		return nil
	}
	who := "the requesting facility"
	if side == ByCenter {
		who = "the center"
	}
	return fmt.Errorf("only %s may do this to %s: %w", who, e.GetName(), apierr.ErrPermissionDenied)
}

// step is one transaction on an exam: the exam as it changes, and the
// events the change will append once it is saved.
type step struct {
	f       *Flow
	tx      store.Tx
	c       auth.Caller
	now     time.Time
	e       *typev1.Exam
	verbs   []string
	reports []string
}

// move moves the exam through the state machine and records the event.
func (s *step) move(to State, reason string) error {
	if err := s.f.machine.Apply(s.e, to, s.c, s.now, reason); err != nil {
		return err
	}
	s.verbs = append(s.verbs, fsm.EventName(to))
	return nil
}

// note records an event that is not a move (an alert, an addendum).
func (s *step) note(verb string) { s.verbs = append(s.verbs, verb) }

// report records a report event (`report.final`, ...).
func (s *step) report(verb string) { s.reports = append(s.reports, verb) }

// flush appends the recorded events, each with the exam as saved.
func (s *step) flush(version uint64) error {
	for _, verb := range s.verbs {
		if err := events.Append(s.tx, s.c, s.now, exams.Change(exams.Event+"."+verb, s.e, version)); err != nil {
			return err
		}
	}
	for _, verb := range s.reports {
		r := reportOf(s.e)
		change := events.Change{Type: "report." + verb, Resource: r.GetName(), Version: version, Facilities: exams.Facilities(s.e), Snapshot: reportSnapshot(r)}
		if err := events.Append(s.tx, s.c, s.now, change); err != nil {
			return err
		}
	}
	return nil
}

// change runs one change to an exam in one transaction: it reads the exam,
// checks the caller's side and the etag, lets do change it, and saves it
// with its footprint and events. A do that records no event changes
// nothing.
func (f *Flow) change(ctx context.Context, c auth.Caller, name, etag string, side Side, do func(*step) error) (*typev1.Exam, error) {
	now := f.clock.Now()
	var out *typev1.Exam
	err := f.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		e, version, err := exams.Get(tx, name)
		if err != nil {
			return err
		}
		if err := may(c, e, side); err != nil {
			return err
		}
		if err := resource.CheckEtag(name, etag, version); err != nil {
			return err
		}
		before := footprintOf(e)
		s := &step{f: f, tx: tx, c: c, now: now, e: e}
		if err := do(s); err != nil {
			return err
		}
		out = e
		if len(s.verbs) == 0 && len(s.reports) == 0 {
			return nil
		}
		resource.Stamp(e, now, false)
		if err := settle(tx, before, e); err != nil {
			return err
		}
		if err := exams.Update(tx, e, version); err != nil {
			return err
		}
		return s.flush(version + 1)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// createExam creates an exam for the caller's facility. The exam type,
// the patient and the center are checked first, then the center's Prepare
// (the PACS); only then does the transaction run, so a failure of any of
// them writes nothing.
func (f *Flow) createExam(ctx context.Context, c auth.Caller, in *typev1.Exam, requestID string) (*typev1.Exam, error) {
	p := c.Partition()
	et, err := f.activeType(f.catalog.outside(ctx, f.store, p), in.GetExamType().GetCode(), "exam.exam_type")
	if err != nil {
		return nil, err
	}
	patient, center, err := f.fromDirectory(ctx, c, in.GetPatient())
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := f.clock.Now()
	e := &typev1.Exam{
		Name:               exams.Name(id.String()),
		Center:             f.center.Kind,
		RequestingFacility: c.Facility,
		CenterFacility:     center,
		Clinician:          c.Subject,
		Patient:            in.GetPatient(),
		ExamType:           proto.CloneOf(et.GetCode()),
		Priority:           in.GetPriority(),
		PatientClass:       in.GetPatientClass(),
		ClinicalNote:       in.GetClinicalNote(),
	}
	if study := in.GetStudy(); study != nil {
		e.Material = &typev1.Exam_Study{Study: &typev1.ImagingStudy{StudyInstanceUid: study.GetStudyInstanceUid()}}
	}
	resource.Stamp(e, now, true)
	var prep Prepared
	if f.center.Prepare != nil {
		if prep, err = f.center.Prepare(ctx, c, e, patient, et); err != nil {
			return nil, err
		}
	}
	var duty []duty
	if prep.Arrived {
		if duty, err = f.onDuty(ctx, p, center, et.GetCode().GetCode(), now); err != nil {
			return nil, err
		}
	}
	var out *typev1.Exam
	err = f.store.Txn(ctx, p, func(tx store.Tx) error {
		if name, found, err := idem.Lookup(tx, c, requestID); err != nil || found {
			if err == nil {
				out, _, err = exams.Get(tx, name)
			}
			return err
		}
		s := &step{f: f, tx: tx, c: c, now: now, e: clone(e)}
		if err := s.move(Requested, ""); err != nil {
			return err
		}
		if prep.Write != nil {
			if err := prep.Write(tx, s.e); err != nil {
				return err
			}
		}
		if prep.Arrived {
			if err := f.arrive(s, et, duty); err != nil {
				return err
			}
		}
		if err := settle(tx, footprint{}, s.e); err != nil {
			return err
		}
		if err := tx.Put(byFacilityKey(s.e), nil); err != nil {
			return err
		}
		if err := exams.Create(tx, s.e); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, requestID, s.e.GetName()); err != nil {
			return err
		}
		out = s.e
		return s.flush(1)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// arrive moves an exam whose material has arrived into the center's pool,
// starts its turnaround clock, and gives it to the reader on duty with the
// fewest open exams, if a shift covers it.
func (f *Flow) arrive(s *step, et *typev1.ExamType, duty []duty) error {
	e := s.e
	if err := s.move(Arrived, ""); err != nil {
		return err
	}
	e.ArriveTime = timestamppb.New(s.now)
	others, err := counter(s.tx, openKey(e))
	if err != nil {
		return err
	}
	due, err := f.dueTime(et, e, s.now, others > 0)
	if err != nil {
		return err
	}
	e.DueTime = timestamppb.New(due)
	f.expediteDue(et, e)
	reader, err := pick(s.tx, e.GetCenterFacility(), duty)
	if err != nil || reader == "" {
		return err
	}
	// The rota assigns, not whoever brought the material: the timeline
	// names the service at the center.
	rota := f.systemCaller(s.c.Community, e.GetCenterFacility())
	if err := f.machine.Apply(e, Assigned, rota, s.now, "duty rota"); err != nil {
		return err
	}
	e.Reader = reader
	s.note(fsm.EventName(Assigned))
	return nil
}

// Edit is what a center's own change to an exam sees inside the
// transaction that makes it. The change may write keys of its own through
// Tx, and may run more than once.
type Edit struct {
	// Tx is the transaction.
	Tx store.Tx
	// Caller is who makes the change.
	Caller auth.Caller
	// Now is the change's time.
	Now time.Time
	// Exam is the exam, to change in place.
	Exam *typev1.Exam
	// Type is the exam's type.
	Type *typev1.ExamType
}

// edit is the Edit of a step, with the exam's type.
func (f *Flow) edit(s *step) (*Edit, error) {
	et, err := f.typeOf(s.tx, s.e)
	if err != nil {
		return nil, err
	}
	return &Edit{Tx: s.tx, Caller: s.c, Now: s.now, Exam: s.e, Type: et}, nil
}

// Arrive records the arrival of an exam's material at the center, for the
// services whose material follows the request (an ECG recording, a
// pathology case's specimens). material adds the center's part to the exam
// and returns the verbs of any alert events to append ("fixation_delayed").
// The exam then arrives like one created with its material.
func (f *Flow) Arrive(ctx context.Context, name, etag string, side Side, material func(*Edit) ([]string, error)) (*typev1.Exam, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	seen, err := f.get(ctx, c, name)
	if err != nil {
		return nil, err
	}
	duty, err := f.onDuty(ctx, c.Partition(), seen.GetCenterFacility(), seen.GetExamType().GetCode(), f.clock.Now())
	if err != nil {
		return nil, err
	}
	return f.change(ctx, c, name, etag, side, func(s *step) error {
		if err := f.machine.Check(s.e.GetState(), Arrived); err != nil {
			return err
		}
		ed, err := f.edit(s)
		if err != nil {
			return err
		}
		alerts, err := material(ed)
		if err != nil {
			return err
		}
		if err := f.arrive(s, ed.Type, duty); err != nil {
			return err
		}
		for _, verb := range alerts {
			s.note(verb)
		}
		return nil
	})
}

// Update changes what the center keeps about an open exam without moving
// it (a pathology case's gross description, an ECG pre-read's
// confirmation), and appends the event `exam.<verb>`.
func (f *Flow) Update(ctx context.Context, name, etag string, side Side, verb string, do func(*Edit) error) (*typev1.Exam, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	return f.change(ctx, c, name, etag, side, func(s *step) error {
		if !open(s.e.GetState()) {
			return apierr.Condition(ReasonExamClosed, "%s is %s: only an exam whose material arrived and whose report is not released can change", s.e.GetName(), stateName(s.e.GetState()))
		}
		ed, err := f.edit(s)
		if err != nil {
			return err
		}
		if err := do(ed); err != nil {
			return err
		}
		s.note(verb)
		return nil
	})
}

// Expedite moves a pending exam to the top of its center's worklist for a
// coded reason (a suspected STEMI): once its material has arrived, its
// report is due within the exam type's expedite limit. Expediting an
// expedited exam changes nothing.
func (f *Flow) Expedite(ctx context.Context, name, etag string, side Side, reason *typev1.Code) (*typev1.Exam, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	return f.change(ctx, c, name, etag, side, func(s *step) error {
		if !pending(s.e.GetState()) {
			return apierr.Condition(ReasonExamClosed, "%s is %s: only an exam not yet released can be expedited", s.e.GetName(), stateName(s.e.GetState()))
		}
		if s.e.GetExpedited() != nil {
			return nil
		}
		et, err := f.typeOf(s.tx, s.e)
		if err != nil {
			return err
		}
		s.e.Expedited = &typev1.ExamFlag{Reason: proto.CloneOf(reason), Actor: s.c.Actor(), Time: timestamppb.New(s.now)}
		f.expediteDue(et, s.e)
		s.note("expedited")
		return nil
	})
}

// expediteDue brings the due time of an expedited exam whose material has
// arrived forward to the exam type's expedite limit after the arrival.
func (f *Flow) expediteDue(et *typev1.ExamType, e *typev1.Exam) {
	limit := et.GetExpediteLimit().AsDuration()
	if e.GetExpedited() == nil || e.GetArriveTime() == nil || limit <= 0 {
		return
	}
	if due := e.GetArriveTime().AsTime().Add(limit); e.GetDueTime() == nil || due.Before(e.GetDueTime().AsTime()) {
		e.DueTime = timestamppb.New(due)
	}
}

// Get returns an exam the caller of ctx may see, for a center's own RPCs.
func (f *Flow) Get(ctx context.Context, name string) (*typev1.Exam, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	return f.get(ctx, c, name)
}

func (f *Flow) get(ctx context.Context, c auth.Caller, name string) (*typev1.Exam, error) {
	e, err := exams.Load(ctx, f.store, c.Partition(), name)
	if err != nil {
		return nil, err
	}
	if !sees(c, e) {
		return nil, notFound(name)
	}
	return e, nil
}

// listExams lists the exams the caller's facility requested, or, for
// those who see the whole community, every exam.
func (f *Flow) listExams(ctx context.Context, c auth.Caller, token string, size int32, state State) ([]*typev1.Exam, string, error) {
	prefix := "byfac/" + facilityID(c.Facility) + "/"
	if c.SeesCommunity() {
		prefix = exams.Prefix
	}
	return f.scanExams(ctx, c, prefix, token, size, fmt.Sprint(state), func(e *typev1.Exam) bool {
		return state == 0 || e.GetState() == state
	})
}

// worklist lists the pending exams of the caller's center: expedited ones
// first, then by due time, those still waiting for their material last.
func (f *Flow) worklist(ctx context.Context, c auth.Caller, token string, size int32, state State, mine bool, examType string) ([]*typev1.Exam, string, error) {
	filter := fmt.Sprintf("%d|%t|%s", state, mine, examType)
	return f.scanExams(ctx, c, worklistPrefix(c.Facility), token, size, filter, func(e *typev1.Exam) bool {
		return (state == 0 || e.GetState() == state) && (!mine || e.GetReader() == c.Subject) &&
			(examType == "" || e.GetExamType().GetCode() == examType)
	})
}

// scanExams pages through exam keys or an index whose keys end in exam
// IDs, keeping the exams keep accepts.
func (f *Flow) scanExams(ctx context.Context, c auth.Caller, prefix, token string, size int32, filter string, keep func(*typev1.Exam) bool) ([]*typev1.Exam, string, error) {
	p := c.Partition()
	filter = "exams|" + prefix + "|" + filter
	after, err := paging.Decode(token, filter)
	if err != nil {
		return nil, "", err
	}
	var out []*typev1.Exam
	last, err := paging.Scan(ctx, f.store, p, prefix, after, paging.Size(size), func(rec store.Record) (bool, error) {
		var e *typev1.Exam
		var err error
		if prefix == exams.Prefix {
			e, err = exams.Decode(rec)
		} else {
			e, err = exams.Load(ctx, f.store, p, exams.Name(rec.Key[strings.LastIndexByte(rec.Key, '/')+1:]))
		}
		if err != nil || !keep(e) {
			return false, err
		}
		out = append(out, e)
		return true, nil
	})
	if err != nil || last == "" {
		return out, "", err
	}
	return out, paging.Encode(last, filter), nil
}

// cancel cancels an exam that nobody has reported on, for its requester.
func (f *Flow) cancel(ctx context.Context, c auth.Caller, name, etag, reason string) (*typev1.Exam, error) {
	return f.change(ctx, c, name, etag, ByRequester, func(s *step) error { return s.move(Cancelled, reason) })
}

// reject rejects an exam's material with one of its type's coded reasons.
// The requester learns of it from the `exam.rejected` event.
func (f *Flow) reject(ctx context.Context, c auth.Caller, name, etag, code, note string) (*typev1.Exam, error) {
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		et, err := f.typeOf(s.tx, s.e)
		if err != nil {
			return err
		}
		reason, ok := findCode(et.GetRejectionReasons(), code)
		if !ok {
			return apierr.Invalid("reason", "%q is not a rejection reason of %s (%s)", code, et.GetCode().GetCode(), codeList(et.GetRejectionReasons()))
		}
		if err := s.move(Rejected, reason.GetCode()); err != nil {
			return err
		}
		s.e.Rejection = &typev1.ExamRejection{Reason: reason, Note: note}
		return nil
	})
}

// assign gives an exam to a reader, or to the caller when reader is
// empty (a claim from the pool). Taking an exam from its reader needs a
// reason, which the timeline keeps.
func (f *Flow) assign(ctx context.Context, c auth.Caller, name, etag, reader, reason string) (*typev1.Exam, error) {
	if reader == "" {
		if !c.Has(f.center.Reader) {
			return nil, apierr.Invalid("reader", "is required: the caller is not a reader and cannot claim the exam")
		}
		reader = c.Subject
	}
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		if s.e.GetReader() == reader && s.e.GetState() == Assigned {
			return nil
		}
		if s.e.GetReader() != "" && reason == "" {
			return apierr.Invalid("reason", "is required: %s is read by %s", name, s.e.GetReader())
		}
		if reason == "" {
			reason = "claimed"
			if reader != c.Subject {
				reason = "assigned by " + c.Subject
			}
		}
		if err := s.move(Assigned, reason); err != nil {
			return err
		}
		s.e.Reader = reader
		return nil
	})
}

// recordDelay records why an exam's report is late.
func (f *Flow) recordDelay(ctx context.Context, c auth.Caller, name, etag, code, note string) (*typev1.Exam, error) {
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		if !open(s.e.GetState()) {
			return apierr.Condition(ReasonExamClosed, "%s is %s: a delay is recorded while the exam is read", name, stateName(s.e.GetState()))
		}
		et, err := f.typeOf(s.tx, s.e)
		if err != nil {
			return err
		}
		reason, ok := findCode(et.GetDelayReasons(), code)
		if !ok {
			return apierr.Invalid("reason", "%q is not a delay reason of %s (%s)", code, et.GetCode().GetCode(), codeList(et.GetDelayReasons()))
		}
		s.e.Delay = &typev1.ExamDelay{Reason: reason, Note: note, Actor: s.c.Actor(), Time: timestamppb.New(s.now)}
		s.note("delay_recorded")
		return nil
	})
}

// turnaroundBreached marks an exam overdue when its turnaround deadline
// passes before its report is released, and raises the alert event
// `exam.turnaround_breached` to the center and the requester. It is
// stamped with the deadline's time, not the scan's.
func (f *Flow) turnaroundBreached(tx store.Tx, t deadline.Timer) error {
	name := exams.Name(t.ID)
	e, version, err := exams.Get(tx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil || !open(e.GetState()) || e.GetOverdue() {
		return err
	}
	before := footprintOf(e)
	e.Overdue, e.BreachTime = true, timestamppb.New(t.At)
	resource.Stamp(e, t.At, false)
	if err := settle(tx, before, e); err != nil {
		return err
	}
	if err := exams.Update(tx, e, version); err != nil {
		return err
	}
	actor := f.systemCaller(string(t.Partition), e.GetCenterFacility())
	return events.Append(tx, actor, t.At, exams.Change(exams.Event+".turnaround_breached", e, version+1))
}

// findCode finds a code of a value set by its code, with its display.
func findCode(set []*typev1.Code, code string) (*typev1.Code, bool) {
	for _, c := range set {
		if c.GetCode() == code {
			return proto.CloneOf(c), true
		}
	}
	return nil, false
}

// codeList lists the codes of a value set, for messages.
func codeList(set []*typev1.Code) string {
	if len(set) == 0 {
		return "none are defined"
	}
	codes := make([]string, len(set))
	for i, c := range set {
		codes[i] = c.GetCode()
	}
	return "one of " + strings.Join(codes, ", ")
}
