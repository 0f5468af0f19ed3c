package reading_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading"
	"github.com/countymcc/mcc/services/internal/reading/readingtest"
)

// events returns the events a caller sees, after a cursor.
func (c *center) events(t testing.TB, ctx context.Context) []*typev1.Event {
	t.Helper()
	resp, err := c.API.ListEvents(ctx, &pathologyv1.ListEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

// eventOf returns the last event of a type about a resource.
func eventOf(evs []*typev1.Event, typ, resource string) *typev1.Event {
	var out *typev1.Event
	for _, ev := range evs {
		if ev.GetType() == typ && ev.GetResource() == resource {
			out = ev
		}
	}
	return out
}

func reportName(e *typev1.Exam) string { return "reports/" + strings.TrimPrefix(e.GetName(), "exams/") }

// TestReadingWorkflow plays one exam through the whole workflow, with the
// refusals the two-level review and the release rules make on the way.
func TestReadingWorkflow(t *testing.T) {
	c := newCenter(t)
	e := c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	name := e.GetName()
	if e.GetState() != typev1.Exam_STATE_REQUESTED || e.GetCenterFacility() != "facilities/qrmyy" || e.GetRequestingFacility() != "facilities/dls" {
		t.Fatalf("requested: %v at %s for %s", e.GetState(), e.GetCenterFacility(), e.GetRequestingFacility())
	}
	c.receive(t, name)
	if _, err := c.API.AssignExam(c.wu(t), &pathologyv1.AssignExamRequest{Name: name}); err != nil {
		t.Fatal(err)
	}

	t.Run("only the reader writes the report", func(t *testing.T) {
		_, err := c.API.WriteReport(c.ma(t), &pathologyv1.WriteReportRequest{Name: name, Content: content()})
		servertest.WantCode(t, err, codes.PermissionDenied)
	})
	t.Run("a result outside the exam type's is refused", func(t *testing.T) {
		bad := content()
		bad.Results = []*typev1.Code{{Code: "NORMAL"}}
		_, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: name, Content: bad})
		servertest.WantField(t, err, "content.results[0]")
	})
	written, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: name, Content: content()})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("an addendum on a preliminary report", func(t *testing.T) {
		_, err := c.API.AddAddendum(c.wu(t), &pathologyv1.AddAddendumRequest{Name: name, Text: "补充"})
		servertest.WantReason(t, err, reading.ReasonReportNotFinal)
	})
	t.Run("finalized without review", func(t *testing.T) {
		_, err := c.API.FinalizeReport(c.wu(t), &pathologyv1.FinalizeReportRequest{Name: name})
		servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
		if !strings.Contains(err.Error(), "second reader must review") {
			t.Errorf("the refusal does not say why: %v", err)
		}
	})
	t.Run("the reader reviews their own report", func(t *testing.T) {
		_, err := c.API.ReviewReport(c.wu(t), &pathologyv1.ReviewReportRequest{Name: name})
		servertest.WantReason(t, err, reading.ReasonSamePerson)
	})
	t.Run("a stale etag", func(t *testing.T) {
		_, err := c.API.ReviewReport(c.ma(t), &pathologyv1.ReviewReportRequest{Name: name, Etag: "1"})
		servertest.WantCode(t, err, codes.Aborted)
	})

	// Ma reviews with a corrected impression: a second version, by Ma.
	corrected := content()
	corrected.Impression = "（左乳）纤维腺瘤，伴导管上皮增生。"
	reviewed, err := c.API.ReviewReport(c.ma(t), &pathologyv1.ReviewReportRequest{Name: name, Etag: written.GetExam().GetEtag(), Content: corrected})
	if err != nil {
		t.Fatal(err)
	}
	if r := reviewed.GetExam(); r.GetReviewer() != "practitioners/path-ma" || r.GetReport().GetVersion() != 2 || r.GetReport().GetAuthor() != "practitioners/path-ma" || len(r.GetReportHistory()) != 1 {
		t.Errorf("reviewed: reviewer %s, version %d by %s, %d earlier", r.GetReviewer(), r.GetReport().GetVersion(), r.GetReport().GetAuthor(), len(r.GetReportHistory()))
	}
	c.Clock.Advance(time.Hour)
	final, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	finalTime := readingtest.T0.Add(time.Hour)

	t.Run("a released report is not released again", func(t *testing.T) {
		now := c.Clock.Now()
		defer c.Clock.Set(now)
		c.Clock.Advance(24 * time.Hour)
		_, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: name})
		servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
		got, err := c.API.GetExam(c.ma(t), &pathologyv1.GetExamRequest{Name: name})
		if err != nil || !got.GetExam().GetFinalTime().AsTime().Equal(finalTime) {
			t.Errorf("final time %v after a second release, want %v (%v)", got.GetExam().GetFinalTime().AsTime(), finalTime, err)
		}
	})

	t.Run("report.final carries what the recognition registry indexes, without free text", func(t *testing.T) {
		ev := eventOf(c.events(t, c.Doctor(t)), "report.final", reportName(e))
		if ev == nil {
			t.Fatal("the township's feed has no report.final")
		}
		got := &typev1.ExamReport{}
		if err := ev.GetSnapshot().UnmarshalTo(got); err != nil {
			t.Fatal(err)
		}
		want := &typev1.ExamReport{
			Name: reportName(e), Exam: name, Center: typev1.Center_CENTER_PATHOLOGY, Patient: c.Batu,
			ExamType:           &typev1.Code{System: reading.ExamTypeSystem, Code: "PATH-ROUTINE", Display: "常规组织病理 routine histopathology"},
			RequestingFacility: "facilities/dls", CenterFacility: "facilities/qrmyy", State: typev1.Exam_STATE_FINAL, Version: 2,
			Content: &typev1.ReportContent{Results: []*typev1.Code{{Code: "BENIGN", Display: "良性病变 benign"}}},
			Author:  "practitioners/path-ma", Reader: "practitioners/path-wu", Reviewer: "practitioners/path-ma",
			FinalTime: timestamppb.New(finalTime), UpdateTime: timestamppb.New(finalTime), Etag: final.GetExam().GetEtag(),
			History: []*typev1.ReportVersion{{
				Version: 1, Content: &typev1.ReportContent{Results: []*typev1.Code{{Code: "BENIGN", Display: "良性病变 benign"}}},
				Author: "practitioners/path-wu", Time: timestamppb.New(readingtest.T0), Stage: "STATE_PRELIMINARY",
			}},
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("report.final snapshot (-want +got):\n%s", diff)
		}
		if !slices.Equal(ev.GetFacilities(), []string{"facilities/dls", "facilities/qrmyy"}) || ev.GetResourceEtag() != final.GetExam().GetEtag() {
			t.Errorf("event facilities %v, etag %s", ev.GetFacilities(), ev.GetResourceEtag())
		}
	})

	t.Run("an amendment needs a reason and notifies the requester", func(t *testing.T) {
		_, err := c.API.AmendReport(c.wu(t), &pathologyv1.AmendReportRequest{Name: name, Content: content()})
		servertest.WantField(t, err, "reason")
		amended := content()
		amended.Results = []*typev1.Code{{Code: "SUSPICIOUS"}}
		got, err := c.API.AmendReport(c.wu(t), &pathologyv1.AmendReportRequest{Name: name, Content: amended, Reason: "免疫组化提示不典型增生"})
		if err != nil {
			t.Fatal(err)
		}
		if r := got.GetExam(); r.GetState() != typev1.Exam_STATE_AMENDED || r.GetReport().GetVersion() != 3 || r.GetReport().GetReason() != "免疫组化提示不典型增生" || len(r.GetReportHistory()) != 2 {
			t.Errorf("amended: %v version %d (%q), %d earlier", r.GetState(), r.GetReport().GetVersion(), r.GetReport().GetReason(), len(r.GetReportHistory()))
		}
		ev := eventOf(c.events(t, c.Doctor(t)), "report.amended", reportName(e))
		snap := &typev1.ExamReport{}
		if ev == nil || ev.GetSnapshot().UnmarshalTo(snap) != nil {
			t.Fatal("the township's feed has no report.amended")
		}
		if snap.GetState() != typev1.Exam_STATE_AMENDED || snap.GetVersion() != 3 || snap.GetContent().GetResults()[0].GetCode() != "SUSPICIOUS" || snap.GetAmendmentReason() != "" {
			t.Errorf("report.amended snapshot: %v", snap)
		}
	})

	t.Run("addenda after final", func(t *testing.T) {
		got, err := c.API.AddAddendum(c.wu(t), &pathologyv1.AddAddendumRequest{Name: name, Text: "分子检测结果另行报告。"})
		if err != nil {
			t.Fatal(err)
		}
		if a := got.GetExam().GetAddenda(); len(a) != 1 || a[0].GetText() != "分子检测结果另行报告。" || got.GetExam().GetState() != typev1.Exam_STATE_AMENDED {
			t.Errorf("addenda %v in %v", a, got.GetExam().GetState())
		}
		report, err := c.API.GetReport(c.Doctor(t), &pathologyv1.GetReportRequest{Name: reportName(e)})
		if err != nil || len(report.GetReport().GetAddenda()) != 1 || report.GetReport().GetContent().GetImpression() == "" {
			t.Errorf("report: %v, %v", report.GetReport(), err)
		}
		if eventOf(c.events(t, c.Doctor(t)), "report.addendum", reportName(e)) == nil {
			t.Error("no report.addendum event")
		}
	})

	t.Run("events carry no free text", func(t *testing.T) {
		for _, ev := range c.events(t, c.admin(t)) {
			s := ev.GetSnapshot().String()
			for _, text := range []string{"左乳肿物一月", "纤维腺瘤", "免疫组化提示", "分子检测"} {
				if strings.Contains(s, text) {
					t.Errorf("%s carries %q", ev.GetType(), text)
				}
			}
		}
	})
}

