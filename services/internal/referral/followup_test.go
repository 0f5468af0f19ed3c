package referral_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/referral"
)

func TestDownReferralFollowUps(t *testing.T) {
	f := newFixture(t, nil)
	qrmyy, dls := f.as(t, "qrmyy", clinician), f.as(t, "dls", clinician)
	sent := f.create(t, qrmyy, f.downReferral())
	if sent.GetState() != referralv1.Referral_STATE_SENT || sent.GetTriageDueTime() != nil {
		t.Fatalf("sent: %v", sent)
	}
	if diff := cmp.Diff([]action{arrive}, f.get(t, dls, sent.GetName()).GetAllowedActions()); diff != "" {
		t.Errorf("township's actions (-want +got):\n%s", diff)
	}
	f.Clock.Advance(5 * time.Hour)
	arrived, err := f.client.ArriveReferral(dls, &referralv1.ArriveReferralRequest{Name: sent.GetName(), Etag: sent.GetEtag()})
	if err != nil {
		t.Fatal(err)
	}
	arrivedAt := f.Clock.Now()
	if diff := cmp.Diff(&referralv1.FollowUpSummary{Scheduled: 3}, arrived.GetReferral().GetFollowUps(), protocmp.Transform()); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	// The plan's tasks are tracked until the referral can be completed.
	_, err = f.client.CompleteReferral(dls, &referralv1.CompleteReferralRequest{Name: sent.GetName()})
	servertest.WantReason(t, err, referral.ReasonFollowUpsOpen)

	tasks, err := f.client.ListFollowUps(qrmyy, &referralv1.ListFollowUpsRequest{Parent: sent.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	want := []*referralv1.FollowUp{
		{Name: sent.GetName() + "/followUps/01", Type: referralv1.FollowUp_TYPE_PHONE_CALL, Description: "电话随访", DueTime: timestamppb.New(arrivedAt.AddDate(0, 0, 3))},
		{Name: sent.GetName() + "/followUps/02", Type: referralv1.FollowUp_TYPE_VISIT, Description: "上门随访", DueTime: timestamppb.New(arrivedAt.AddDate(0, 0, 7))},
		{Name: sent.GetName() + "/followUps/03", Type: referralv1.FollowUp_TYPE_TEST, Description: "复查血脂", DueTime: timestamppb.New(arrivedAt.AddDate(0, 0, 30))},
	}
	for _, w := range want {
		w.Facility, w.Practitioner, w.State = "facilities/dls", "practitioners/doc-dls-han", referralv1.FollowUp_STATE_SCHEDULED
	}
	if diff := cmp.Diff(want, tasks.GetFollowUps(), protocmp.Transform(), protocmp.IgnoreFields(&referralv1.FollowUp{}, "timeline", "create_time", "update_time", "etag")); diff != "" {
		t.Errorf("tasks as the sender sees them (-want +got):\n%s", diff)
	}

	// The phone call is done; the visit is not, and is reported missed
	// after its grace period, also after a restart.
	done, err := f.client.CompleteFollowUp(dls, &referralv1.CompleteFollowUpRequest{Name: want[0].GetName(), Outcome: "血压控制良好"})
	if err != nil {
		t.Fatal(err)
	}
	if done.GetFollowUp().GetState() != referralv1.FollowUp_STATE_DONE || len(done.GetFollowUp().GetAllowedActions()) != 0 {
		t.Errorf("done: %v", done.GetFollowUp())
	}
	_, err = f.client.CompleteFollowUp(qrmyy, &referralv1.CompleteFollowUpRequest{Name: want[1].GetName()})
	servertest.WantCode(t, err, codes.PermissionDenied)
	_, err = f.client.CompleteFollowUp(f.as(t, "wjh", clinician), &referralv1.CompleteFollowUpRequest{Name: want[1].GetName()})
	servertest.WantCode(t, err, codes.NotFound)
	_, err = f.client.CompleteFollowUp(dls, &referralv1.CompleteFollowUpRequest{Name: want[0].GetName()})
	servertest.WantReason(t, err, apierr.ReasonInvalidTransition)

	f.restart(t)
	qrmyy, dls = f.as(t, "qrmyy", clinician), f.as(t, "dls", clinician)
	f.Clock.Set(arrivedAt.AddDate(0, 0, 7).Add(72*time.Hour - time.Second))
	if n := f.fire(t); n != 0 {
		t.Fatalf("%d fired within the grace period", n)
	}
	f.Clock.Advance(time.Second)
	if n := f.fire(t); n != 1 {
		t.Fatalf("%d fired at the end of the grace period, want the visit", n)
	}
	missed, err := f.client.ListFollowUps(dls, &referralv1.ListFollowUpsRequest{Parent: "referrals/-", State: referralv1.FollowUp_STATE_MISSED})
	if err != nil {
		t.Fatal(err)
	}
	if len(missed.GetFollowUps()) != 1 || missed.GetFollowUps()[0].GetName() != want[1].GetName() || missed.GetFollowUps()[0].GetTimeline()[1].GetActor().GetFacility() != "facilities/mcc-system" {
		t.Fatalf("missed report: %v", missed.GetFollowUps())
	}
	// The sender sees the missed task on its referral and in its feed.
	got := f.get(t, qrmyy, sent.GetName())
	if diff := cmp.Diff(&referralv1.FollowUpSummary{Scheduled: 1, Done: 1, Missed: 1}, got.GetFollowUps(), protocmp.Transform()); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	evs, err := f.client.ListEvents(qrmyy, &referralv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs.GetEvents() {
		types = append(types, e.GetType())
	}
	if diff := cmp.Diff([]string{"referral.created", "referral.arrived", "referral.follow_up_done", "referral.follow_up_missed"}, types); diff != "" {
		t.Errorf("sender's feed (-want +got):\n%s", diff)
	}

	scheduled, err := f.client.ListFollowUps(dls, &referralv1.ListFollowUpsRequest{Parent: "referrals/-", State: referralv1.FollowUp_STATE_SCHEDULED})
	if err != nil {
		t.Fatal(err)
	}
	if len(scheduled.GetFollowUps()) != 1 || !cmp.Equal(scheduled.GetFollowUps()[0].GetAllowedActions(), []referralv1.FollowUp_Action{referralv1.FollowUp_ACTION_COMPLETE, referralv1.FollowUp_ACTION_MISS}) {
		t.Fatalf("scheduled: %v", scheduled.GetFollowUps())
	}
	if _, err := f.client.MissFollowUp(dls, &referralv1.MissFollowUpRequest{Name: want[2].GetName(), Etag: scheduled.GetFollowUps()[0].GetEtag(), Reason: "患者外出务工，联系不上"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.CompleteReferral(dls, &referralv1.CompleteReferralRequest{Name: sent.GetName(), Outcome: "随访结束"}); err != nil {
		t.Fatalf("complete after every task closed: %v", err)
	}
	_, err = f.client.ListFollowUps(dls, &referralv1.ListFollowUpsRequest{Parent: "referrals/-"})
	servertest.WantField(t, err, "state")
}

func TestAttachmentsAreCheckedWithRecognition(t *testing.T) {
	rec := &fakeRecognition{}
	f := newFixture(t, rec)
	rec.patient = map[string]string{"results/cbc-1": f.patients["batu"], "results/ct-2": f.patients["batu"], "results/other-3": f.patients["qiqige"]}
	rec.recognizable = map[string]bool{"results/cbc-1": true}
	dls := f.as(t, "dls", clinician)

	r := f.upReferral()
	r.Attachments = []*referralv1.Attachment{
		{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/cbc-1", Title: "血常规"},
		{Kind: referralv1.Attachment_KIND_REPORT, Ref: "imaging/reports/r-9", Title: "头颅CT报告"},
		{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/ct-2", Recognition: referralv1.Attachment_RECOGNITION_RECOGNIZABLE},
	}
	created := f.create(t, dls, r)
	want := []*referralv1.Attachment{
		{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/cbc-1", Title: "血常规", Recognition: referralv1.Attachment_RECOGNITION_RECOGNIZABLE},
		{Kind: referralv1.Attachment_KIND_REPORT, Ref: "imaging/reports/r-9", Title: "头颅CT报告"},
		{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/ct-2", Recognition: referralv1.Attachment_RECOGNITION_NOT_RECOGNIZABLE, RecognitionNote: "expired"},
	}
	if diff := cmp.Diff(want, created.GetAttachments(), protocmp.Transform()); diff != "" {
		t.Errorf("attachments (-want +got):\n%s", diff)
	}
	asked := rec.asked[0]
	if asked.Receiver != "facilities/qrmyy" || asked.Patient != f.patients["batu"] || asked.Community != community || !cmp.Equal(asked.Results, []string{"results/cbc-1", "results/ct-2"}) {
		t.Errorf("asked %+v", asked)
	}

	r.Attachments = append(r.Attachments, &referralv1.Attachment{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/other-3"})
	_, err := f.client.CreateReferral(dls, &referralv1.CreateReferralRequest{Referral: r})
	servertest.WantField(t, err, "referral.attachments[3].ref")
	r.Attachments = []*referralv1.Attachment{{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/nowhere"}}
	_, err = f.client.CreateReferral(dls, &referralv1.CreateReferralRequest{Referral: r})
	servertest.WantField(t, err, "referral.attachments[0].ref")
}

func TestAttachmentsWithoutRecognitionAreUnchecked(t *testing.T) {
	f := newFixture(t, nil)
	r := f.upReferral()
	r.Attachments = []*referralv1.Attachment{{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/cbc-1"}}
	got := f.create(t, f.as(t, "dls", clinician), r)
	if got.GetAttachments()[0].GetRecognition() != referralv1.Attachment_RECOGNITION_UNCHECKED {
		t.Errorf("attachment %v", got.GetAttachments()[0])
	}
}

func TestEventsAreForTheTwoFacilitiesAndCoordinators(t *testing.T) {
	f := newFixture(t, nil)
	r := f.upReferral()
	r.ClinicalSummary = "患者巴特尔，男，68岁，头晕一周。"
	r.Attachments = []*referralv1.Attachment{{Kind: referralv1.Attachment_KIND_REPORT, Ref: "lab/reports/1", Title: "巴特尔 血常规"}}
	created := f.create(t, f.as(t, "dls", clinician), r)
	f.accept(t, created)

	for name, tt := range map[string]struct {
		facility string
		role     typev1.Role
		events   int
	}{
		"sender":            {"dls", clinician, 2},
		"receiver":          {"qrmyy", clinician, 2},
		"coordinator":       {"wjh", coordinator, 2},
		"another township":  {"wjh", clinician, 0},
		"an administrator":  {"wjh", admin, 0},
		"receiver as admin": {"qrmyy", admin, 2},
	} {
		t.Run(name, func(t *testing.T) {
			evs, err := f.client.ListEvents(f.as(t, tt.facility, tt.role), &referralv1.ListEventsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs.GetEvents()) != tt.events {
				t.Fatalf("%d events, want %d", len(evs.GetEvents()), tt.events)
			}
			for _, e := range evs.GetEvents() {
				snap := &referralv1.Referral{}
				if err := e.GetSnapshot().UnmarshalTo(snap); err != nil {
					t.Fatal(err)
				}
				if strings.Contains(snap.String(), "巴特尔") || snap.GetTriage().GetReferralCode() != "" || snap.GetClinicalSummary() != "" {
					t.Errorf("event %s carries free text or the code: %v", e.GetType(), snap)
				}
			}
		})
	}
}

func TestStatistics(t *testing.T) {
	f := newFixture(t, nil)
	dls, qrmyy := f.as(t, "dls", clinician), f.as(t, "qrmyy", clinician)
	// November: two up-referrals dls→qrmyy, one accepted after 2 h and
	// completed, one rejected after 4 h; one down-referral qrmyy→dls.
	a := f.create(t, dls, f.upReferral())
	b := f.create(t, dls, f.upReferral())
	f.create(t, qrmyy, f.downReferral())
	f.Clock.Advance(2 * time.Hour)
	a = f.accept(t, a)
	f.Clock.Advance(2 * time.Hour)
	if _, err := f.client.RejectReferral(qrmyy, &referralv1.RejectReferralRequest{Name: b.GetName(), Reason: referralv1.RejectReason_REJECT_REASON_OUT_OF_SCOPE}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: a.GetName(), ReferralCode: a.GetTriage().GetReferralCode()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.CompleteReferral(qrmyy, &referralv1.CompleteReferralRequest{Name: a.GetName()}); err != nil {
		t.Fatal(err)
	}
	// December (in China's time): one green channel dls→qrmyy.
	f.Clock.Set(time.Date(2026, 11, 30, 16, 30, 0, 0, time.UTC))
	g := f.upReferral()
	g.GreenChannel, g.Urgency = true, referralv1.Urgency_URGENCY_EMERGENCY
	f.create(t, dls, g)

	resp, err := f.client.GetStatistics(f.as(t, "mzyy", coordinator), &referralv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-12"})
	if err != nil {
		t.Fatal(err)
	}
	want := &referralv1.GetStatisticsResponse{
		Rows: []*referralv1.Statistics{
			{Month: "2026-11", SendingFacility: "facilities/dls", TargetFacility: "facilities/qrmyy", Up: 2, Triaged: 2, Accepted: 1, AcceptanceRate: 0.5, MedianTimeToTriage: durationpb.New(3 * time.Hour), Completed: 1, CompletionRate: 0.5},
			{Month: "2026-11", SendingFacility: "facilities/qrmyy", TargetFacility: "facilities/dls", Down: 1},
			{Month: "2026-12", SendingFacility: "facilities/dls", TargetFacility: "facilities/qrmyy", Up: 1, GreenChannel: 1},
		},
		Total: &referralv1.Statistics{Up: 3, Down: 1, GreenChannel: 1, Triaged: 2, Accepted: 1, AcceptanceRate: 0.5, MedianTimeToTriage: durationpb.New(3 * time.Hour), Completed: 1, CompletionRate: 0.25},
	}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("statistics (-want +got):\n%s", diff)
	}
	only, err := f.client.GetStatistics(f.as(t, "qrmyy", admin), &referralv1.GetStatisticsRequest{StartMonth: "2026-12", EndMonth: "2026-12"})
	if err != nil {
		t.Fatal(err)
	}
	if len(only.GetRows()) != 1 || only.GetTotal().GetUp() != 1 {
		t.Errorf("December alone: %v", only)
	}
	_, err = f.client.GetStatistics(f.as(t, "qrmyy", admin), &referralv1.GetStatisticsRequest{StartMonth: "2026-01", EndMonth: "2027-01"})
	servertest.WantField(t, err, "end_month")
}
