package reading_test

import (
	"testing"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading"
)

// TestIllegalExamMoves walks every move the exam's state machine forbids
// through the API: a fresh exam is put in the move's from state, and the
// method that leads to its to state must refuse with INVALID_TRANSITION.
func TestIllegalExamMoves(t *testing.T) {
	c := newCenter(t)
	// try makes the call that leads to a state, on an exam in from.
	try := map[typev1.Exam_State]func(t *testing.T, e *typev1.Exam) error{
		typev1.Exam_STATE_ARRIVED: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: e.GetName(), Specimens: []*typev1.PathologySpecimen{c.specimen()}})
			return err
		},
		typev1.Exam_STATE_ASSIGNED: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.AssignExam(c.ma(t), &pathologyv1.AssignExamRequest{Name: e.GetName(), Reason: "周主任出差"})
			return err
		},
		typev1.Exam_STATE_PRELIMINARY: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: e.GetName(), Content: content()})
			return err
		},
		typev1.Exam_STATE_REVIEWED: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.ReviewReport(c.ma(t), &pathologyv1.ReviewReportRequest{Name: e.GetName()})
			return err
		},
		typev1.Exam_STATE_FINAL: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: e.GetName()})
			return err
		},
		typev1.Exam_STATE_AMENDED: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.AmendReport(c.wu(t), &pathologyv1.AmendReportRequest{Name: e.GetName(), Content: content(), Reason: "更正"})
			return err
		},
		typev1.Exam_STATE_REJECTED: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.RejectExam(c.wu(t), &pathologyv1.RejectExamRequest{Name: e.GetName(), Reason: "LEAKED"})
			return err
		},
		typev1.Exam_STATE_CANCELLED: func(t *testing.T, e *typev1.Exam) error {
			_, err := c.API.CancelExam(c.Doctor(t), &pathologyv1.CancelExamRequest{Name: e.GetName()})
			return err
		},
	}
	tried, skipped := 0, 0
	for _, mv := range reading.Machine().Illegal() {
		call, ok := try[mv.To]
		if !ok {
			// No method leads back to REQUESTED: an exam is requested once.
			skipped++
			continue
		}
		tried++
		t.Run(mv.String(), func(t *testing.T) {
			servertest.WantReason(t, call(t, c.toState(t, mv.From)), apierr.ReasonInvalidTransition)
		})
	}
	t.Logf("%d illegal moves tried through the API, %d into REQUESTED, which no method leads to", tried, skipped)
	if skipped != len(reading.Machine().Illegal())-tried || tried == 0 {
		t.Fatal("the walk lost count")
	}
}

// TestLegalSelfMoves checks the moves that stay in a state: a rewritten
// preliminary report, a reassignment with a reason, a returned report.
func TestLegalSelfMoves(t *testing.T) {
	c := newCenter(t)
	e := c.toState(t, typev1.Exam_STATE_PRELIMINARY)
	again, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: e.GetName(), Content: content()})
	if err != nil || again.GetExam().GetReport().GetVersion() != 2 {
		t.Fatalf("rewrite: version %d, %v", again.GetExam().GetReport().GetVersion(), err)
	}
	// Taking the exam from its reader needs a reason.
	_, err = c.API.AssignExam(c.ma(t), &pathologyv1.AssignExamRequest{Name: e.GetName(), Reader: "practitioners/path-ma"})
	servertest.WantField(t, err, "reason")
	moved, err := c.API.AssignExam(c.ma(t), &pathologyv1.AssignExamRequest{Name: e.GetName(), Reader: "practitioners/path-ma", Reason: "吴医生休假"})
	if err != nil {
		t.Fatal(err)
	}
	last := moved.GetExam().GetTimeline()[len(moved.GetExam().GetTimeline())-1]
	if moved.GetExam().GetReader() != "practitioners/path-ma" || last.GetReason() != "吴医生休假" || last.GetTo() != "STATE_ASSIGNED" {
		t.Errorf("reassigned to %s: %v", moved.GetExam().GetReader(), last)
	}
	// Ma writes; Wu (no longer the reader, not the author) may review, or
	// return it with a reason.
	if _, err := c.API.WriteReport(c.ma(t), &pathologyv1.WriteReportRequest{Name: e.GetName(), Content: content()}); err != nil {
		t.Fatal(err)
	}
	returned, err := c.API.ReturnReport(c.wu(t), &pathologyv1.ReturnReportRequest{Name: e.GetName(), Reason: "请补充切缘情况"})
	if err != nil || returned.GetExam().GetState() != typev1.Exam_STATE_ASSIGNED || returned.GetExam().GetReader() != "practitioners/path-ma" {
		t.Fatalf("returned: %v, %v", returned.GetExam().GetState(), err)
	}
	_, err = c.API.ReturnReport(c.wu(t), &pathologyv1.ReturnReportRequest{Name: e.GetName(), Reason: "again"})
	servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
}
