package reading_test

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading"
	"github.com/countymcc/mcc/services/internal/reading/readingtest"
)

func (c *center) shift(t testing.TB, reader string, from, to time.Time, types ...string) *typev1.RotaShift {
	t.Helper()
	resp, err := c.API.CreateShift(c.wu(t), &pathologyv1.CreateShiftRequest{Shift: &typev1.RotaShift{
		Reader: reader, ExamTypes: types, StartTime: timestamppb.New(from), EndTime: timestamppb.New(to),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetShift()
}

func (c *center) get(t testing.TB, name string) *typev1.Exam {
	t.Helper()
	resp, err := c.API.GetExam(c.wu(t), &pathologyv1.GetExamRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetExam()
}

// TestDutyRota assigns arriving exams to the readers on duty for their
// exam type, the least loaded first, and leaves the others in the pool.
func TestDutyRota(t *testing.T) {
	c := newCenter(t)
	now := c.Clock.Now()
	c.shift(t, "practitioners/path-wu", now.Add(-time.Hour), now.Add(8*time.Hour), "PATH-ROUTINE", "PATH-CYTOLOGY")
	maShift := c.shift(t, "practitioners/path-ma", now.Add(-time.Hour), now.Add(8*time.Hour))
	c.shift(t, "practitioners/path-li", now.Add(8*time.Hour), now.Add(16*time.Hour))

	var readers []string
	for range 4 {
		e := c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
		got := c.receive(t, e.GetName())
		if got.GetState() != typev1.Exam_STATE_ASSIGNED {
			t.Fatalf("arrived with a shift on duty: %v", got.GetState())
		}
		last := got.GetTimeline()[len(got.GetTimeline())-1]
		if last.GetReason() != "duty rota" {
			t.Errorf("assignment reason %q", last.GetReason())
		}
		readers = append(readers, got.GetReader())
	}
	if diff := cmp.Diff([]string{"practitioners/path-wu", "practitioners/path-ma", "practitioners/path-wu", "practitioners/path-ma"}, readers); diff != "" {
		t.Errorf("readers by load (-want +got):\n%s", diff)
	}
	// Only Ma covers frozen sections.
	frozen := c.request(t, "PATH-FROZEN", typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY)
	if got := c.receive(t, frozen.GetName()); got.GetReader() != "practitioners/path-ma" {
		t.Errorf("frozen section read by %q", got.GetReader())
	}
	// The shifts that have not ended, by end time.
	list, err := c.API.ListShifts(c.wu(t), &pathologyv1.ListShiftsRequest{})
	if err != nil || len(list.GetShifts()) != 3 {
		t.Fatalf("shifts: %d, %v", len(list.GetShifts()), err)
	}
	// Without Ma's shift, and with Wu's over, an exam waits in the pool
	// to be claimed.
	if _, err := c.API.DeleteShift(c.wu(t), &pathologyv1.DeleteShiftRequest{Name: maShift.GetName()}); err != nil {
		t.Fatal(err)
	}
	c.Clock.Advance(9 * time.Hour)
	cyto := c.request(t, "PATH-CYTOLOGY", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	if got := c.receive(t, cyto.GetName()); got.GetReader() != "practitioners/path-li" {
		t.Errorf("during Li's shift, read by %q", got.GetReader())
	}
	c.Clock.Advance(8 * time.Hour)
	pool := c.request(t, "PATH-CYTOLOGY", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	if got := c.receive(t, pool.GetName()); got.GetState() != typev1.Exam_STATE_ARRIVED || got.GetReader() != "" {
		t.Errorf("with nobody on duty: %v read by %q", got.GetState(), got.GetReader())
	}
	claimed, err := c.API.AssignExam(c.ma(t), &pathologyv1.AssignExamRequest{Name: pool.GetName()})
	if err != nil || claimed.GetExam().GetReader() != "practitioners/path-ma" {
		t.Fatalf("claim: %v, %v", claimed.GetExam().GetReader(), err)
	}
	// A shift longer than a week, or of an unknown exam type, is refused.
	_, err = c.API.CreateShift(c.wu(t), &pathologyv1.CreateShiftRequest{Shift: &typev1.RotaShift{Reader: "practitioners/path-wu", StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(8 * 24 * time.Hour))}})
	servertest.WantField(t, err, "shift.end_time")
	_, err = c.API.CreateShift(c.wu(t), &pathologyv1.CreateShiftRequest{Shift: &typev1.RotaShift{Reader: "practitioners/path-wu", ExamTypes: []string{"CT-HEAD"}, StartTime: timestamppb.New(now), EndTime: timestamppb.New(now.Add(time.Hour))}})
	servertest.WantField(t, err, "shift.exam_types[0]")
}

// TestTurnaround checks the due times of the catalog's limits, the breach
// alert, the delay reason a late pathology report needs, and that the
// deadline survives a restart.
func TestTurnaround(t *testing.T) {
	c := newCenter(t)
	// Monday 09:00: a routine case is due 5 working days later, the next
	// Monday 09:00; an urgent one in 3 working days, on Thursday.
	routine := c.receive(t, c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE).GetName())
	urgent := c.receive(t, c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_URGENT).GetName())
	// A frozen section is due in 30 minutes; a second one while the first
	// is unfinished, in 45.
	first := c.receive(t, c.request(t, "PATH-FROZEN", typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY).GetName())
	second := c.receive(t, c.request(t, "PATH-FROZEN", typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY).GetName())
	t0 := readingtest.T0
	for _, tc := range []struct {
		name string
		e    *typev1.Exam
		due  time.Time
	}{
		{"routine: 5 working days", routine, t0.AddDate(0, 0, 7)},
		{"urgent: 3 working days", urgent, t0.AddDate(0, 0, 3)},
		{"frozen: 30 minutes", first, t0.Add(30 * time.Minute)},
		{"frozen while another is open: 45 minutes", second, t0.Add(45 * time.Minute)},
	} {
		if !tc.e.GetDueTime().AsTime().Equal(tc.due) {
			t.Errorf("%s: due %v, want %v", tc.name, tc.e.GetDueTime().AsTime(), tc.due)
		}
	}
	// After the first is released, the next frozen section has 30 minutes
	// again.
	if _, err := c.API.AssignExam(c.wu(t), &pathologyv1.AssignExamRequest{Name: first.GetName()}); err != nil {
		t.Fatal(err)
	}
	frozenReport := &typev1.ReportContent{Impression: "（左乳）浸润性导管癌。", Results: []*typev1.Code{{Code: "MALIGNANT"}}}
	for _, step := range []func() error{
		func() error {
			_, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: first.GetName(), Content: frozenReport})
			return err
		},
		func() error {
			_, err := c.API.ReviewReport(c.ma(t), &pathologyv1.ReviewReportRequest{Name: first.GetName()})
			return err
		},
		func() error {
			_, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: first.GetName()})
			return err
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	c.Clock.Advance(20 * time.Minute)
	third := c.receive(t, c.request(t, "PATH-FROZEN", typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY).GetName())
	if !third.GetDueTime().AsTime().Equal(c.Clock.Now().Add(45 * time.Minute)) {
		t.Errorf("the second is still open: due %v", third.GetDueTime().AsTime())
	}

	// The second frozen section breaches at 45 minutes, also after a
	// restart of the service.
	c.Restart(t)
	c.Fire(t, 30*time.Minute)
	late := c.get(t, second.GetName())
	if !late.GetOverdue() || !late.GetBreachTime().AsTime().Equal(t0.Add(45*time.Minute)) {
		t.Fatalf("after 50 minutes: overdue %v at %v", late.GetOverdue(), late.GetBreachTime().AsTime())
	}
	ev := eventOf(c.events(t, c.Doctor(t)), "exam.turnaround_breached", second.GetName())
	if ev == nil || !ev.GetTime().AsTime().Equal(t0.Add(45*time.Minute)) {
		t.Errorf("breach alert in the requester's feed: %v", ev)
	}
	// A late report is released only with the reason of its delay.
	if _, err := c.API.AssignExam(c.wu(t), &pathologyv1.AssignExamRequest{Name: second.GetName()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: second.GetName(), Content: frozenReport}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.API.ReviewReport(c.ma(t), &pathologyv1.ReviewReportRequest{Name: second.GetName()}); err != nil {
		t.Fatal(err)
	}
	_, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: second.GetName()})
	servertest.WantReason(t, err, reading.ReasonDelayReasonRequired)
	_, err = c.API.RecordDelay(c.wu(t), &pathologyv1.RecordDelayRequest{Name: second.GetName(), Reason: "LUNCH"})
	servertest.WantField(t, err, "reason")
	delayed, err := c.API.RecordDelay(c.wu(t), &pathologyv1.RecordDelayRequest{Name: second.GetName(), Reason: "EQUIPMENT", Note: "冰冻切片机故障"})
	if err != nil || delayed.GetExam().GetDelay().GetReason().GetCode() != "EQUIPMENT" {
		t.Fatalf("delay: %v, %v", delayed.GetExam().GetDelay(), err)
	}
	if _, err := c.API.FinalizeReport(c.ma(t), &pathologyv1.FinalizeReportRequest{Name: second.GetName()}); err != nil {
		t.Fatal(err)
	}

	// The statistics: two frozen sections from dls, one late.
	day := t0.In(time.FixedZone("CST", 8*3600)).Format(time.DateOnly)
	stats, err := c.API.GetStatistics(c.wu(t), &pathologyv1.GetStatisticsRequest{StartDay: day, EndDay: day})
	if err != nil {
		t.Fatal(err)
	}
	want := []*typev1.ExamStatisticsRow{{
		CenterFacility: "facilities/qrmyy", ExamType: "PATH-FROZEN", Facility: "facilities/dls", Count: 2, Overdue: 1, OnTimeRate: 0.5,
		InCenter: &typev1.Percentiles{P50Minutes: 0, P90Minutes: 50, P95Minutes: 50},
		Total:    &typev1.Percentiles{P50Minutes: 0, P90Minutes: 50, P95Minutes: 50},
	}}
	if diff := cmp.Diff(want, stats.GetRows(), protocmp.Transform()); diff != "" {
		t.Errorf("statistics (-want +got):\n%s", diff)
	}
	// Another township sees none of dls's rows.
	theirs, err := c.API.GetStatistics(c.other(t), &pathologyv1.GetStatisticsRequest{StartDay: day, EndDay: day})
	if err != nil || len(theirs.GetRows()) != 0 {
		t.Errorf("another township's statistics: %v, %v", theirs.GetRows(), err)
	}
}

