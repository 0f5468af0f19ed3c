package reading_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/pathology"
	"github.com/countymcc/mcc/services/internal/reading/readingtest"
)

// The shared workflow is tested through the pathology service, whose
// material (specimens) needs no other system; the imaging and ECG
// services test what is their own.

// center is the pathology center of the fixture and its people.
type center struct {
	*readingtest.Center[pathologyv1.PathologyServiceClient]
	seq int
}

func newCenter(t testing.TB) *center {
	t.Helper()
	return &center{Center: readingtest.StartCenter(t, pathology.Name, pathology.Policy(), func(d readingtest.Deps) (readingtest.Service, error) {
		return pathology.New(d.Store, d.Clock, d.Peers, d.Logger, pathology.Config{FixationLimit: time.Hour, Reading: readingtest.Config()})
	}, pathologyv1.NewPathologyServiceClient)}
}

// The people: two pathologists of the county center, its administrator,
// a clinician of another township and one of a township the center does
// not serve.
func (c *center) wu(t testing.TB) context.Context {
	return c.As(t, "practitioners/path-wu", "qrmyy", typev1.Role_ROLE_PATHOLOGIST)
}

func (c *center) ma(t testing.TB) context.Context {
	return c.As(t, "practitioners/path-ma", "qrmyy", typev1.Role_ROLE_PATHOLOGIST)
}

func (c *center) admin(t testing.TB) context.Context {
	return c.As(t, "practitioners/admin-qrmyy", "qrmyy", typev1.Role_ROLE_ADMIN)
}

func (c *center) other(t testing.TB) context.Context {
	return c.As(t, "practitioners/doc-wjh-li", "wjh", typev1.Role_ROLE_CLINICIAN)
}

// barcode hands out barcodes.
func (c *center) barcode() string { c.seq++; return fmt.Sprintf("P%05d", c.seq) }

// request creates an exam of examType for Batu.
func (c *center) request(t testing.TB, examType string, priority typev1.ExamPriority) *typev1.Exam {
	t.Helper()
	resp, err := c.API.CreateExam(c.Doctor(t), &pathologyv1.CreateExamRequest{Exam: &typev1.Exam{
		Patient: c.Batu, ExamType: &typev1.Code{Code: examType}, Priority: priority, ClinicalNote: "左乳肿物一月",
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetExam()
}

// specimen is a specimen excised 30 minutes ago and fixed 10 minutes
// later.
func (c *center) specimen() *typev1.PathologySpecimen {
	now := c.Clock.Now()
	return &typev1.PathologySpecimen{
		Barcode: c.barcode(), Site: "左乳肿物", Fixative: "10% 中性缓冲福尔马林",
		ExcisionTime:      timestamppb.New(now.Add(-30 * time.Minute)),
		FixationStartTime: timestamppb.New(now.Add(-20 * time.Minute)),
	}
}

// receive receives one specimen of an exam at the center.
func (c *center) receive(t testing.TB, name string) *typev1.Exam {
	t.Helper()
	resp, err := c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{c.specimen()}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetExam()
}

// content is a benign report.
func content() *typev1.ReportContent {
	return &typev1.ReportContent{
		Findings: "镜下见纤维组织及腺体增生。", Impression: "（左乳）纤维腺瘤。",
		Results: []*typev1.Code{{Code: "BENIGN"}},
	}
}

// toState puts a new routine exam in state and returns it. Wu reads, Ma
// reviews.
func (c *center) toState(t testing.TB, state typev1.Exam_State) *typev1.Exam {
	t.Helper()
	e := c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	name := e.GetName()
	steps := []struct {
		state typev1.Exam_State
		do    func() (*typev1.Exam, error)
	}{
		{typev1.Exam_STATE_ARRIVED, func() (*typev1.Exam, error) { return c.receive(t, name), nil }},
		{typev1.Exam_STATE_ASSIGNED, func() (*typev1.Exam, error) {
			r, err := c.API.AssignExam(c.wu(t), &pathologyv1.AssignExamRequest{Name: name})
			return r.GetExam(), err
		}},
		{typev1.Exam_STATE_PRELIMINARY, func() (*typev1.Exam, error) {
			r, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: name, Content: content()})
			return r.GetExam(), err
		}},
		{typev1.Exam_STATE_REVIEWED, func() (*typev1.Exam, error) {
			r, err := c.API.ReviewReport(c.ma(t), &pathologyv1.ReviewReportRequest{Name: name})
			return r.GetExam(), err
		}},
		{typev1.Exam_STATE_FINAL, func() (*typev1.Exam, error) {
			r, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: name})
			return r.GetExam(), err
		}},
		{typev1.Exam_STATE_AMENDED, func() (*typev1.Exam, error) {
			r, err := c.API.AmendReport(c.wu(t), &pathologyv1.AmendReportRequest{Name: name, Content: content(), Reason: "补充免疫组化结果"})
			return r.GetExam(), err
		}},
	}
	switch state {
	case typev1.Exam_STATE_REJECTED:
		r, err := c.API.RejectExam(c.wu(t), &pathologyv1.RejectExamRequest{Name: name, Reason: "UNLABELLED"})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetExam()
	case typev1.Exam_STATE_CANCELLED:
		r, err := c.API.CancelExam(c.Doctor(t), &pathologyv1.CancelExamRequest{Name: name, Reason: "患者拒绝手术"})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetExam()
	}
	for _, s := range steps {
		if state < s.state {
			break
		}
		var err error
		if e, err = s.do(); err != nil {
			t.Fatalf("to %v: %v", s.state, err)
		}
	}
	if e.GetState() != state {
		t.Fatalf("exam is %v, want %v", e.GetState(), state)
	}
	return e
}
