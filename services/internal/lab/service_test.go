package lab_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store"
)

// ignoreStamps drops the fields stamped with the clock or with generated
// names, which the tests check separately where they matter.
var ignoreStamps = protocmp.IgnoreFields(&labv1.Report{}, "timeline", "create_time", "update_time", "enter_time", "verify_time", "critical_notifications", "history")

func TestOrderToFinalReport(t *testing.T) {
	f := newFixture(t)
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3", "2951-2", "14682-9")
	if o.GetLabFacility() != "facilities/qrmyy" || o.GetRequestingFacility() != "facilities/dls" || o.GetClinician() != "doc-han" ||
		o.GetPatientSex() != typev1.Sex_SEX_MALE || o.GetPatientBirthDate() != "1958-03-14" || o.GetTotalPriceFen() != 1800 || o.GetState() != labv1.Order_STATE_PLACED {
		t.Fatalf("order %v", o)
	}
	f.toState(t, o, "B0001", labv1.Specimen_STATE_IN_TESTING)
	f.Clock.Advance(30 * time.Minute)
	entered, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/B0001", Results: []*labv1.ResultInput{
		{Code: "2823-3", Value: 5.9, Unit: "mmol/L"},
		{Code: "2951-2", Value: 140, Unit: "mmol/l"},
		{Code: "14682-9", Value: 1.5, Unit: "mg/dL"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	verified, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/B0001", Etag: entered.GetReport().GetEtag()})
	if err != nil {
		t.Fatal(err)
	}
	want := &labv1.Report{
		Name: "reports/B0001", Specimen: "specimens/B0001", Order: o.GetName(), Patient: f.batu,
		RequestingFacility: "facilities/dls", LabFacility: "facilities/qrmyy", State: labv1.Report_STATE_FINAL, Version: 1,
		EnteredBy: "lab-wang", VerifiedBy: "lab-liu", Etag: "2",
		Results: []*labv1.Result{
			{Code: "2823-3", Display: "钾 K", Value: 5.9, Unit: "mmol/L", Entered: &typev1.Quantity{Value: 5.9, Unit: "mmol/L"}, Flag: labv1.Flag_FLAG_H, ReferenceRange: "3.5-5.3", CatalogVersion: 1},
			{Code: "2951-2", Display: "钠 Na", Value: 140, Unit: "mmol/L", Entered: &typev1.Quantity{Value: 140, Unit: "mmol/l"}, Flag: labv1.Flag_FLAG_N, ReferenceRange: "137-147", CatalogVersion: 1},
			// 1.5 mg/dL is 132.6 µmol/L, high for a man (57-97).
			{Code: "14682-9", Display: "肌酐 Cr", Value: 132.6, Unit: "umol/L", Entered: &typev1.Quantity{Value: 1.5, Unit: "mg/dL"}, Flag: labv1.Flag_FLAG_H, ReferenceRange: "57-97", CatalogVersion: 1},
		},
	}
	if diff := cmp.Diff(want, verified.GetReport(), protocmp.Transform(), ignoreStamps); diff != "" {
		t.Errorf("final report (-want +got):\n%s", diff)
	}
	got, err := f.lab.GetOrder(f.doctor(t), &labv1.GetOrderRequest{Name: o.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetOrder().GetState() != labv1.Order_STATE_COMPLETED || len(got.GetSpecimens()) != 1 || got.GetSpecimens()[0].GetState() != labv1.Specimen_STATE_DONE || len(got.GetReports()) != 1 {
		t.Errorf("order after verification: %v", got)
	}
	var hand []string
	for _, c := range got.GetSpecimens()[0].GetTimeline() {
		hand = append(hand, c.GetTo()+" by "+c.GetActor().GetSubject())
	}
	wantHand := []string{"STATE_COLLECTED by doc-han", "STATE_IN_TRANSIT by doc-han", "STATE_RECEIVED by lab-wang", "STATE_IN_TESTING by lab-wang", "STATE_DONE by lab-liu"}
	if diff := cmp.Diff(wantHand, hand); diff != "" {
		t.Errorf("specimen timeline (-want +got):\n%s", diff)
	}
	var orderSteps []string
	for _, c := range got.GetOrder().GetTimeline() {
		orderSteps = append(orderSteps, c.GetTo())
	}
	if diff := cmp.Diff([]string{"STATE_PLACED", "STATE_IN_PROGRESS", "STATE_COMPLETED"}, orderSteps); diff != "" {
		t.Errorf("order timeline (-want +got):\n%s", diff)
	}
}

func TestFlagsBySexAgeAndUnit(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		patient func() string
		input   *labv1.ResultInput
		flag    labv1.Flag
		rng     string
	}{
		{"man's hemoglobin normal", func() string { return f.batu }, &labv1.ResultInput{Code: "718-7", Value: 140, Unit: "g/L"}, labv1.Flag_FLAG_N, "130-175"},
		{"woman's hemoglobin high at the man's normal", func() string { return f.qiqige }, &labv1.ResultInput{Code: "718-7", Value: 160, Unit: "g/L"}, labv1.Flag_FLAG_H, "115-150"},
		{"g/dL converted", func() string { return f.qiqige }, &labv1.ResultInput{Code: "718-7", Value: 11.0, Unit: "g/dL"}, labv1.Flag_FLAG_L, "115-150"},
		{"critical low hemoglobin", func() string { return f.batu }, &labv1.ResultInput{Code: "718-7", Value: 45, Unit: "g/L"}, labv1.Flag_FLAG_LL, "130-175"},
		{"critical high potassium", func() string { return f.batu }, &labv1.ResultInput{Code: "2823-3", Value: 6.8, Unit: "mmol/L"}, labv1.Flag_FLAG_HH, "3.5-5.3"},
		{"low potassium", func() string { return f.batu }, &labv1.ResultInput{Code: "2823-3", Value: 3.1, Unit: "mmol/L"}, labv1.Flag_FLAG_L, "3.5-5.3"},
		{"glucose in mg/dL", func() string { return f.batu }, &labv1.ResultInput{Code: "2345-7", Value: 40, Unit: "mg/dL"}, labv1.Flag_FLAG_LL, "3.9-6.1"},
		{"a girl's WBC uses the adult band after 6", func() string { return f.wuyun }, &labv1.ResultInput{Code: "6690-2", Value: 10.5, Unit: "10*9/L"}, labv1.Flag_FLAG_H, "3.5-9.5"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := f.order(t, tt.patient(), labv1.Priority_PRIORITY_ROUTINE, tt.input.GetCode())
			barcode := "F" + string(rune('A'+i)) + "0001"
			f.toState(t, o, barcode, labv1.Specimen_STATE_IN_TESTING)
			r, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/" + barcode, Results: []*labv1.ResultInput{tt.input}})
			if err != nil {
				t.Fatal(err)
			}
			res := r.GetReport().GetResults()[0]
			if res.GetFlag() != tt.flag || res.GetReferenceRange() != tt.rng {
				t.Errorf("flag %v range %q, want %v %q (value %v %s)", res.GetFlag(), res.GetReferenceRange(), tt.flag, tt.rng, res.GetValue(), res.GetUnit())
			}
		})
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3", "718-7")
	f.collect(t, o, "E0001", "2823-3")
	inTesting := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.toState(t, inTesting, "E0002", labv1.Specimen_STATE_IN_TESTING)
	entered := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.toState(t, entered, "E0003", labv1.Specimen_STATE_IN_TESTING)
	if _, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/E0003", Results: []*labv1.ResultInput{normal("2823-3")}}); err != nil {
		t.Fatal(err)
	}
	cancelled := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.toState(t, cancelled, "E0004", labv1.Specimen_STATE_IN_TRANSIT)
	if _, err := f.lab.CancelOrder(f.doctor(t), &labv1.CancelOrderRequest{Name: cancelled.GetName(), Reason: "patient left"}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		field  string
		reason string
	}{
		{name: "unknown test code", call: func() error {
			_, err := f.lab.CreateOrder(f.doctor(t), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3", "99999-9"}, Priority: labv1.Priority_PRIORITY_STAT}})
			return err
		}, field: "order.tests[1]"},
		{name: "unknown patient", call: func() error {
			_, err := f.lab.CreateOrder(f.doctor(t), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: "patients/nobody", Tests: []string{"2823-3"}, Priority: labv1.Priority_PRIORITY_STAT}})
			return err
		}, field: "order.patient"},
		{name: "no priority", call: func() error {
			_, err := f.lab.CreateOrder(f.doctor(t), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3"}}})
			return err
		}, field: "order"},
		{name: "facility without a lab center", call: func() error {
			_, err := f.lab.CreateOrder(f.as(t, "doc-x", "xhr", clinician), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3"}, Priority: labv1.Priority_PRIORITY_STAT}})
			return err
		}, reason: "NO_LAB_CENTER"},
		{name: "facility not in the directory", call: func() error {
			_, err := f.lab.CreateOrder(f.as(t, "doc-y", "nowhere", clinician), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3"}, Priority: labv1.Priority_PRIORITY_STAT}})
			return err
		}, reason: "FACILITY_UNKNOWN"},
		{name: "specimen for a test not ordered", call: func() error {
			_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: "E0100", Specimen: &labv1.Specimen{Order: o.GetName(), Tests: []string{"2951-2"}}})
			return err
		}, field: "specimen.tests[0]"},
		{name: "specimen mixing specimen types", call: func() error {
			_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: "E0101", Specimen: &labv1.Specimen{Order: o.GetName(), Tests: []string{"718-7", "2823-3"}}})
			return err
		}, field: "specimen.tests[1]"},
		{name: "test already on another specimen", call: func() error {
			_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: "E0102", Specimen: &labv1.Specimen{Order: o.GetName(), Tests: []string{"2823-3"}}})
			return err
		}, field: "specimen.tests[0]"},
		{name: "duplicate barcode", call: func() error {
			_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: "E0001", Specimen: &labv1.Specimen{Order: o.GetName(), Tests: []string{"718-7"}}})
			return err
		}, code: codes.AlreadyExists},
		{name: "bad barcode", call: func() error {
			_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: "E 1", Specimen: &labv1.Specimen{Order: o.GetName(), Tests: []string{"718-7"}}})
			return err
		}, field: "barcode"},
		{name: "result for a test not ordered", call: func() error {
			_, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/E0002", Results: []*labv1.ResultInput{{Code: "718-7", Value: 140, Unit: "g/L"}}})
			return err
		}, field: "results[0].code"},
		{name: "unit the test does not accept", call: func() error {
			_, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/E0002", Results: []*labv1.ResultInput{{Code: "2823-3", Value: 4, Unit: "g/L"}}})
			return err
		}, field: "results[0].unit"},
		{name: "results before testing", call: func() error {
			_, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/E0001", Results: []*labv1.ResultInput{normal("2823-3")}})
			return err
		}, reason: lab.ReasonSpecimenNotTesting},
		{name: "verifying your own entry", call: func() error {
			_, err := f.lab.VerifyReport(f.wang(t), &labv1.VerifyReportRequest{Name: "reports/E0003"})
			return err
		}, reason: lab.ReasonSamePerson},
		{name: "receiving a cancelled order", call: func() error {
			_, err := f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: "specimens/E0004"})
			return err
		}, reason: lab.ReasonOrderCancelled},
		{name: "collecting for a cancelled order", call: func() error {
			_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: "E0103", Specimen: &labv1.Specimen{Order: cancelled.GetName(), Tests: []string{"2823-3"}}})
			return err
		}, reason: lab.ReasonOrderCancelled},
		{name: "cancelling after reception", call: func() error {
			_, err := f.lab.CancelOrder(f.doctor(t), &labv1.CancelOrderRequest{Name: inTesting.GetName()})
			return err
		}, reason: apierr.ReasonInvalidTransition},
		{name: "another facility's order is not found", call: func() error {
			_, err := f.lab.GetOrder(f.other(t), &labv1.GetOrderRequest{Name: o.GetName()})
			return err
		}, code: codes.NotFound},
		{name: "another facility's specimen is not found", call: func() error {
			_, err := f.lab.GetSpecimen(f.other(t), &labv1.GetSpecimenRequest{Name: "specimens/E0001"})
			return err
		}, code: codes.NotFound},
		{name: "another facility's report is not found", call: func() error {
			_, err := f.lab.GetReport(f.other(t), &labv1.GetReportRequest{Name: "reports/E0003"})
			return err
		}, code: codes.NotFound},
		{name: "another facility cannot cancel", call: func() error {
			_, err := f.lab.CancelOrder(f.other(t), &labv1.CancelOrderRequest{Name: o.GetName()})
			return err
		}, code: codes.NotFound},
		{name: "the clinic cannot receive", call: func() error {
			_, err := f.lab.ReceiveSpecimen(f.as(t, "lab-x", "dls", tech), &labv1.ReceiveSpecimenRequest{Name: "specimens/E0001"})
			return err
		}, code: codes.PermissionDenied},
		{name: "a clinician cannot verify", call: func() error {
			_, err := f.lab.VerifyReport(f.doctor(t), &labv1.VerifyReportRequest{Name: "reports/E0003"})
			return err
		}, code: codes.PermissionDenied},
		{name: "stale etag", call: func() error {
			_, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/E0003", Etag: "99"})
			return err
		}, code: codes.Aborted},
		{name: "rejection without a reason", call: func() error {
			_, err := f.lab.RejectSpecimen(f.wang(t), &labv1.RejectSpecimenRequest{Name: "specimens/E0002", Action: labv1.RejectionAction_REJECTION_ACTION_NOTIFY})
			return err
		}, field: "reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if tt.reason != "" {
				servertest.WantReason(t, err, tt.reason)
				return
			}
			servertest.WantError(t, err, tt.code, tt.field)
		})
	}
}

