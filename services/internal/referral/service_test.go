package referral_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/referral"
)

type action = referralv1.Referral_Action

const (
	accept   = referralv1.Referral_ACTION_ACCEPT
	reject   = referralv1.Referral_ACTION_REJECT
	ret      = referralv1.Referral_ACTION_RETURN
	resubmit = referralv1.Referral_ACTION_RESUBMIT
	arrive   = referralv1.Referral_ACTION_ARRIVE
	complete = referralv1.Referral_ACTION_COMPLETE
	cancel   = referralv1.Referral_ACTION_CANCEL
	backfill = referralv1.Referral_ACTION_BACKFILL
)

// ignoreOutput leaves out the fields the server computes from its clock and
// store versions, so protocmp can compare the rest.
var ignoreOutput = protocmp.IgnoreFields(&referralv1.Referral{}, "name", "create_time", "update_time", "timeline", "submit_time", "triage_due_time", "triage", "etag")

func TestUpReferralAcceptedArrivedCompleted(t *testing.T) {
	f := newFixture(t, nil)
	dls := f.as(t, "dls", clinician)
	created := f.create(t, dls, f.upReferral())

	want := proto.CloneOf(f.upReferral())
	want.SendingFacility = "facilities/dls"
	want.Diagnosis.System = "http://hl7.org/fhir/sid/icd-10"
	want.State = referralv1.Referral_STATE_PENDING
	want.AllowedActions = []action{cancel}
	if diff := cmp.Diff(want, created, protocmp.Transform(), ignoreOutput); diff != "" {
		t.Errorf("created (-want +got):\n%s", diff)
	}
	if got, want := created.GetTriageDueTime().AsTime(), start.Add(24*time.Hour); !got.Equal(want) {
		t.Errorf("triage due %v, want %v", got, want)
	}

	// Each side sees the actions it may take now.
	for name, tt := range map[string]struct {
		ctx  context.Context
		want []action
	}{
		"sender":              {dls, []action{cancel}},
		"receiver clinician":  {f.as(t, "qrmyy", clinician), []action{accept, reject, ret}},
		"coordinator":         {f.as(t, "mzyy", coordinator), []action{accept, reject, ret, cancel}},
		"receiving and coord": {f.as(t, "qrmyy", clinician, coordinator), []action{accept, reject, ret, cancel}},
	} {
		t.Run("actions of the "+name, func(t *testing.T) {
			got := f.get(t, tt.ctx, created.GetName()).GetAllowedActions()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("allowed actions (-want +got):\n%s", diff)
			}
		})
	}

	f.Clock.Advance(2 * time.Hour)
	accepted := f.accept(t, created)
	tr := accepted.GetTriage()
	if accepted.GetState() != referralv1.Referral_STATE_ACCEPTED || len(tr.GetReferralCode()) != 8 ||
		!tr.GetCodeExpireTime().AsTime().Equal(f.Clock.Now().Add(48*time.Hour)) || tr.GetDepartment() != "神经内科" ||
		tr.GetMode() != referralv1.Triage_MODE_OUTPATIENT || tr.GetTriagedBy().GetFacility() != "facilities/qrmyy" {
		t.Fatalf("accepted: %v", accepted)
	}
	if diff := cmp.Diff([]action{cancel}, f.get(t, dls, created.GetName()).GetAllowedActions()); diff != "" {
		t.Errorf("sender's actions after acceptance (-want +got):\n%s", diff)
	}

	qrmyy := f.as(t, "qrmyy", clinician)
	_, err := f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: created.GetName(), ReferralCode: "WRONG234"})
	servertest.WantField(t, err, "referral_code")
	f.Clock.Advance(20 * time.Hour)
	arrived, err := f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: created.GetName(), Etag: accepted.GetEtag(), ReferralCode: tr.GetReferralCode()})
	if err != nil {
		t.Fatal(err)
	}
	if arrived.GetReferral().GetState() != referralv1.Referral_STATE_ARRIVED || !arrived.GetReferral().GetArriveTime().AsTime().Equal(f.Clock.Now()) {
		t.Fatalf("arrived: %v", arrived.GetReferral())
	}
	if diff := cmp.Diff([]action{complete}, arrived.GetReferral().GetAllowedActions()); diff != "" {
		t.Errorf("receiver's actions after arrival (-want +got):\n%s", diff)
	}
	done, err := f.client.CompleteReferral(qrmyy, &referralv1.CompleteReferralRequest{Name: created.GetName(), Outcome: "住院治疗后好转"})
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, ch := range done.GetReferral().GetTimeline() {
		states = append(states, ch.GetTo())
	}
	if diff := cmp.Diff([]string{"STATE_PENDING", "STATE_ACCEPTED", "STATE_ARRIVED", "STATE_COMPLETED"}, states); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	if len(done.GetReferral().GetAllowedActions()) != 0 {
		t.Errorf("actions on a completed referral: %v", done.GetReferral().GetAllowedActions())
	}
	// Arrival cleared the code's timer: nothing fires later.
	f.Clock.Advance(100 * time.Hour)
	if n := f.fire(t); n != 0 {
		t.Errorf("%d timers fired after completion", n)
	}
}

