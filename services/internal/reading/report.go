package reading

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// reportCollection is the collection of reports: `reports/{id}` is the
// report of `exams/{id}`.
const reportCollection = "reports"

// criticalFlag is the flag of a critical-finding notification: a finding
// is critical or not, it has no LL or HH.
const criticalFlag = "CRITICAL"

// content checks a report's content against the exam type, completes the
// displays of its codes from the catalog, and returns it. field names the
// content in the request, for errors.
func checkContent(et *typev1.ExamType, in *typev1.ReportContent, field string) (*typev1.ReportContent, error) {
	out := proto.CloneOf(in)
	for i, r := range out.GetResults() {
		known, ok := findCode(et.GetResults(), r.GetCode())
		if !ok {
			return nil, apierr.Invalid(fmt.Sprintf("%s.results[%d]", field, i), "%q is not a result of %s (%s)", r.GetCode(), et.GetCode().GetCode(), codeList(et.GetResults()))
		}
		out.Results[i] = known
	}
	if cf := out.GetCriticalFinding(); cf != nil {
		known, ok := findCode(et.GetCriticalFindings(), cf.GetCode())
		if !ok {
			return nil, apierr.Invalid(field+".critical_finding", "%q is not a critical finding of %s (%s)", cf.GetCode(), et.GetCode().GetCode(), codeList(et.GetCriticalFindings()))
		}
		out.CriticalFinding = known
	}
	return out, nil
}

// precheck runs the center's check of a report's content against other
// systems, before the transaction that stores it.
func (f *Flow) precheck(ctx context.Context, c auth.Caller, name string, content *typev1.ReportContent) error {
	if f.center.CheckReport == nil || content == nil {
		return nil
	}
	e, err := f.get(ctx, c, name)
	if err != nil {
		return err
	}
	return f.center.CheckReport(ctx, e, content)
}

// write makes content the report's new version, written by the caller at
// the exam's current step, and opens the critical-value loop when the
// version gives a critical finding the earlier ones did not.
func (f *Flow) write(s *step, et *typev1.ExamType, in *typev1.ReportContent, field, reason string) error {
	content, err := checkContent(et, in, field)
	if err != nil {
		return err
	}
	e := s.e
	version := int32(1)
	if e.GetReport() != nil {
		e.ReportHistory = append(e.ReportHistory, e.GetReport())
		version = e.GetReport().GetVersion() + 1
	}
	e.Report = &typev1.ReportVersion{
		Version: version, Content: content, Author: s.c.Subject, Time: timestamppb.New(s.now),
		Stage: stateName(e.GetState()), Reason: reason,
	}
	return f.notifyCritical(s, content.GetCriticalFinding())
}

// notifyCritical opens a critical-finding notification to the requester,
// in the step's transaction, unless an earlier version gave the same
// finding (its notification exists already).
func (f *Flow) notifyCritical(s *step, finding *typev1.Code) error {
	if finding == nil {
		return nil
	}
	for _, v := range s.e.GetReportHistory() {
		if v.GetContent().GetCriticalFinding().GetCode() == finding.GetCode() {
			return nil
		}
	}
	e := s.e
	n, err := f.critical.Open(s.tx, s.c, s.now, critical.Notice{
		Subject:   reportName(e),
		Order:     e.GetName(),
		Patient:   e.GetPatient(),
		Item:      finding,
		Value:     finding.GetDisplay(),
		Flag:      criticalFlag,
		Center:    e.GetCenterFacility(),
		Facility:  e.GetRequestingFacility(),
		Clinician: e.GetClinician(),
	})
	if err != nil {
		return err
	}
	e.CriticalNotifications = append(e.CriticalNotifications, n.GetName())
	return nil
}

// writeReport writes the preliminary report of an exam, for its reader.
func (f *Flow) writeReport(ctx context.Context, c auth.Caller, name, etag string, in *typev1.ReportContent) (*typev1.Exam, error) {
	if err := f.precheck(ctx, c, name, in); err != nil {
		return nil, err
	}
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		if err := f.machine.Check(s.e.GetState(), Preliminary); err != nil {
			return err
		}
		if s.e.GetReader() != c.Subject {
			return fmt.Errorf("%s is read by %s; only its reader writes the report (reassign it first): %w", name, s.e.GetReader(), apierr.ErrPermissionDenied)
		}
		if err := s.move(Preliminary, ""); err != nil {
			return err
		}
		et, err := f.typeOf(s.tx, s.e)
		if err != nil {
			return err
		}
		return f.write(s, et, in, "content", "")
	})
}