func TestTransportLimits(t *testing.T) {
	f := newFixture(t)
	chem := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.collect(t, chem, "T0001")
	coag := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "5902-2")
	f.collect(t, coag, "T0002")
	for _, b := range []string{"T0001", "T0002"} {
		if _, err := f.lab.DispatchSpecimen(f.doctor(t), &labv1.DispatchSpecimenRequest{Name: "specimens/" + b, Courier: "老张"}); err != nil {
			t.Fatal(err)
		}
	}
	// Five hours: within chemistry's 6 hours, past the citrate tube's 4.
	f.Clock.Advance(5 * time.Hour)
	_, err := f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: "specimens/T0002"})
	servertest.WantReason(t, err, lab.ReasonTransportTime)
	_, err = f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: "specimens/T0001", TemperatureCelsius: proto.Float64(31)})
	servertest.WantReason(t, err, lab.ReasonTransportTemp)
	if _, err := f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: "specimens/T0001", TemperatureCelsius: proto.Float64(8)}); err != nil {
		t.Fatal(err)
	}
	rej, err := f.lab.RejectSpecimen(f.wang(t), &labv1.RejectSpecimenRequest{Name: "specimens/T0002",
		Reason: labv1.RejectionReason_REJECTION_REASON_TRANSPORT_TIME_EXCEEDED, Action: labv1.RejectionAction_REJECTION_ACTION_RECOLLECT, Note: "送检超时"})
	if err != nil {
		t.Fatal(err)
	}
	if rej.GetSpecimen().GetState() != labv1.Specimen_STATE_REJECTED || rej.GetSpecimen().GetRejection().GetAction() != labv1.RejectionAction_REJECTION_ACTION_RECOLLECT {
		t.Errorf("rejected %v", rej.GetSpecimen())
	}
	// The requester is notified through its feed; the test can then be
	// collected again on a new tube.
	evs, err := f.lab.ListEvents(f.doctor(t), &labv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(evs.GetEvents(), "specimen.rejected", "specimens/T0002") {
		t.Error("the requester's feed has no specimen.rejected")
	}
	f.collect(t, coag, "T0003")
}