// TestCriticalFinding opens the critical-value loop from a report, once
// per finding, and lets it escalate.
func TestCriticalFinding(t *testing.T) {
	c := newCenter(t)
	e := c.toState(t, typev1.Exam_STATE_ASSIGNED)
	urgent := content()
	urgent.CriticalFinding = &typev1.Code{Code: "SERIOUS_INFECTION"}
	urgent.Impression = "（肺）肉芽肿性炎，抗酸染色阳性，考虑结核。"
	got, err := c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: e.GetName(), Content: urgent})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetExam().GetCriticalNotifications()) != 1 {
		t.Fatalf("notifications %v", got.GetExam().GetCriticalNotifications())
	}
	// Rewriting with the same finding opens no second notification.
	got, err = c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: e.GetName(), Content: urgent})
	if err != nil || len(got.GetExam().GetCriticalNotifications()) != 1 {
		t.Fatalf("after a rewrite: %v, %v", got.GetExam().GetCriticalNotifications(), err)
	}
	list, err := c.API.ListCriticalNotifications(c.Doctor(t), &pathologyv1.ListCriticalNotificationsRequest{})
	if err != nil || len(list.GetNotifications()) != 1 {
		t.Fatalf("the township's notifications: %v, %v", list.GetNotifications(), err)
	}
	n := list.GetNotifications()[0]
	want := &typev1.CriticalNotification{
		Name: n.GetName(), State: typev1.CriticalNotification_STATE_NOTIFIED, Subject: reportName(e), Order: e.GetName(), Patient: c.Batu,
		Item:  &typev1.Code{Code: "SERIOUS_INFECTION", Display: "重要病原体感染 serious infection (tuberculosis, fungi)"},
		Value: "重要病原体感染 serious infection (tuberculosis, fungi)", Flag: "CRITICAL",
		Center: "facilities/qrmyy", Facility: "facilities/dls", Clinician: "practitioners/doc-dls-han",
	}
	if diff := cmp.Diff(want, n, protocmp.Transform(), protocmp.IgnoreFields(&typev1.CriticalNotification{},
		"notify_time", "escalate_time", "timeline", "create_time", "update_time", "etag")); diff != "" {
		t.Errorf("notification (-want +got):\n%s", diff)
	}
	// Unacknowledged for 10 minutes, it escalates to the duty doctor; the
	// township then reads the finding back.
	c.Fire(t, 11*time.Minute)
	esc, err := c.API.GetCriticalNotification(c.Doctor(t), &pathologyv1.GetCriticalNotificationRequest{Name: n.GetName()})
	if err != nil || esc.GetNotification().GetState() != typev1.CriticalNotification_STATE_ESCALATED_DUTY_DOCTOR {
		t.Fatalf("after 11 minutes: %v, %v", esc.GetNotification().GetState(), err)
	}
	_, err = c.API.AcknowledgeCriticalNotification(c.Doctor(t), &pathologyv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "肺癌"})
	servertest.WantReason(t, err, critical.ReasonReadBackMismatch)
	ack, err := c.API.AcknowledgeCriticalNotification(c.Doctor(t), &pathologyv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "重要病原体感染"})
	if err != nil || ack.GetNotification().GetState() != typev1.CriticalNotification_STATE_CONFIRMED {
		t.Fatalf("acknowledge: %v, %v", ack.GetNotification().GetState(), err)
	}
	// An unknown finding is refused.
	urgent.CriticalFinding = &typev1.Code{Code: "STEMI"}
	_, err = c.API.WriteReport(c.wu(t), &pathologyv1.WriteReportRequest{Name: e.GetName(), Content: urgent})
	servertest.WantField(t, err, "content.critical_finding")
}