func TestCreateErrors(t *testing.T) {
	f := newFixture(t, nil)
	dls := f.as(t, "dls", clinician)
	with := func(change func(r *referralv1.Referral)) *referralv1.Referral {
		r := f.upReferral()
		change(r)
		return r
	}
	tests := []struct {
		name      string
		ctx       context.Context
		referral  *referralv1.Referral
		wantCode  codes.Code
		wantField string
	}{
		{"facility outside the community", dls, with(func(r *referralv1.Referral) { r.TargetFacility = "facilities/elsewhere" }), 0, "referral.target_facility"},
		{"up to the same level", dls, with(func(r *referralv1.Referral) { r.TargetFacility = "facilities/wjh" }), 0, "referral.target_facility"},
		{"up from a village clinic to its township", f.as(t, "dls-wl", clinician), with(func(r *referralv1.Referral) { r.TargetFacility = "facilities/dls"; r.Patient = f.patients["batu"] }), 0, "referral.patient"},
		{"patient of another facility", dls, with(func(r *referralv1.Referral) { r.Patient = f.patients["wang"] }), 0, "referral.patient"},
		{"unknown patient", dls, with(func(r *referralv1.Referral) { r.Patient = "patients/nobody" }), 0, "referral.patient"},
		{"bad ICD-10 code", dls, with(func(r *referralv1.Referral) { r.Diagnosis.Code = "脑梗" }), 0, "referral.diagnosis.code"},
		{"ICD-10 code in lower case", dls, with(func(r *referralv1.Referral) { r.Diagnosis.Code = "i63.9" }), 0, "referral.diagnosis.code"},
		{"no diagnosis text", dls, with(func(r *referralv1.Referral) { r.Diagnosis.Display = "" }), 0, "referral.diagnosis.display"},
		{"other code system", dls, with(func(r *referralv1.Referral) { r.Diagnosis.System = "http://snomed.info/sct" }), 0, "referral.diagnosis.system"},
		{"no diagnosis", dls, with(func(r *referralv1.Referral) { r.Diagnosis = nil }), 0, "referral.diagnosis"},
		{"no department", dls, with(func(r *referralv1.Referral) { r.TargetDepartment = "" }), 0, "referral.target_department"},
		{"no summary", dls, with(func(r *referralv1.Referral) { r.ClinicalSummary = "" }), 0, "referral.clinical_summary"},
		{"no reason", dls, with(func(r *referralv1.Referral) { r.Reason = "" }), 0, "referral"},
		{"no urgency", dls, with(func(r *referralv1.Referral) { r.Urgency = 0 }), 0, "referral"},
		{"undefined urgency", dls, with(func(r *referralv1.Referral) { r.Urgency = 9 }), 0, "referral.urgency"},
		{"green channel for a routine case", dls, with(func(r *referralv1.Referral) { r.GreenChannel = true }), 0, "referral.urgency"},
		{"down-referral fields on an up-referral", dls, with(func(r *referralv1.Referral) { r.DischargeSummary = "x" }), 0, "referral.direction"},
		{"attachment without kind", dls, with(func(r *referralv1.Referral) {
			r.Attachments = []*referralv1.Attachment{{Ref: "results/abc"}}
		}), 0, "referral.attachments[0].kind"},
		{"malformed result reference", dls, with(func(r *referralv1.Referral) {
			r.Attachments = []*referralv1.Attachment{{Kind: referralv1.Attachment_KIND_RESULT, Ref: "lab/reports/1"}}
		}), 0, "referral.attachments[0].ref"},
		{"malformed report reference", dls, with(func(r *referralv1.Referral) {
			r.Attachments = []*referralv1.Attachment{{Kind: referralv1.Attachment_KIND_REPORT, Ref: "x-ray/reports/1"}}
		}), 0, "referral.attachments[0].ref"},
		{"attachment twice", dls, with(func(r *referralv1.Referral) {
			r.Attachments = []*referralv1.Attachment{{Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/a"}, {Kind: referralv1.Attachment_KIND_RESULT, Ref: "results/a"}}
		}), 0, "referral.attachments[1].ref"},
		{"down-referral up the tiers", f.as(t, "qrmyy", clinician), with(func(r *referralv1.Referral) {
			d := f.downReferral()
			d.TargetFacility = "facilities/mzyy"
			proto.Reset(r)
			proto.Merge(r, d)
		}), 0, "referral.target_facility"},
		{"down-referral without plan", f.as(t, "qrmyy", clinician), with(func(r *referralv1.Referral) {
			d := f.downReferral()
			d.CarePlan = nil
			proto.Reset(r)
			proto.Merge(r, d)
		}), 0, "referral.care_plan.kind"},
		{"receiving doctor of another facility", f.as(t, "qrmyy", clinician), with(func(r *referralv1.Referral) {
			d := f.downReferral()
			d.ReceivingPractitioner = "practitioners/doc-wjh-li"
			proto.Reset(r)
			proto.Merge(r, d)
		}), 0, "referral.receiving_practitioner"},
		{"green-channel down-referral", f.as(t, "qrmyy", clinician), with(func(r *referralv1.Referral) {
			d := f.downReferral()
			d.GreenChannel, d.Urgency = true, referralv1.Urgency_URGENCY_EMERGENCY
			proto.Reset(r)
			proto.Merge(r, d)
		}), 0, "referral.green_channel"},
		{"auditor may not refer", f.as(t, "dls", typev1.Role_ROLE_AUDITOR), f.upReferral(), codes.PermissionDenied, ""},
		{"another community", f.As(t, "elsewhere", "dls", clinician), f.upReferral(), 0, "referral.target_facility"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client.CreateReferral(tt.ctx, &referralv1.CreateReferralRequest{Referral: tt.referral})
			if tt.name == "another community" {
				// The caller's own facility is unknown in that community.
				servertest.WantReason(t, err, "SENDING_FACILITY_UNKNOWN")
				return
			}
			servertest.WantError(t, err, tt.wantCode, tt.wantField)
		})
	}
	list, err := f.client.ListReferrals(f.as(t, "mzyy", coordinator), &referralv1.ListReferralsRequest{Box: referralv1.Box_BOX_ALL})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetReferrals()); n != 0 {
		t.Errorf("%d referrals stored by failed creates", n)
	}
}