func hasEvent(evs []*typev1.Event, typ, resource string) bool {
	for _, e := range evs {
		if e.GetType() == typ && e.GetResource() == resource {
			return true
		}
	}
	return false
}

func TestWorklistIsSTATFirstAndFiltered(t *testing.T) {
	f := newFixture(t)
	routine := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.Clock.Advance(time.Minute)
	stat := f.order(t, f.qiqige, labv1.Priority_PRIORITY_STAT, "2823-3")
	urgent := f.order(t, f.batu, labv1.Priority_PRIORITY_URGENT, "2823-3")
	stat2 := f.order(t, f.batu, labv1.Priority_PRIORITY_STAT, "718-7")
	if _, err := f.lab.CancelOrder(f.doctor(t), &labv1.CancelOrderRequest{Name: stat2.GetName()}); err != nil {
		t.Fatal(err)
	}
	names := func(os []*labv1.Order) []string {
		var out []string
		for _, o := range os {
			out = append(out, o.GetName())
		}
		return out
	}
	for _, tt := range []struct {
		name string
		req  *labv1.ListWorklistRequest
		want []string
	}{
		{"all", &labv1.ListWorklistRequest{}, []string{stat.GetName(), stat2.GetName(), urgent.GetName(), routine.GetName()}},
		{"placed", &labv1.ListWorklistRequest{State: labv1.Order_STATE_PLACED}, []string{stat.GetName(), urgent.GetName(), routine.GetName()}},
		{"stat", &labv1.ListWorklistRequest{Priority: labv1.Priority_PRIORITY_STAT}, []string{stat.GetName(), stat2.GetName()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for token := ""; ; {
				tt.req.PageSize, tt.req.PageToken = 1, token
				page, err := f.lab.ListWorklist(f.wang(t), tt.req)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, names(page.GetOrders())...)
				if token = page.GetNextPageToken(); token == "" {
					break
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("worklist (-want +got):\n%s", diff)
			}
		})
	}
	// The clinic's own list has its orders; another clinic's has none.
	mine, err := f.lab.ListOrders(f.doctor(t), &labv1.ListOrdersRequest{})
	if err != nil || len(mine.GetOrders()) != 4 {
		t.Errorf("the clinic lists %d orders (%v)", len(mine.GetOrders()), err)
	}
	theirs, err := f.lab.ListOrders(f.other(t), &labv1.ListOrdersRequest{})
	if err != nil || len(theirs.GetOrders()) != 0 {
		t.Errorf("another clinic lists %d orders (%v)", len(theirs.GetOrders()), err)
	}
	empty, err := f.lab.ListWorklist(f.as(t, "lab-x", "dls", tech), &labv1.ListWorklistRequest{})
	if err != nil || len(empty.GetOrders()) != 0 {
		t.Errorf("a facility that is no lab center has a worklist of %d (%v)", len(empty.GetOrders()), err)
	}
}