// TestExamTypes reads the built-in catalog and changes it.
func TestExamTypes(t *testing.T) {
	c := newCenter(t)
	page, err := c.API.ListExamTypes(c.Doctor(t), &pathologyv1.ListExamTypesRequest{PageSize: 2})
	if err != nil || len(page.GetExamTypes()) != 2 || page.GetNextPageToken() == "" {
		t.Fatalf("first page: %d, %q, %v", len(page.GetExamTypes()), page.GetNextPageToken(), err)
	}
	rest, err := c.API.ListExamTypes(c.Doctor(t), &pathologyv1.ListExamTypesRequest{PageSize: 2, PageToken: page.GetNextPageToken()})
	if err != nil || len(rest.GetExamTypes()) != 1 || rest.GetNextPageToken() != "" {
		t.Fatalf("second page: %d, %v", len(rest.GetExamTypes()), err)
	}
	frozen, err := c.API.GetExamType(c.Doctor(t), &pathologyv1.GetExamTypeRequest{Name: "examTypes/PATH-FROZEN"})
	if err != nil || !frozen.GetExamType().GetFreshSpecimen() || len(frozen.GetExamType().GetDelayReasons()) == 0 {
		t.Fatalf("frozen: %v, %v", frozen.GetExamType(), err)
	}
	// The community gives frozen sections 25 minutes.
	et := frozen.GetExamType()
	for _, row := range et.GetTurnaround() {
		row.Limit = durationpb.New(25 * time.Minute)
	}
	_, err = c.API.UpdateExamType(c.wu(t), &pathologyv1.UpdateExamTypeRequest{ExamType: et, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"turnaround"}}})
	servertest.WantCode(t, err, codes.PermissionDenied)
	if _, err := c.API.UpdateExamType(c.admin(t), &pathologyv1.UpdateExamTypeRequest{ExamType: et, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"turnaround"}}}); err != nil {
		t.Fatal(err)
	}
	e := c.receive(t, c.request(t, "PATH-FROZEN", typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY).GetName())
	if !e.GetDueTime().AsTime().Equal(c.Clock.Now().Add(25 * time.Minute)) {
		t.Errorf("due %v with the community's limit", e.GetDueTime().AsTime())
	}
	// A new exam type needs a limit for every priority.
	bone := &typev1.ExamType{Code: &typev1.Code{Code: "PATH-BONE"}, DisplayName: "骨组织病理", Results: et.GetResults(),
		Turnaround: []*typev1.TurnaroundLimit{{Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE, Limit: durationpb.New(7 * 24 * time.Hour), Basis: typev1.TurnaroundBasis_TURNAROUND_BASIS_WORKING_DAYS}}}
	_, err = c.API.CreateExamType(c.admin(t), &pathologyv1.CreateExamTypeRequest{ExamType: bone})
	servertest.WantField(t, err, "exam_type.turnaround")
	for _, p := range []typev1.ExamPriority{typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY, typev1.ExamPriority_EXAM_PRIORITY_URGENT} {
		bone.Turnaround = append(bone.Turnaround, &typev1.TurnaroundLimit{Priority: p, Limit: durationpb.New(5 * 24 * time.Hour), Basis: typev1.TurnaroundBasis_TURNAROUND_BASIS_WORKING_DAYS})
	}
	created, err := c.API.CreateExamType(c.admin(t), &pathologyv1.CreateExamTypeRequest{ExamType: bone})
	if err != nil || created.GetExamType().GetName() != "examTypes/PATH-BONE" || created.GetExamType().GetCode().GetSystem() != reading.ExamTypeSystem {
		t.Fatalf("created %v, %v", created.GetExamType(), err)
	}
	all, err := c.API.ListExamTypes(c.Doctor(t), &pathologyv1.ListExamTypesRequest{})
	if err != nil || len(all.GetExamTypes()) != 4 {
		t.Errorf("catalog of %d, %v", len(all.GetExamTypes()), err)
	}
}

// TestWatchEvents follows the feed through the shared streaming method.
func TestWatchEvents(t *testing.T) {
	c := newCenter(t)
	ctx, cancel := context.WithTimeout(c.Doctor(t), 10*time.Second)
	defer cancel()
	stream, err := c.API.WatchEvents(ctx, &pathologyv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	e := c.request(t, "PATH-ROUTINE", typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	c.receive(t, e.GetName())
	var types []string
	for len(types) < 2 {
		msg, err := stream.Recv()
		if err == io.EOF || err != nil {
			t.Fatalf("after %v: %v", types, err)
		}
		types = append(types, msg.GetEvent().GetType())
	}
	if !slices.Equal(types, []string{"exam.requested", "exam.arrived"}) {
		t.Errorf("watched %v", types)
	}
	// Another township's watch sees none of it.
	other, stop := context.WithTimeout(c.other(t), 300*time.Millisecond)
	defer stop()
	theirs, err := c.API.WatchEvents(other, &pathologyv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := theirs.Recv(); err == nil {
		t.Errorf("another township watched %s", msg.GetEvent().GetType())
	}
}