func TestCreateIsIdempotentByRequestID(t *testing.T) {
	f := newFixture(t, nil)
	dls := f.as(t, "dls", clinician)
	req := &referralv1.CreateReferralRequest{Referral: f.upReferral(), RequestId: "ref-1"}
	first, err := f.client.CreateReferral(dls, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.client.CreateReferral(dls, req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
		t.Errorf("retry (-first +retry):\n%s", diff)
	}
	list, err := f.client.ListReferrals(dls, &referralv1.ListReferralsRequest{Box: referralv1.Box_BOX_SENT})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetReferrals()) != 1 {
		t.Errorf("%d referrals after a retried create", len(list.GetReferrals()))
	}
}

// setUp brings a new referral into each state by the API, for the walk of
// the illegal moves.
func setUp(t *testing.T, f *fixture, st referralv1.Referral_State) *referralv1.Referral {
	t.Helper()
	dls, qrmyy := f.as(t, "dls", clinician), f.as(t, "qrmyy", clinician)
	must := func(r *referralv1.Referral, err error) *referralv1.Referral {
		t.Helper()
		if err != nil {
			t.Fatalf("setting up %s: %v", st, err)
		}
		return r
	}
	switch st {
	case referralv1.Referral_STATE_SENT:
		return f.create(t, qrmyy, f.downReferral())
	case referralv1.Referral_STATE_GREEN_CHANNEL:
		r := f.upReferral()
		r.GreenChannel, r.Urgency = true, referralv1.Urgency_URGENCY_EMERGENCY
		return f.create(t, dls, r)
	}
	r := f.create(t, dls, f.upReferral())
	switch st {
	case referralv1.Referral_STATE_PENDING:
		return r
	case referralv1.Referral_STATE_REJECTED:
		resp, err := f.client.RejectReferral(qrmyy, &referralv1.RejectReferralRequest{Name: r.GetName(), Reason: referralv1.RejectReason_REJECT_REASON_NO_CAPACITY})
		return must(resp.GetReferral(), err)
	case referralv1.Referral_STATE_RETURNED:
		resp, err := f.client.ReturnReferral(qrmyy, &referralv1.ReturnReferralRequest{Name: r.GetName(), Advice: "请补充头颅CT"})
		return must(resp.GetReferral(), err)
	case referralv1.Referral_STATE_CANCELLED:
		resp, err := f.client.CancelReferral(dls, &referralv1.CancelReferralRequest{Name: r.GetName(), Reason: "患者拒绝"})
		return must(resp.GetReferral(), err)
	}
	r = f.accept(t, r)
	switch st {
	case referralv1.Referral_STATE_ACCEPTED:
		return r
	case referralv1.Referral_STATE_EXPIRED:
		f.Clock.Advance(49 * time.Hour)
		f.fire(t)
		return f.get(t, dls, r.GetName())
	}
	resp, err := f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: r.GetName(), ReferralCode: r.GetTriage().GetReferralCode()})
	r = must(resp.GetReferral(), err)
	if st == referralv1.Referral_STATE_ARRIVED {
		return r
	}
	c, err := f.client.CompleteReferral(qrmyy, &referralv1.CompleteReferralRequest{Name: r.GetName()})
	return must(c.GetReferral(), err)
}