// criticalReport makes a final report with a critically low potassium and
// returns its notification.
func (f *fixture) criticalReport(t *testing.T, barcode string) *typev1.CriticalNotification {
	t.Helper()
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_STAT, "2823-3")
	f.toState(t, o, barcode, labv1.Specimen_STATE_IN_TESTING)
	if _, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/" + barcode, Results: []*labv1.ResultInput{{Code: "2823-3", Value: 2.1, Unit: "mmol/L"}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/" + barcode})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetReport().GetCriticalNotifications()) != 1 {
		t.Fatalf("report %v opened no critical notification", r.GetReport().GetName())
	}
	n, err := f.lab.GetCriticalNotification(f.doctor(t), &labv1.GetCriticalNotificationRequest{Name: r.GetReport().GetCriticalNotifications()[0]})
	if err != nil {
		t.Fatal(err)
	}
	return n.GetNotification()
}

func TestCriticalValueConfirmedWithReadBack(t *testing.T) {
	f := newFixture(t)
	n := f.criticalReport(t, "C0001")
	if n.GetValue() != "2.1 mmol/L" || n.GetFlag() != "LL" || n.GetFacility() != "facilities/dls" || n.GetClinician() != "doc-han" || n.GetState() != critical.Notified {
		t.Fatalf("notification %v", n)
	}
	_, err := f.lab.AcknowledgeCriticalNotification(f.doctor(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "1.2"})
	servertest.WantReason(t, err, critical.ReasonReadBackMismatch)
	_, err = f.lab.AcknowledgeCriticalNotification(f.other(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "2.1"})
	servertest.WantCode(t, err, codes.NotFound)
	f.Clock.Advance(3 * time.Minute)
	ack, err := f.lab.AcknowledgeCriticalNotification(f.doctor(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "2.1 mmol/L"})
	if err != nil {
		t.Fatal(err)
	}
	got := ack.GetNotification()
	if got.GetState() != critical.Confirmed || !got.GetTimely() || len(got.GetAttempts()) != 2 || got.GetAttempts()[0].GetAccepted() {
		t.Errorf("acknowledged %v", got)
	}
	list, err := f.lab.ListCriticalNotifications(f.doctor(t), &labv1.ListCriticalNotificationsRequest{State: critical.Confirmed})
	if err != nil || len(list.GetNotifications()) != 1 {
		t.Errorf("list: %d (%v)", len(list.GetNotifications()), err)
	}
}