// TestAccess checks who sees and may change an exam.
func TestAccess(t *testing.T) {
	c := newCenter(t)
	e := c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	other := c.other(t)
	for name, call := range map[string]func() error{
		"GetExam": func() error {
			_, err := c.API.GetExam(other, &pathologyv1.GetExamRequest{Name: e.GetName()})
			return err
		},
		"GetReport": func() error {
			_, err := c.API.GetReport(other, &pathologyv1.GetReportRequest{Name: reportName(e)})
			return err
		},
		"CancelExam": func() error {
			_, err := c.API.CancelExam(other, &pathologyv1.CancelExamRequest{Name: e.GetName()})
			return err
		},
	} {
		t.Run("another township: "+name, func(t *testing.T) { servertest.WantCode(t, call(), codes.NotFound) })
	}
	t.Run("the center cannot cancel", func(t *testing.T) {
		_, err := c.API.CancelExam(c.As(t, "practitioners/doc-qrmyy", "qrmyy", typev1.Role_ROLE_CLINICIAN), &pathologyv1.CancelExamRequest{Name: e.GetName()})
		servertest.WantCode(t, err, codes.PermissionDenied)
	})
	t.Run("the requester cannot receive", func(t *testing.T) {
		_, err := c.API.ReceiveSpecimens(c.As(t, "practitioners/path-dls", "dls", typev1.Role_ROLE_PATHOLOGIST), &pathologyv1.ReceiveSpecimensRequest{Name: e.GetName(), Specimens: []*typev1.PathologySpecimen{c.specimen()}})
		servertest.WantCode(t, err, codes.PermissionDenied)
	})
	t.Run("no report yet", func(t *testing.T) {
		_, err := c.API.GetReport(c.Doctor(t), &pathologyv1.GetReportRequest{Name: reportName(e)})
		servertest.WantCode(t, err, codes.NotFound)
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			ctx   context.Context
			exam  *typev1.Exam
			code  codes.Code
			field string
		}{
			{"unknown patient", c.Doctor(t), &typev1.Exam{Patient: "patients/nobody", ExamType: &typev1.Code{Code: "PATH-ROUTINE"}, Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE}, codes.InvalidArgument, "exam.patient"},
			{"another facility's patient", other, &typev1.Exam{Patient: c.Batu, ExamType: &typev1.Code{Code: "PATH-ROUTINE"}, Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE}, codes.OK, ""},
			{"unknown exam type", c.Doctor(t), &typev1.Exam{Patient: c.Batu, ExamType: &typev1.Code{Code: "PATH-XYZ"}, Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE}, codes.InvalidArgument, "exam.exam_type"},
			{"no priority", c.Doctor(t), &typev1.Exam{Patient: c.Batu, ExamType: &typev1.Code{Code: "PATH-ROUTINE"}}, codes.InvalidArgument, "exam"},
			{"a township without a center", c.As(t, "practitioners/doc-xhr", "xhr", typev1.Role_ROLE_CLINICIAN), &typev1.Exam{Patient: c.Batu, ExamType: &typev1.Code{Code: "PATH-ROUTINE"}, Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE}, codes.FailedPrecondition, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.API.CreateExam(tc.ctx, &pathologyv1.CreateExamRequest{Exam: tc.exam})
				servertest.WantError(t, err, tc.code, tc.field)
			})
		}
	})
	t.Run("a retried create returns the first exam", func(t *testing.T) {
		req := &pathologyv1.CreateExamRequest{RequestId: "dls-path-7", Exam: &typev1.Exam{Patient: c.Batu, ExamType: &typev1.Code{Code: "PATH-FROZEN"}, Priority: typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY}}
		first, err := c.API.CreateExam(c.Doctor(t), req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.API.CreateExam(c.Doctor(t), req)
		if err != nil || !proto.Equal(first.GetExam(), again.GetExam()) {
			t.Errorf("retry: %v, %v", again.GetExam().GetName(), err)
		}
	})
}