// call runs the action that moves a referral to state to, as a caller who
// is on a side allowed to take it. ok is false for states no action reaches
// (a referral is created in them, or a deadline moves it there).
func call(t *testing.T, f *fixture, r *referralv1.Referral, to referralv1.Referral_State) (err error, ok bool) {
	t.Helper()
	name, code := r.GetName(), r.GetTriage().GetReferralCode()
	sender, receiver := f.as(t, "dls", clinician), f.as(t, "qrmyy", clinician)
	if r.GetDirection() == referralv1.Direction_DIRECTION_DOWN {
		sender, receiver = receiver, sender
	}
	switch to {
	case referralv1.Referral_STATE_PENDING:
		_, err = f.client.ResubmitReferral(sender, &referralv1.ResubmitReferralRequest{Name: name})
	case referralv1.Referral_STATE_ACCEPTED:
		_, err = f.client.AcceptReferral(receiver, &referralv1.AcceptReferralRequest{Name: name, Mode: referralv1.Triage_MODE_INPATIENT, Department: "内科", AppointmentTime: timestamppb.New(f.Clock.Now().Add(time.Hour))})
	case referralv1.Referral_STATE_REJECTED:
		_, err = f.client.RejectReferral(receiver, &referralv1.RejectReferralRequest{Name: name, Reason: referralv1.RejectReason_REJECT_REASON_NOT_INDICATED})
	case referralv1.Referral_STATE_RETURNED:
		_, err = f.client.ReturnReferral(receiver, &referralv1.ReturnReferralRequest{Name: name, Advice: "x"})
	case referralv1.Referral_STATE_ARRIVED:
		_, err = f.client.ArriveReferral(receiver, &referralv1.ArriveReferralRequest{Name: name, ReferralCode: code})
	case referralv1.Referral_STATE_COMPLETED:
		_, err = f.client.CompleteReferral(receiver, &referralv1.CompleteReferralRequest{Name: name})
	case referralv1.Referral_STATE_CANCELLED:
		_, err = f.client.CancelReferral(sender, &referralv1.CancelReferralRequest{Name: name, Reason: "x"})
	default:
		return nil, false
	}
	return err, true
}

func TestEveryIllegalTransitionIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	referrals := map[referralv1.Referral_State]*referralv1.Referral{}
	for _, mv := range referral.Machine.Illegal() {
		t.Run(mv.String(), func(t *testing.T) {
			r, ok := referrals[mv.From]
			if !ok {
				r = setUp(t, f, mv.From)
				referrals[mv.From] = r
			}
			if r.GetState() != mv.From {
				t.Fatalf("set up in %s, want %s", r.GetState(), mv.From)
			}
			err, ok := call(t, f, r, mv.To)
			if !ok {
				// No API call reaches this state: the machine itself
				// must still refuse the move.
				if referral.Machine.Check(mv.From, mv.To) == nil {
					t.Errorf("the machine allows %v", mv)
				}
				return
			}
			servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
			if got := f.get(t, f.as(t, "mzyy", coordinator), r.GetName()).GetState(); got != mv.From {
				t.Errorf("state after a refused move: %s", got)
			}
		})
	}
}