// TestCriticalEscalationSurvivesRestart closes the lab's store in the
// middle of the acknowledgement deadline and opens it again with a new
// service, as a restart of mcc would. The escalation still happens at the
// deadline, and the late acknowledgement is logged as not timely.
func TestCriticalEscalationSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	n := f.criticalReport(t, "C0002")
	ctx := context.Background()
	f.Clock.Advance(7 * time.Minute)
	if fired, err := f.svc.FireDeadlines(ctx); err != nil || fired != 0 {
		t.Fatalf("fired %d before the deadline (%v)", fired, err)
	}
	f.restart(t)
	f.Clock.Advance(4 * time.Minute) // 11 minutes after the notification
	if fired, err := f.svc.FireDeadlines(ctx); err != nil || fired != 1 {
		t.Fatalf("fired %d after the restart (%v)", fired, err)
	}
	f.Clock.Advance(5 * time.Minute)
	ack, err := f.lab.AcknowledgeCriticalNotification(f.doctor(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "2.1"})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, c := range ack.GetNotification().GetTimeline() {
		steps = append(steps, c.GetTo()+"@"+c.GetTime().AsTime().Sub(n.GetNotifyTime().AsTime()).String())
	}
	want := []string{"STATE_NOTIFIED@0s", "STATE_ESCALATED_DUTY_DOCTOR@10m0s", "STATE_CONFIRMED@16m0s"}
	if diff := cmp.Diff(want, steps); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	if ack.GetNotification().GetTimely() {
		t.Error("a confirmation after escalation counted as timely")
	}
	evs, err := f.lab.ListEvents(f.doctor(t), &labv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(evs.GetEvents(), "criticalNotification.escalated_duty_doctor", n.GetName()) {
		t.Error("the ordering facility's feed has no escalation event")
	}
}