// reviewReport approves a preliminary report for a second reader (二级审核),
// who may correct it; nobody reviews a report they read or wrote.
func (f *Flow) reviewReport(ctx context.Context, c auth.Caller, name, etag string, corrected *typev1.ReportContent) (*typev1.Exam, error) {
	if err := f.precheck(ctx, c, name, corrected); err != nil {
		return nil, err
	}
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		if err := f.machine.Check(s.e.GetState(), Reviewed); err != nil {
			return err
		}
		if c.Subject == s.e.GetReader() || c.Subject == s.e.GetReport().GetAuthor() {
			return apierr.Condition(ReasonSamePerson, "%s wrote this report; a second reader must review it", c.Subject)
		}
		if err := s.move(Reviewed, ""); err != nil {
			return err
		}
		s.e.Reviewer, s.e.ReviewTime = c.Subject, timestamppb.New(s.now)
		if corrected == nil {
			return nil
		}
		et, err := f.typeOf(s.tx, s.e)
		if err != nil {
			return err
		}
		return f.write(s, et, corrected, "content", "")
	})
}

// returnReport sends a preliminary report back to its reader.
func (f *Flow) returnReport(ctx context.Context, c auth.Caller, name, etag, reason string) (*typev1.Exam, error) {
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		if st := s.e.GetState(); st != Preliminary {
			return refused(name, st, Assigned, "only a preliminary report can be returned to its reader")
		}
		return s.move(Assigned, "returned: "+reason)
	})
}

// finalizeReport releases a reviewed report: `report.final`.
func (f *Flow) finalizeReport(ctx context.Context, c auth.Caller, name, etag string) (*typev1.Exam, error) {
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		e := s.e
		switch st := e.GetState(); {
		case st == Assigned || st == Preliminary:
			return refused(name, st, Final, "a second reader must review the report before it is final")
		case st != Reviewed:
			// Final to final is the table's move for addenda, not a second
			// release.
			return refused(name, st, Final, "only a reviewed report can be released")
		}
		if f.center.RequireDelayReason && e.GetOverdue() && e.GetDelay() == nil {
			return apierr.Condition(ReasonDelayReasonRequired, "%s is past its due time: record the reason of the delay before releasing it", name)
		}
		if err := s.move(Final, ""); err != nil {
			return err
		}
		e.FinalTime = timestamppb.New(s.now)
		s.report("final")
		return putFact(s.tx, f.calendar, e)
	})
}

// amendReport amends a released report with a reason: the released
// version stays in the history and `report.amended` notifies the
// requester.
func (f *Flow) amendReport(ctx context.Context, c auth.Caller, name, etag string, in *typev1.ReportContent, reason string) (*typev1.Exam, error) {
	if err := f.precheck(ctx, c, name, in); err != nil {
		return nil, err
	}
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		if err := s.move(Amended, reason); err != nil {
			return err
		}
		et, err := f.typeOf(s.tx, s.e)
		if err != nil {
			return err
		}
		s.report("amended")
		return f.write(s, et, in, "content", reason)
	})
}

// addAddendum adds text to a released report: `report.addendum`.
func (f *Flow) addAddendum(ctx context.Context, c auth.Caller, name, etag, text string) (*typev1.Exam, error) {
	return f.change(ctx, c, name, etag, ByCenter, func(s *step) error {
		st := s.e.GetState()
		if !released(st) {
			return apierr.Condition(ReasonReportNotFinal, "%s is %s: addenda are added to a released report; change a preliminary one with WriteReport", name, stateName(st))
		}
		if err := f.machine.Apply(s.e, st, c, s.now, "addendum"); err != nil {
			return err
		}
		s.e.Addenda = append(s.e.Addenda, &typev1.Addendum{Text: text, Author: c.Subject, Time: timestamppb.New(s.now)})
		s.note("addendum")
		s.report("addendum")
		return nil
	})
}