func TestActionsACallerMayNotTake(t *testing.T) {
	f := newFixture(t, nil)
	pending := f.create(t, f.as(t, "dls", clinician), f.upReferral())
	green := setUp(t, f, referralv1.Referral_STATE_GREEN_CHANNEL)
	name := pending.GetName()
	tests := []struct {
		name     string
		ctx      context.Context
		call     func(ctx context.Context) error
		wantCode codes.Code
	}{
		{"the sender accepts its own referral", f.as(t, "dls", clinician), func(ctx context.Context) error {
			_, err := f.client.AcceptReferral(ctx, &referralv1.AcceptReferralRequest{Name: name, Mode: 1, Department: "x", AppointmentTime: timestamppb.New(f.Clock.Now())})
			return err
		}, codes.PermissionDenied},
		{"the receiver cancels", f.as(t, "qrmyy", clinician), func(ctx context.Context) error {
			_, err := f.client.CancelReferral(ctx, &referralv1.CancelReferralRequest{Name: name, Reason: "x"})
			return err
		}, codes.PermissionDenied},
		{"a coordinator resubmits", f.as(t, "mzyy", coordinator), func(ctx context.Context) error {
			_, err := f.client.ResubmitReferral(ctx, &referralv1.ResubmitReferralRequest{Name: name})
			return err
		}, codes.PermissionDenied},
		{"the receiver backfills a green channel", f.as(t, "qrmyy", clinician), func(ctx context.Context) error {
			_, err := f.client.BackfillReferral(ctx, &referralv1.BackfillReferralRequest{Name: green.GetName(), Diagnosis: &typev1.Code{Code: "I21.9", Display: "急性心肌梗死"}, ClinicalSummary: "x", DepartureTime: timestamppb.New(f.Clock.Now())})
			return err
		}, codes.PermissionDenied},
		{"an auditor rejects", f.as(t, "qrmyy", typev1.Role_ROLE_AUDITOR), func(ctx context.Context) error {
			_, err := f.client.RejectReferral(ctx, &referralv1.RejectReferralRequest{Name: name, Reason: 1})
			return err
		}, codes.PermissionDenied},
		{"an administrator reads", f.as(t, "mzyy", admin), func(ctx context.Context) error {
			_, err := f.client.GetReferral(ctx, &referralv1.GetReferralRequest{Name: name})
			return err
		}, codes.PermissionDenied},
		{"another facility reads", f.as(t, "wjh", clinician), func(ctx context.Context) error {
			_, err := f.client.GetReferral(ctx, &referralv1.GetReferralRequest{Name: name})
			return err
		}, codes.NotFound},
		{"another facility accepts with a stale etag", f.as(t, "mzyy", clinician), func(ctx context.Context) error {
			_, err := f.client.AcceptReferral(ctx, &referralv1.AcceptReferralRequest{Name: name, Etag: "99", Mode: 1, Department: "x", AppointmentTime: timestamppb.New(f.Clock.Now())})
			return err
		}, codes.NotFound},
		{"another facility lists the community", f.as(t, "wjh", clinician), func(ctx context.Context) error {
			_, err := f.client.ListReferrals(ctx, &referralv1.ListReferralsRequest{Box: referralv1.Box_BOX_ALL})
			return err
		}, codes.PermissionDenied},
		{"a clinician reads another facility's worklist", f.as(t, "wjh", clinician), func(ctx context.Context) error {
			_, err := f.client.ListWorklist(ctx, &referralv1.ListWorklistRequest{Stage: referralv1.Stage_STAGE_TRIAGE, Facility: "facilities/qrmyy"})
			return err
		}, codes.PermissionDenied},
		{"a clinician reads statistics", f.as(t, "qrmyy", clinician), func(ctx context.Context) error {
			_, err := f.client.GetStatistics(ctx, &referralv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-11"})
			return err
		}, codes.PermissionDenied},
		{"another community", f.As(t, "elsewhere", "qrmyy", coordinator), func(ctx context.Context) error {
			_, err := f.client.GetReferral(ctx, &referralv1.GetReferralRequest{Name: name})
			return err
		}, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servertest.WantCode(t, tt.call(tt.ctx), tt.wantCode)
		})
	}
	if got := f.get(t, f.as(t, "dls", clinician), name); got.GetState() != referralv1.Referral_STATE_PENDING || got.GetEtag() != pending.GetEtag() {
		t.Errorf("the refused calls changed the referral: %v", got)
	}
}

func TestConcurrentAcceptsWithOneEtag(t *testing.T) {
	f := newFixture(t, nil)
	r := f.create(t, f.as(t, "dls", clinician), f.upReferral())
	const coordinators = 2
	errs := make([]error, coordinators)
	var wg sync.WaitGroup
	for i := range coordinators {
		ctx := f.as(t, []string{"qrmyy", "mzyy"}[i], coordinator)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.client.AcceptReferral(ctx, &referralv1.AcceptReferralRequest{
				Name: r.GetName(), Etag: r.GetEtag(), Mode: referralv1.Triage_MODE_OUTPATIENT, Department: "神经内科",
				AppointmentTime: timestamppb.New(f.Clock.Now().Add(time.Hour)),
			})
		}()
	}
	wg.Wait()
	var codesSeen []codes.Code
	for _, err := range errs {
		codesSeen = append(codesSeen, status.Code(err))
	}
	if !(codesSeen[0] == codes.OK && codesSeen[1] == codes.Aborted || codesSeen[0] == codes.Aborted && codesSeen[1] == codes.OK) {
		t.Fatalf("codes %v, want one OK and one Aborted", codesSeen)
	}
	got := f.get(t, f.as(t, "dls", clinician), r.GetName())
	if len(got.GetTimeline()) != 2 {
		t.Errorf("timeline %v, want creation and one acceptance", got.GetTimeline())
	}
}