func TestUnacknowledgedCriticalBecomesUnreachable(t *testing.T) {
	f := newFixture(t)
	n := f.criticalReport(t, "C0003")
	f.Clock.Advance(time.Hour)
	for range 3 {
		if _, err := f.svc.FireDeadlines(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := f.lab.GetCriticalNotification(f.wang(t), &labv1.GetCriticalNotificationRequest{Name: n.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetNotification().GetState() != critical.Unreachable {
		t.Errorf("after an hour: %v", got.GetNotification().GetState())
	}
}

func TestAmendmentKeepsHistory(t *testing.T) {
	f := newFixture(t)
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3", "2951-2")
	f.toState(t, o, "A0001", labv1.Specimen_STATE_DONE)
	_, err := f.lab.AmendReport(f.liu(t), &labv1.AmendReportRequest{Name: "reports/A0001", Results: []*labv1.ResultInput{{Code: "2823-3", Value: 4.4, Unit: "mmol/L"}}})
	servertest.WantField(t, err, "reason")
	first, err := f.lab.AmendReport(f.liu(t), &labv1.AmendReportRequest{Name: "reports/A0001", Reason: "transcription error", Results: []*labv1.ResultInput{{Code: "2823-3", Value: 4.4, Unit: "mmol/L"}}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.lab.AmendReport(f.wang(t), &labv1.AmendReportRequest{Name: "reports/A0001", Reason: "re-run, hemolysis suspected", Etag: first.GetReport().GetEtag(),
		Results: []*labv1.ResultInput{{Code: "2823-3", Value: 7.0, Unit: "mmol/L"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := second.GetReport()
	if r.GetState() != labv1.Report_STATE_AMENDED || r.GetVersion() != 3 || len(r.GetHistory()) != 2 || r.GetAmendmentReason() != "re-run, hemolysis suspected" {
		t.Fatalf("amended report %v", r)
	}
	var versions []string
	for _, h := range r.GetHistory() {
		versions = append(versions, h.GetState().String()+" "+strings.Join([]string{h.GetResults()[0].GetFlag().String()}, ""))
	}
	if diff := cmp.Diff([]string{"STATE_FINAL FLAG_N", "STATE_AMENDED FLAG_N"}, versions); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if r.GetResults()[0].GetFlag() != labv1.Flag_FLAG_HH || len(r.GetCriticalNotifications()) != 1 {
		t.Errorf("an amendment to a critical value: flag %v, notifications %v", r.GetResults()[0].GetFlag(), r.GetCriticalNotifications())
	}
	evs, err := f.lab.ListEvents(f.doctor(t), &labv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(evs.GetEvents(), "report.amended", "reports/A0001") {
		t.Error("the requester was not notified of the amendment")
	}
}

func TestCatalogChangesAreVersioned(t *testing.T) {
	f := newFixture(t)
	adminCtx := f.as(t, "admin", "qrmyy", admin)
	before, err := f.lab.GetTest(f.doctor(t), &labv1.GetTestRequest{Name: "tests/2823-3"})
	if err != nil {
		t.Fatal(err)
	}
	if before.GetTest().GetCatalogVersion() != 1 || before.GetTest().GetCriticalLow() != 2.8 {
		t.Fatalf("seed potassium %v", before.GetTest())
	}
	// The community tightens the critical low limit of potassium.
	upd, err := f.lab.UpdateTest(adminCtx, &labv1.UpdateTestRequest{
		Test:       &labv1.Test{Name: "tests/2823-3", CriticalLow: proto.Float64(3.0)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"critical_low"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.GetTest().GetCatalogVersion() != 2 || upd.GetTest().GetCriticalLow() != 3.0 || upd.GetTest().GetUnit() != "mmol/L" {
		t.Fatalf("updated %v", upd.GetTest())
	}
	created, err := f.lab.CreateTest(adminCtx, &labv1.CreateTestRequest{Test: &labv1.Test{
		Code: &typev1.Code{Code: "L-CRP"}, DisplayName: "C反应蛋白 CRP", SpecimenType: "serum", Unit: "mg/L",
		ReferenceIntervals: []*labv1.ReferenceInterval{{High: proto.Float64(10)}}, PriceFen: 3000,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetTest().GetCatalogVersion() != 3 {
		t.Errorf("created at version %d", created.GetTest().GetCatalogVersion())
	}
	old, err := f.lab.GetTest(f.doctor(t), &labv1.GetTestRequest{Name: "tests/2823-3", CatalogVersion: 1})
	if err != nil || old.GetTest().GetCriticalLow() != 2.8 {
		t.Errorf("potassium at version 1: %v (%v)", old.GetTest(), err)
	}
	// 2.9 is critical now, and the result records the version it used.
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3", "L-CRP")
	f.toState(t, o, "V0001", labv1.Specimen_STATE_IN_TESTING)
	r, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/V0001", Results: []*labv1.ResultInput{{Code: "2823-3", Value: 2.9, Unit: "mmol/L"}, {Code: "L-CRP", Value: 12, Unit: "mg/L"}}})
	if err != nil {
		t.Fatal(err)
	}
	res := r.GetReport().GetResults()
	if res[0].GetFlag() != labv1.Flag_FLAG_LL || res[0].GetCatalogVersion() != 2 || res[1].GetFlag() != labv1.Flag_FLAG_H || res[1].GetCatalogVersion() != 3 {
		t.Errorf("results %v", res)
	}
	list, err := f.lab.ListTests(f.doctor(t), &labv1.ListTestsRequest{PageSize: 1000})
	if err != nil || list.GetCatalogVersion() != 3 || len(list.GetTests()) < 40 {
		t.Errorf("catalog of %d tests at version %d (%v)", len(list.GetTests()), list.GetCatalogVersion(), err)
	}
	_, err = f.lab.UpdateTest(f.doctor(t), &labv1.UpdateTestRequest{Test: &labv1.Test{Name: "tests/2823-3"}})
	servertest.WantCode(t, err, codes.PermissionDenied)
	_, err = f.lab.UpdateTest(adminCtx, &labv1.UpdateTestRequest{Test: &labv1.Test{Name: "tests/2823-3", CriticalLow: proto.Float64(9)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"critical_low"}}})
	servertest.WantField(t, err, "test.critical_low")
}

func TestSeedCataloguePages(t *testing.T) {
	f := newFixture(t)
	var codes []string
	for token := ""; ; {
		page, err := f.lab.ListTests(f.doctor(t), &labv1.ListTestsRequest{PageSize: 7, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, t := range page.GetTests() {
			codes = append(codes, t.GetCode().GetCode())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	all, err := f.lab.ListTests(f.doctor(t), &labv1.ListTestsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != len(all.GetTests()) || len(codes) < 40 {
		t.Errorf("paged %d tests, listed %d", len(codes), len(all.GetTests()))
	}
}

func TestEventsConcernOnlyTheirFacilities(t *testing.T) {
	f := newFixture(t)
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.toState(t, o, "EV001", labv1.Specimen_STATE_DONE)
	for _, tt := range []struct {
		name string
		ctx  context.Context
		min  int
		max  int
	}{
		{"the clinic", f.doctor(t), 8, 100},
		{"the lab", f.wang(t), 8, 100},
		{"another clinic", f.other(t), 0, 0},
	} {
		evs, err := f.lab.ListEvents(tt.ctx, &labv1.ListEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(evs.GetEvents()); n < tt.min || n > tt.max {
			t.Errorf("%s sees %d events", tt.name, n)
		}
		if tt.min > 0 && !hasEvent(evs.GetEvents(), "report.final", "reports/EV001") {
			t.Errorf("%s does not see report.final", tt.name)
		}
	}
}

func TestWatchEventsStreamsTheFacilitysChanges(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(f.doctor(t), 10*time.Second)
	defer cancel()
	stream, err := f.lab.WatchEvents(ctx, &labv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Another clinic's order first: the stream must skip it.
	if _, err := f.lab.CreateOrder(f.other(t), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3"}, Priority: labv1.Priority_PRIORITY_STAT}}); err != nil {
		t.Fatal(err)
	}
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_STAT, "2823-3")
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetEvent().GetType() != "order.created" || ev.GetEvent().GetResource() != o.GetName() {
		t.Errorf("first event %v", ev.GetEvent())
	}
}

// TestDirectoryAnswersThatRefuseAreNotKept: the lab reuses the directory's
// answers for a while, but only those that let an order through; a
// facility added to the directory after a refused order can order at once.
func TestDirectoryAnswersThatRefuseAreNotKept(t *testing.T) {
	f := newFixture(t)
	order := func() error {
		_, err := f.lab.CreateOrder(f.as(t, "doc-cj", "cj", clinician), &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3"}, Priority: labv1.Priority_PRIORITY_ROUTINE}})
		return err
	}
	servertest.WantReason(t, order(), "FACILITY_UNKNOWN")
	_, err := f.dir.CreateFacility(f.as(t, "admin", "qrmyy", admin), &directoryv1.CreateFacilityRequest{FacilityId: "cj", Facility: &directoryv1.Facility{
		DisplayName: "川井苏木卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy",
		Centers: []*directoryv1.CenterAssignment{{Center: typev1.Center_CENTER_LAB, Facility: "facilities/qrmyy"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := order(); err != nil {
		t.Errorf("an order from the facility just added: %v", err)
	}
}

// TestStoreOrder: an order loaded with StoreOrder (test volumes for mcc
// bench) is what CreateOrder would have stored: readable, on the placing
// facility's list and the lab's worklist, and in the change feed.
func TestStoreOrder(t *testing.T) {
	f := newFixture(t)
	now := f.Clock.Now()
	o := &labv1.Order{
		Name: "orders/01a20a6c-29b9-7f20-add9-fb0699eb21c4", RequestingFacility: "facilities/dls", LabFacility: "facilities/qrmyy", Clinician: "practitioners/doc-han",
		Patient: f.batu, Tests: []string{"2823-3"}, Priority: labv1.Priority_PRIORITY_ROUTINE, State: labv1.Order_STATE_PLACED,
	}
	actor := auth.Caller{Subject: "loader", Community: community, Facility: "facilities/dls", Roles: []typev1.Role{clinician}}
	if err := f.labStore.Txn(context.Background(), community, func(tx store.Tx) error { return lab.StoreOrder(tx, actor, now, o) }); err != nil {
		t.Fatal(err)
	}
	got, err := f.lab.GetOrder(f.doctor(t), &labv1.GetOrderRequest{Name: o.GetName()})
	if err != nil || got.GetOrder().GetEtag() != "1" || !got.GetOrder().GetCreateTime().AsTime().Equal(now) {
		t.Fatalf("stored order: %v, %v", got.GetOrder(), err)
	}
	placed, err := f.lab.ListOrders(f.doctor(t), &labv1.ListOrdersRequest{})
	if err != nil || len(placed.GetOrders()) != 1 {
		t.Errorf("the facility's orders: %v, %v", placed.GetOrders(), err)
	}
	worklist, err := f.lab.ListWorklist(f.wang(t), &labv1.ListWorklistRequest{})
	if err != nil || len(worklist.GetOrders()) != 1 {
		t.Errorf("the worklist: %v, %v", worklist.GetOrders(), err)
	}
	evs, err := f.lab.ListEvents(f.doctor(t), &labv1.ListEventsRequest{})
	if err != nil || len(evs.GetEvents()) == 0 || evs.GetEvents()[len(evs.GetEvents())-1].GetType() != "order.created" {
		t.Errorf("events: %v, %v", evs.GetEvents(), err)
	}
}