// refused is the INVALID_TRANSITION error of a move, with a message that
// says what the workflow expects instead of the bare table's.
func refused(name string, from, to State, why string) error {
	return &apierr.ConditionError{
		Reason:   apierr.ReasonInvalidTransition,
		Message:  fmt.Sprintf("%s is %s: %s", name, stateName(from), why),
		Metadata: map[string]string{"kind": "exam", "from": stateName(from), "to": stateName(to)},
	}
}

// getReport returns the report of an exam the caller may see; an exam
// without a report has none.
func (f *Flow) getReport(ctx context.Context, c auth.Caller, name string) (*typev1.ExamReport, error) {
	e, err := f.get(ctx, c, exams.Name(strings.TrimPrefix(name, reportCollection+"/")))
	if err != nil || e.GetReport() == nil {
		return nil, notFound(name)
	}
	return reportOf(e), nil
}

func reportName(e *typev1.Exam) string { return reportCollection + "/" + exams.ID(e.GetName()) }

// reportOf is the report of an exam as readers and the recognition
// registry see it.
func reportOf(e *typev1.Exam) *typev1.ExamReport {
	r := &typev1.ExamReport{
		Name: reportName(e), Exam: e.GetName(), Center: e.GetCenter(), Patient: e.GetPatient(),
		ExamType: e.GetExamType(), RequestingFacility: e.GetRequestingFacility(), CenterFacility: e.GetCenterFacility(),
		State: e.GetState(), Version: e.GetReport().GetVersion(), Content: e.GetReport().GetContent(),
		Author: e.GetReport().GetAuthor(), Reader: e.GetReader(), Reviewer: e.GetReviewer(), FinalTime: e.GetFinalTime(),
		History: e.GetReportHistory(), Addenda: e.GetAddenda(), CriticalNotifications: e.GetCriticalNotifications(),
		UpdateTime: e.GetUpdateTime(), Etag: e.GetEtag(),
	}
	if e.GetState() == Amended {
		r.AmendTime, r.AmendmentReason = e.GetReport().GetTime(), e.GetReport().GetReason()
	}
	return proto.CloneOf(r)
}

// stripContent removes the free text of a report version, in which a
// reader may have written the patient's name.
func stripContent(v *typev1.ReportVersion) {
	if v == nil {
		return
	}
	v.Reason = ""
	if c := v.GetContent(); c != nil {
		c.Findings, c.Impression = "", ""
	}
}

// reportSnapshot is a report as events carry it: codes, people and times,
// without free text. Consumers read the text with GetReport, under its
// access rules.
func reportSnapshot(r *typev1.ExamReport) *typev1.ExamReport {
	snap := proto.CloneOf(r)
	snap.AmendmentReason = ""
	if c := snap.GetContent(); c != nil {
		c.Findings, c.Impression = "", ""
	}
	for _, v := range snap.GetHistory() {
		stripContent(v)
	}
	for _, a := range snap.GetAddenda() {
		a.Text = ""
	}
	return snap
}

// examSnapshot is an exam as events carry it: without its free text (the
// clinical note, the report's text, notes and reasons, the gross
// description) and without the masked PACS patient ID.
func examSnapshot(e *typev1.Exam) *typev1.Exam {
	snap := proto.CloneOf(e)
	snap.ClinicalNote = ""
	stripContent(snap.GetReport())
	for _, v := range snap.GetReportHistory() {
		stripContent(v)
	}
	for _, a := range snap.GetAddenda() {
		a.Text = ""
	}
	if r := snap.GetRejection(); r != nil {
		r.Note = ""
	}
	if d := snap.GetDelay(); d != nil {
		d.Note = ""
	}
	for _, ch := range snap.GetTimeline() {
		ch.Reason = ""
	}
	if st := snap.GetStudy(); st != nil {
		st.PatientIdMasked = ""
	}
	if pc := snap.GetPathologyCase(); pc != nil {
		pc.GrossDescription = ""
	}
	return snap
}