func TestTriageDeadlinesSurviveARestart(t *testing.T) {
	f := newFixture(t, nil)
	dls := f.as(t, "dls", clinician)
	routine := f.create(t, dls, f.upReferral())
	emergency := f.upReferral()
	emergency.Urgency = referralv1.Urgency_URGENCY_EMERGENCY
	urgent := f.create(t, dls, emergency)

	f.restart(t)
	coord := f.as(t, "qrmyy", coordinator)
	f.Clock.Advance(29 * time.Minute)
	if n := f.fire(t); n != 0 {
		t.Fatalf("%d fired before 30 minutes", n)
	}
	f.Clock.Advance(2 * time.Minute)
	if n := f.fire(t); n != 1 {
		t.Fatalf("%d fired at 31 minutes, want the emergency's", n)
	}
	got := f.get(t, coord, urgent.GetName())
	if !got.GetEscalated() || !got.GetEscalateTime().AsTime().Equal(start.Add(30*time.Minute)) {
		t.Errorf("emergency after 31 minutes: escalated %v at %v", got.GetEscalated(), got.GetEscalateTime())
	}

	f.restart(t)
	coord = f.as(t, "qrmyy", coordinator)
	f.Clock.Advance(24 * time.Hour)
	if n := f.fire(t); n != 1 {
		t.Fatalf("%d fired at 24 hours, want the routine one's", n)
	}
	work, err := f.client.ListWorklist(coord, &referralv1.ListWorklistRequest{Stage: referralv1.Stage_STAGE_TRIAGE})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range work.GetReferrals() {
		if !r.GetEscalated() {
			t.Errorf("%s is not flagged in the worklist", r.GetName())
		}
	}
	if len(work.GetReferrals()) != 2 {
		t.Errorf("worklist has %d referrals, want 2", len(work.GetReferrals()))
	}
	evs, err := f.client.ListEvents(coord, &referralv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var escalated []string
	for _, e := range evs.GetEvents() {
		if e.GetType() == "referral.escalated" {
			escalated = append(escalated, e.GetResource())
		}
	}
	if diff := cmp.Diff([]string{urgent.GetName(), routine.GetName()}, escalated); diff != "" {
		t.Errorf("escalation events (-want +got):\n%s", diff)
	}
	// Triage after escalation clears the flag's clock; a resubmission would
	// restart it.
	if _, err := f.client.RejectReferral(coord, &referralv1.RejectReferralRequest{Name: routine.GetName(), Reason: referralv1.RejectReason_REJECT_REASON_OTHER}); err == nil {
		t.Error("REJECT_REASON_OTHER without a note was accepted")
	}
}

func TestReturnedReferralIsResubmitted(t *testing.T) {
	f := newFixture(t, nil)
	dls, qrmyy := f.as(t, "dls", clinician), f.as(t, "qrmyy", clinician)
	r := f.create(t, dls, f.upReferral())
	returned, err := f.client.ReturnReferral(qrmyy, &referralv1.ReturnReferralRequest{Name: r.GetName(), Etag: r.GetEtag(), Advice: "请补充头颅CT结果"})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, dls, r.GetName()); got.GetTriage().GetNote() != "请补充头颅CT结果" || !cmp.Equal(got.GetAllowedActions(), []action{resubmit, cancel}) {
		t.Errorf("the sender sees %v with actions %v", got.GetTriage(), got.GetAllowedActions())
	}
	// The return stopped the triage clock.
	f.Clock.Advance(25 * time.Hour)
	if n := f.fire(t); n != 0 {
		t.Errorf("%d fired for a returned referral", n)
	}
	again, err := f.client.ResubmitReferral(dls, &referralv1.ResubmitReferralRequest{Name: r.GetName(), Etag: returned.GetReferral().GetEtag(), ClinicalSummary: "补充：头颅CT示左侧基底节区低密度影。"})
	if err != nil {
		t.Fatal(err)
	}
	got := again.GetReferral()
	if got.GetState() != referralv1.Referral_STATE_PENDING || !got.GetSubmitTime().AsTime().Equal(f.Clock.Now()) ||
		!got.GetTriageDueTime().AsTime().Equal(f.Clock.Now().Add(24*time.Hour)) || !strings.HasPrefix(got.GetClinicalSummary(), "补充") ||
		got.GetTriage() != nil || got.GetTimeline()[1].GetReason() != "请补充头颅CT结果" {
		t.Errorf("resubmitted: %v", got)
	}
}

func TestCodeExpires(t *testing.T) {
	f := newFixture(t, nil)
	r := f.accept(t, f.create(t, f.as(t, "dls", clinician), f.upReferral()))
	code := r.GetTriage().GetReferralCode()
	qrmyy := f.as(t, "qrmyy", clinician)

	f.Clock.Advance(48 * time.Hour)
	// Before the timer is noticed, the code is refused by its time.
	_, err := f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: r.GetName(), ReferralCode: code})
	servertest.WantReason(t, err, referral.ReasonCodeExpired)
	f.restart(t)
	qrmyy = f.as(t, "qrmyy", clinician)
	if n := f.fire(t); n != 1 {
		t.Fatalf("%d fired, want the code's", n)
	}
	got := f.get(t, qrmyy, r.GetName())
	if got.GetState() != referralv1.Referral_STATE_EXPIRED || got.GetTimeline()[2].GetTime().AsTime() != start.Add(48*time.Hour) {
		t.Errorf("after expiry: %v", got)
	}
	_, err = f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: r.GetName(), ReferralCode: code})
	servertest.WantReason(t, err, apierr.ReasonInvalidTransition)

	t.Run("appointment after the code expires", func(t *testing.T) {
		p := f.create(t, f.as(t, "dls", clinician), f.upReferral())
		_, err := f.client.AcceptReferral(qrmyy, &referralv1.AcceptReferralRequest{Name: p.GetName(), Mode: 1, Department: "x", AppointmentTime: timestamppb.New(f.Clock.Now().Add(72 * time.Hour))})
		servertest.WantField(t, err, "appointment_time")
		_, err = f.client.AcceptReferral(qrmyy, &referralv1.AcceptReferralRequest{Name: p.GetName(), Mode: 1, Department: "x", AppointmentTime: timestamppb.New(f.Clock.Now().Add(-time.Hour))})
		servertest.WantField(t, err, "appointment_time")
	})
}

func TestWorklistPutsContractedPatientsFirst(t *testing.T) {
	f := newFixture(t, nil)
	dls := f.as(t, "dls", clinician)
	var names []string
	for _, c := range []struct {
		contract bool
		urgency  referralv1.Urgency
	}{
		{false, referralv1.Urgency_URGENCY_ROUTINE},
		{false, referralv1.Urgency_URGENCY_EMERGENCY},
		{true, referralv1.Urgency_URGENCY_ROUTINE},
		{true, referralv1.Urgency_URGENCY_URGENT},
		{false, referralv1.Urgency_URGENCY_ROUTINE},
	} {
		r := f.upReferral()
		r.FamilyDoctorContract, r.Urgency = c.contract, c.urgency
		names = append(names, f.create(t, dls, r).GetName())
		f.Clock.Advance(time.Minute)
	}
	// Another facility's referral is not in qrmyy's worklist.
	other := f.upReferral()
	other.TargetFacility = "facilities/mzyy"
	f.create(t, dls, other)

	var got []string
	token := ""
	for {
		page, err := f.client.ListWorklist(f.as(t, "qrmyy", clinician), &referralv1.ListWorklistRequest{Stage: referralv1.Stage_STAGE_TRIAGE, PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.GetReferrals() {
			got = append(got, r.GetName())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	want := []string{names[3], names[2], names[1], names[0], names[4]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("worklist order (-want +got):\n%s", diff)
	}
	// Accepted referrals move to the arrival stage.
	f.accept(t, f.get(t, dls, names[3]))
	arrival, err := f.client.ListWorklist(f.as(t, "mzyy", coordinator), &referralv1.ListWorklistRequest{Stage: referralv1.Stage_STAGE_ARRIVAL, Facility: "facilities/qrmyy"})
	if err != nil {
		t.Fatal(err)
	}
	if len(arrival.GetReferrals()) != 1 || arrival.GetReferrals()[0].GetName() != names[3] {
		t.Errorf("arrival stage: %v", arrival.GetReferrals())
	}
}

func TestGreenChannel(t *testing.T) {
	f := newFixture(t, nil)
	dls, qrmyy := f.as(t, "dls", clinician), f.as(t, "qrmyy", clinician)
	r := &referralv1.Referral{
		Direction: referralv1.Direction_DIRECTION_UP, GreenChannel: true, Patient: f.patients["qiqige"],
		TargetFacility: "facilities/qrmyy", Reason: "胸痛两小时，疑似急性心梗", Urgency: referralv1.Urgency_URGENCY_EMERGENCY,
	}
	created := f.create(t, dls, r)
	if created.GetState() != referralv1.Referral_STATE_GREEN_CHANNEL || created.GetTargetDepartment() != "急诊科" || created.GetTriageDueTime() != nil {
		t.Fatalf("green channel: %v", created)
	}
	// The duty department is notified at once: the receiver's feed has
	// the event.
	evs, err := f.client.ListEvents(qrmyy, &referralv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.GetEvents()) != 1 || evs.GetEvents()[0].GetType() != "referral.green_channel" || evs.GetEvents()[0].GetResource() != created.GetName() {
		t.Fatalf("receiver's feed: %v", evs.GetEvents())
	}
	if n := f.fire(t); n != 0 {
		t.Errorf("a green channel has a triage clock")
	}
	if diff := cmp.Diff([]action{cancel, backfill}, created.GetAllowedActions()); diff != "" {
		t.Errorf("sender's actions (-want +got):\n%s", diff)
	}

	left := f.Clock.Now().Add(-10 * time.Minute)
	f.Clock.Advance(40 * time.Minute)
	arrivedAt := f.Clock.Now().Add(-5 * time.Minute)
	arrived, err := f.client.ArriveReferral(qrmyy, &referralv1.ArriveReferralRequest{Name: created.GetName(), ArriveTime: timestamppb.New(arrivedAt)})
	if err != nil {
		t.Fatal(err)
	}
	if !arrived.GetReferral().GetArriveTime().AsTime().Equal(arrivedAt) {
		t.Errorf("arrive time %v, want the actual %v", arrived.GetReferral().GetArriveTime().AsTime(), arrivedAt)
	}
	_, err = f.client.CompleteReferral(qrmyy, &referralv1.CompleteReferralRequest{Name: created.GetName()})
	servertest.WantReason(t, err, referral.ReasonNotBackfilled)

	bad := []struct {
		name  string
		req   *referralv1.BackfillReferralRequest
		field string
	}{
		{"departure after arrival", &referralv1.BackfillReferralRequest{Diagnosis: &typev1.Code{Code: "I21.9", Display: "急性心肌梗死"}, ClinicalSummary: "x", DepartureTime: timestamppb.New(arrivedAt.Add(time.Minute))}, "departure_time"},
		{"departure in the future", &referralv1.BackfillReferralRequest{Diagnosis: &typev1.Code{Code: "I21.9", Display: "急性心肌梗死"}, ClinicalSummary: "x", DepartureTime: timestamppb.New(f.Clock.Now().Add(time.Hour))}, "departure_time"},
		{"bad code", &referralv1.BackfillReferralRequest{Diagnosis: &typev1.Code{Code: "心梗", Display: "急性心肌梗死"}, ClinicalSummary: "x", DepartureTime: timestamppb.New(left)}, "diagnosis.code"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			b.req.Name = created.GetName()
			_, err := f.client.BackfillReferral(dls, b.req)
			servertest.WantField(t, err, b.field)
		})
	}
	filled, err := f.client.BackfillReferral(dls, &referralv1.BackfillReferralRequest{
		Name: created.GetName(), Etag: arrived.GetReferral().GetEtag(), Diagnosis: &typev1.Code{Code: "I21.9", Display: "急性心肌梗死"},
		ClinicalSummary: "胸痛两小时，心电图ST段抬高。", DepartureTime: timestamppb.New(left),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := filled.GetReferral()
	if !got.GetDepartureTime().AsTime().Equal(left) || !got.GetBackfillTime().AsTime().Equal(f.Clock.Now()) || got.GetDiagnosis().GetSystem() == "" || len(got.GetAllowedActions()) != 0 {
		t.Errorf("backfilled: %v", got)
	}
	_, err = f.client.BackfillReferral(dls, &referralv1.BackfillReferralRequest{Name: created.GetName(), Diagnosis: got.GetDiagnosis(), ClinicalSummary: "x", DepartureTime: timestamppb.New(left)})
	servertest.WantReason(t, err, referral.ReasonNoBackfill)
	if _, err := f.client.CompleteReferral(qrmyy, &referralv1.CompleteReferralRequest{Name: created.GetName()}); err != nil {
		t.Errorf("complete after backfill: %v", err)
	}
}

func TestConfigIsChecked(t *testing.T) {
	cfg := config()
	cfg.ScanInterval, cfg.FollowUpGrace = 0, -time.Hour
	_, err := referral.New(referral.Deps{}, cfg)
	if err == nil || !strings.Contains(err.Error(), "-referral.scan-interval") || !strings.Contains(err.Error(), "-referral.follow-up-grace") {
		t.Errorf("New with bad settings: %v", err)
	}
}
