package recognition_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/recognition"
)

const (
	potassium = "2823-3"  // recognized, 14 days, 5.00 CNY
	sodium    = "2951-2"  // recognized, 14 days
	troponin  = "89579-7" // in the lab catalog, not recognized
	chest     = "DX-CHEST"
)

func unrecognizable(t *testing.T, got *recognitionv1.ItemCheck, want recognitionv1.Unrecognizable) {
	t.Helper()
	if got.GetUnrecognizable() != want || (want != recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED) != (len(got.GetRecognizable()) == 0) {
		t.Fatalf("%s: unrecognizable %v with %d results (%s), want %v", got.GetItem(), got.GetUnrecognizable(), len(got.GetRecognizable()), got.GetDetail(), want)
	}
}

func TestSeededCatalog(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		code       string
		recognized bool
		center     typev1.Center
	}{
		{potassium, true, typev1.Center_CENTER_LAB},
		{troponin, false, typev1.Center_CENTER_LAB},
		{"DX-CHEST", true, typev1.Center_CENTER_IMAGING},
		{"CT-HEAD", true, typev1.Center_CENTER_IMAGING},
		{"ECG-12", true, typev1.Center_CENTER_ECG},
		{"PATH-ROUTINE", true, typev1.Center_CENTER_PATHOLOGY},
		{"PATH-FROZEN", false, typev1.Center_CENTER_PATHOLOGY},
	} {
		resp, err := f.rec.GetItem(f.doctor(t), &recognitionv1.GetItemRequest{Name: "items/" + tt.code})
		if err != nil {
			t.Fatalf("%s: %v", tt.code, err)
		}
		it := resp.GetItem()
		if it.GetRecognized() != tt.recognized || it.GetCenter() != tt.center || it.GetPriceFen() <= 0 || it.GetCatalogVersion() != 1 {
			t.Errorf("%s = %v", tt.code, it)
		}
	}
}

func TestCatalogIsVersioned(t *testing.T) {
	f := newFixture(t)
	_, err := f.rec.UpdateItem(f.doctor(t), &recognitionv1.UpdateItemRequest{Item: &recognitionv1.Item{Name: "items/" + potassium, ValidityDays: 7}})
	servertest.WantCode(t, err, codes.PermissionDenied)
	up, err := f.rec.UpdateItem(f.admin(t), &recognitionv1.UpdateItemRequest{
		Item: &recognitionv1.Item{Name: "items/" + potassium, ValidityDays: 7}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"validity_days"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if up.GetItem().GetValidityDays() != 7 || up.GetItem().GetCatalogVersion() != 2 || !up.GetItem().GetRecognized() {
		t.Fatalf("updated = %v", up.GetItem())
	}
	old, err := f.rec.GetItem(f.doctor(t), &recognitionv1.GetItemRequest{Name: "items/" + potassium, CatalogVersion: 1})
	if err != nil || old.GetItem().GetValidityDays() != 14 {
		t.Fatalf("at version 1: %v, %v", old.GetItem(), err)
	}
	created, err := f.rec.CreateItem(f.admin(t), &recognitionv1.CreateItemRequest{Item: &recognitionv1.Item{
		Code: &typev1.Code{Code: "US-ABDOMEN"}, DisplayName: "腹部超声", Recognized: true, ValidityDays: 30, Scope: recognitionv1.Scope_SCOPE_COMMUNITY, PriceFen: 12000,
	}})
	if err != nil || created.GetItem().GetCatalogVersion() != 3 || created.GetItem().GetName() != "items/US-ABDOMEN" {
		t.Fatalf("created %v, %v", created.GetItem(), err)
	}
	_, err = f.rec.CreateItem(f.admin(t), &recognitionv1.CreateItemRequest{Item: &recognitionv1.Item{Code: &typev1.Code{Code: "US-ABDOMEN"}, Scope: recognitionv1.Scope_SCOPE_COMMUNITY}})
	servertest.WantCode(t, err, codes.AlreadyExists)
	list, err := f.rec.ListItems(f.doctor(t), &recognitionv1.ListItemsRequest{PageSize: 1000})
	if err != nil || list.GetCatalogVersion() != 3 {
		t.Fatalf("list version %d, %v", list.GetCatalogVersion(), err)
	}
}

// TestRegistryFromTheCenters follows a lab and an imaging center: final
// reports become entries, a check sees them newest first with their
// expiry, an amendment replaces the entry keeping its history, a
// retraction withdraws it, and time expires it.
func TestRegistryFromTheCenters(t *testing.T) { onEveryStore(t, testRegistryFromTheCenters) }

func testRegistryFromTheCenters(t *testing.T, f *fixture) {
	released := t0.Add(-2 * time.Hour)
	f.lab.add(labReport(t, "report.preliminary", "S1", f.batu, 0, released, potassium))
	f.lab.add(labReport(t, "report.final", "S1", f.batu, 1, released, potassium, sodium))
	f.lab.add(labReport(t, "report.final", "S0", f.batu, 1, released.Add(-24*time.Hour), potassium))
	f.imaging.add(examReport(t, "report.final", "X1", f.batu, chest, 1, released))
	f.waitIndexed(t, "lab", "3")
	f.waitIndexed(t, "imaging", "1")

	resp := f.check(t, f.batu, potassium, chest, troponin, "2075-0")
	if !strings.HasPrefix(resp.GetCheck(), "checks/") || len(resp.GetItems()) != 4 {
		t.Fatalf("check = %v", resp)
	}
	k := resp.GetItems()[0]
	unrecognizable(t, k, recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED)
	if len(k.GetRecognizable()) != 2 || !k.GetRecognizable()[0].GetReportTime().AsTime().Equal(released) ||
		!k.GetRecognizable()[0].GetExpireTime().AsTime().Equal(released.AddDate(0, 0, 14)) || k.GetRecognizable()[0].GetSummary() != "4.2 mmol/L (N)" ||
		k.GetRecognizable()[0].GetIssuingFacility() != "facilities/qrmyy" || k.GetRecognizable()[0].GetReport() != "reports/S1" {
		t.Fatalf("potassium = %v", k)
	}
	x := resp.GetItems()[1]
	unrecognizable(t, x, recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED)
	if !x.GetRecognizable()[0].GetExpireTime().AsTime().Equal(released.AddDate(0, 0, 30)) || x.GetRecognizable()[0].GetSource() != "imaging" {
		t.Fatalf("chest = %v", x)
	}
	unrecognizable(t, resp.GetItems()[2], recognitionv1.Unrecognizable_UNRECOGNIZABLE_NOT_IN_CATALOG)
	unrecognizable(t, resp.GetItems()[3], recognitionv1.Unrecognizable_UNRECOGNIZABLE_NO_PRIOR_RESULT)

	t.Run("an amendment replaces the entry and keeps its history", func(t *testing.T) {
		f.lab.add(labReport(t, "report.amended", "S1", f.batu, 2, released, potassium, sodium))
		f.waitIndexed(t, "lab", "4")
		got := f.check(t, f.batu, potassium).GetItems()[0].GetRecognizable()[0]
		if got.GetSummary() != "5.2 mmol/L (N)" || got.GetState() != recognitionv1.Result_STATE_AMENDED || !got.GetReportTime().AsTime().Equal(released) {
			t.Fatalf("amended = %v", got)
		}
		e, err := f.rec.GetResult(f.doctor(t), &recognitionv1.GetResultRequest{Name: got.GetResult()})
		if err != nil {
			t.Fatal(err)
		}
		if h := e.GetResult().GetHistory(); len(h) != 1 || h[0].GetSummary() != "4.2 mmol/L (N)" || e.GetResult().GetReportVersion() != 2 {
			t.Fatalf("history = %v", e.GetResult())
		}
	})
	t.Run("a retracted report withdraws its entries", func(t *testing.T) {
		f.lab.add(labReport(t, "report.retracted", "S0", f.batu, 1, released.Add(-24*time.Hour), potassium))
		f.imaging.add(examReport(t, "report.retracted", "X1", f.batu, chest, 1, released))
		f.waitIndexed(t, "lab", "5")
		f.waitIndexed(t, "imaging", "2")
		resp := f.check(t, f.batu, potassium, chest)
		if n := len(resp.GetItems()[0].GetRecognizable()); n != 1 {
			t.Fatalf("potassium has %d recognizable results after one was withdrawn", n)
		}
		unrecognizable(t, resp.GetItems()[1], recognitionv1.Unrecognizable_UNRECOGNIZABLE_AMENDED)
	})
	t.Run("the validity window expires", func(t *testing.T) {
		f.Clock.Advance(14 * 24 * time.Hour)
		unrecognizable(t, f.check(t, f.batu, potassium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_EXPIRED)
		// At a time in the past the same result was recognizable.
		resp, err := f.rec.CheckRecognition(f.doctor(t), &recognitionv1.CheckRecognitionRequest{
			Patient: f.batu, Items: []string{potassium}, Purpose: "audit", AtTime: timestamppb.New(t0),
		})
		if err != nil {
			t.Fatal(err)
		}
		unrecognizable(t, resp.GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED)
	})
}

func TestCheckRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		name  string
		req   *recognitionv1.CheckRecognitionRequest
		code  codes.Code
		field string
	}{
		{"an unknown item", &recognitionv1.CheckRecognitionRequest{Patient: f.batu, Items: []string{potassium, "NO-SUCH-ITEM"}, Purpose: "order"}, codes.InvalidArgument, "items[1]"},
		{"no items", &recognitionv1.CheckRecognitionRequest{Patient: f.batu, Purpose: "order"}, codes.InvalidArgument, "items"},
		{"no purpose", &recognitionv1.CheckRecognitionRequest{Patient: f.batu, Items: []string{potassium}}, codes.InvalidArgument, "purpose"},
		{"a time in the future", &recognitionv1.CheckRecognitionRequest{Patient: f.batu, Items: []string{potassium}, Purpose: "order", AtTime: timestamppb.New(t0.Add(time.Hour))}, codes.InvalidArgument, "at_time"},
		{"a patient of another facility", &recognitionv1.CheckRecognitionRequest{Patient: f.wuyun, Items: []string{potassium}, Purpose: "order"}, codes.PermissionDenied, ""},
		{"a patient of another community", &recognitionv1.CheckRecognitionRequest{Patient: f.nara, Items: []string{potassium}, Purpose: "order"}, codes.PermissionDenied, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.rec.CheckRecognition(f.doctor(t), tt.req)
			servertest.WantError(t, err, tt.code, tt.field)
		})
	}
}

// TestEveryCheckIsRecorded: a check, and a refused one, are events with
// who asked, for which patient and why.
func TestEveryCheckIsRecorded(t *testing.T) {
	f := newFixture(t)
	done := f.check(t, f.batu, potassium)
	_, err := f.rec.CheckRecognition(f.doctor(t), &recognitionv1.CheckRecognitionRequest{Patient: f.nara, Items: []string{potassium}, Purpose: "curiosity"})
	servertest.WantCode(t, err, codes.PermissionDenied)
	evs, err := f.rec.ListEvents(f.admin(t), &recognitionv1.ListEventsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*recognitionv1.Check{}
	for _, ev := range evs.GetEvents() {
		if !strings.HasPrefix(ev.GetType(), "check.") {
			continue
		}
		c := &recognitionv1.Check{}
		if err := anypb.UnmarshalTo(ev.GetSnapshot(), c, protoUnmarshal); err != nil {
			t.Fatal(err)
		}
		if ev.GetActor().GetFacility() != "facilities/dls" {
			t.Errorf("%s actor = %v", ev.GetType(), ev.GetActor())
		}
		got[ev.GetType()] = c
	}
	if c := got["check.recorded"]; c.GetName() != done.GetCheck() || c.GetPatient() != f.batu || c.GetPurpose() != "outpatient order" || c.GetSubject() != "test" {
		t.Errorf("recorded = %v", c)
	}
	if c := got["check.refused"]; c.GetPatient() != f.nara || c.GetPurpose() != "curiosity" {
		t.Errorf("refused = %v", c)
	}
}

// TestDelayedCheckLog: with -recognition.check-log-delay the record is
// written shortly after the answer, and on shutdown at the latest.
func TestDelayedCheckLog(t *testing.T) {
	f := newFixture(t)
	f.cfg.CheckLogDelay = time.Hour
	f.restart(t)
	done := f.check(t, f.batu, potassium)
	recorded := func() bool {
		evs, err := f.rec.ListEvents(f.admin(t), &recognitionv1.ListEventsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.GetEvents() {
			if ev.GetType() == "check.recorded" && ev.GetResource() == done.GetCheck() {
				return true
			}
		}
		return false
	}
	if recorded() {
		t.Fatal("recorded before the delay")
	}
	// A restart flushes the queue before the store closes.
	f.cfg.CheckLogDelay = 0
	f.restart(t)
	if !recorded() {
		t.Fatal("the queued check was lost at shutdown")
	}
}

// TestEligibilityRules: the issuer's level, the scope, and QC suspensions.
func TestEligibilityRules(t *testing.T) {
	f := newFixture(t)
	reported := timestamppb.New(t0.Add(-time.Hour))
	// A village clinic publishes a potassium for qiqige, whom dls treats
	// too: below the township level the item needs.
	_, err := f.rec.PublishResult(f.As(t, community, "cun", tech), &recognitionv1.PublishResultRequest{
		Patient: f.qiqige, Item: potassium, ReportTime: reported, Summary: "4.0 mmol/L", Report: "V-1", ReportVersion: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	unrecognizable(t, f.check(t, f.qiqige, potassium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_ISSUER_NOT_ELIGIBLE)

	// dls records a sodium from a city hospital: out of the community
	// scope.
	pub, err := f.rec.PublishResult(f.As(t, community, "dls", tech), &recognitionv1.PublishResultRequest{
		Patient: f.qiqige, Item: sodium, ReportTime: reported, Summary: "140 mmol/L", Report: "EXT-9", ReportVersion: 1,
		ExternalIssuer: "巴彦淖尔市医院", OriginScope: recognitionv1.Scope_SCOPE_CITY,
	})
	if err != nil {
		t.Fatal(err)
	}
	unrecognizable(t, f.check(t, f.qiqige, sodium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_OUT_OF_SCOPE)
	// The same publication again changes nothing; a lower version is stale.
	again, err := f.rec.PublishResult(f.As(t, community, "dls", tech), &recognitionv1.PublishResultRequest{
		Patient: f.qiqige, Item: sodium, ReportTime: reported, Summary: "140 mmol/L", Report: "EXT-9", ReportVersion: 1,
		ExternalIssuer: "巴彦淖尔市医院", OriginScope: recognitionv1.Scope_SCOPE_CITY,
	})
	if err != nil || again.GetResult().GetEtag() != pub.GetResult().GetEtag() {
		t.Fatalf("republished: %v, %v", again.GetResult(), err)
	}

	// The county lab's potassium of batu, issued while its QC was
	// suspended.
	f.lab.add(labReport(t, "report.final", "S1", f.batu, 1, t0.Add(-time.Hour), potassium))
	f.waitIndexed(t, "lab", "1")
	unrecognizable(t, f.check(t, f.batu, potassium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED)
	_, err = f.rec.CreateQcSuspension(f.As(t, community, "dls", tech), &recognitionv1.CreateQcSuspensionRequest{QcSuspension: &recognitionv1.QcSuspension{
		Facility: "facilities/qrmyy", Item: potassium, StartTime: timestamppb.New(t0.Add(-3 * time.Hour)), Reason: "IQC 1-3s",
	}})
	servertest.WantCode(t, err, codes.PermissionDenied)
	_, err = f.rec.CreateQcSuspension(f.county(t), &recognitionv1.CreateQcSuspensionRequest{QcSuspension: &recognitionv1.QcSuspension{
		Facility: "facilities/qrmyy", Item: "NO-SUCH", StartTime: timestamppb.New(t0.Add(-3 * time.Hour)), Reason: "IQC 1-3s",
	}})
	servertest.WantField(t, err, "qc_suspension.item")
	q, err := f.rec.CreateQcSuspension(f.county(t), &recognitionv1.CreateQcSuspensionRequest{QcSuspension: &recognitionv1.QcSuspension{
		Facility: "facilities/qrmyy", Item: potassium, StartTime: timestamppb.New(t0.Add(-3 * time.Hour)), Reason: "IQC 1-3s",
	}})
	if err != nil {
		t.Fatal(err)
	}
	unrecognizable(t, f.check(t, f.batu, potassium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_QC_SUSPENDED)
	f.Clock.Advance(time.Hour)
	lifted, err := f.rec.LiftQcSuspension(f.county(t), &recognitionv1.LiftQcSuspensionRequest{Name: q.GetQcSuspension().GetName()})
	if err != nil || lifted.GetQcSuspension().GetState() != recognitionv1.QcSuspension_STATE_LIFTED || !lifted.GetQcSuspension().GetEndTime().AsTime().Equal(t0.Add(time.Hour)) {
		t.Fatalf("lifted %v, %v", lifted.GetQcSuspension(), err)
	}
	// Lifting ends the range: what was issued in it stays suspended.
	unrecognizable(t, f.check(t, f.batu, potassium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_QC_SUSPENDED)
	_, err = f.rec.LiftQcSuspension(f.county(t), &recognitionv1.LiftQcSuspensionRequest{Name: q.GetQcSuspension().GetName()})
	servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
}

func TestPublishAndWithdraw(t *testing.T) {
	f := newFixture(t)
	ctx := f.As(t, community, "dls", tech)
	for _, tt := range []struct {
		name  string
		req   *recognitionv1.PublishResultRequest
		code  codes.Code
		field string
	}{
		{"an unknown item", &recognitionv1.PublishResultRequest{Patient: f.batu, Item: "NOPE", ReportTime: timestamppb.New(t0), Summary: "x", Report: "R1", ReportVersion: 1}, codes.InvalidArgument, "item"},
		{"a future report", &recognitionv1.PublishResultRequest{Patient: f.batu, Item: potassium, ReportTime: timestamppb.New(t0.Add(time.Hour)), Summary: "x", Report: "R1", ReportVersion: 1}, codes.InvalidArgument, "report_time"},
		{"an external issuer in the community", &recognitionv1.PublishResultRequest{Patient: f.batu, Item: potassium, ReportTime: timestamppb.New(t0), Summary: "x", Report: "R1", ReportVersion: 1, ExternalIssuer: "x"}, codes.InvalidArgument, "origin_scope"},
		{"a patient not treated here", &recognitionv1.PublishResultRequest{Patient: f.wuyun, Item: potassium, ReportTime: timestamppb.New(t0), Summary: "x", Report: "R1", ReportVersion: 1}, codes.PermissionDenied, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.rec.PublishResult(ctx, tt.req)
			servertest.WantError(t, err, tt.code, tt.field)
		})
	}
	pub, err := f.rec.PublishResult(ctx, &recognitionv1.PublishResultRequest{Patient: f.batu, Item: sodium, ReportTime: timestamppb.New(t0), Summary: "141 mmol/L", Report: "R1", ReportVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	name := pub.GetResult().GetName()
	_, err = f.rec.WithdrawResult(f.county(t), &recognitionv1.WithdrawResultRequest{Name: name, Reason: "wrong patient"})
	servertest.WantCode(t, err, codes.PermissionDenied)
	w, err := f.rec.WithdrawResult(ctx, &recognitionv1.WithdrawResultRequest{Name: name, Reason: "wrong patient"})
	if err != nil || w.GetResult().GetState() != recognitionv1.Result_STATE_WITHDRAWN {
		t.Fatalf("withdrawn %v, %v", w.GetResult(), err)
	}
	if tl := w.GetResult().GetTimeline(); tl[len(tl)-1].GetReason() != "wrong patient" {
		t.Errorf("timeline = %v", tl)
	}
	_, err = f.rec.WithdrawResult(ctx, &recognitionv1.WithdrawResultRequest{Name: name, Reason: "again"})
	servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
	unrecognizable(t, f.check(t, f.batu, sodium).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_AMENDED)
}

// TestIllegalResultMoves walks the result and suspension tables: every move
// they forbid is refused with INVALID_TRANSITION.
func TestIllegalResultMoves(t *testing.T) {
	for _, mv := range recognition.ResultMachine().Illegal() {
		if err := recognition.ResultMachine().Check(mv.From, mv.To); !isTransition(err) {
			t.Errorf("%v: %v", mv, err)
		}
	}
	for _, mv := range recognition.QcMachine().Illegal() {
		if err := recognition.QcMachine().Check(mv.From, mv.To); !isTransition(err) {
			t.Errorf("%v: %v", mv, err)
		}
	}
	if n := len(recognition.ResultMachine().Illegal()); n != 5 {
		t.Errorf("%d illegal result moves, want 5 (withdrawn is final; nothing returns to final)", n)
	}
}

func isTransition(err error) bool {
	ce, ok := err.(*apierr.ConditionError)
	return ok && ce.Reason == apierr.ReasonInvalidTransition
}

// TestCheckResults: the referral's question about attached results. A
// result of another patient and one that does not exist get the same
// answer.
func TestCheckResults(t *testing.T) {
	f := newFixture(t)
	f.lab.add(labReport(t, "report.final", "S1", f.batu, 1, t0.Add(-time.Hour), potassium, troponin))
	f.waitIndexed(t, "lab", "1")
	k := f.check(t, f.batu, potassium).GetItems()[0].GetRecognizable()[0].GetResult()
	tn := recognition.ResultName(f.batu, "lab", "facilities/qrmyy", "reports/S1", troponin)
	ask := func(patient string, names ...string) []*recognitionv1.ResultCheck {
		t.Helper()
		resp, err := f.rec.CheckResults(f.doctor(t), &recognitionv1.CheckResultsRequest{Patient: patient, Receiver: "facilities/qrmyy", Results: names})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetChecks()
	}
	got := ask(f.batu, k, tn, "results/nope")
	if !got[0].GetOfPatient() || !got[0].GetRecognizable() {
		t.Errorf("potassium = %v", got[0])
	}
	if !got[1].GetOfPatient() || got[1].GetRecognizable() || got[1].GetUnrecognizable() != recognitionv1.Unrecognizable_UNRECOGNIZABLE_NOT_IN_CATALOG {
		t.Errorf("troponin = %v", got[1])
	}
	if got[2].GetOfPatient() {
		t.Errorf("unknown = %v", got[2])
	}
	if other := ask(f.qiqige, k); other[0].GetOfPatient() || other[0].GetRecognizable() {
		t.Errorf("batu's result as qiqige's = %v", other[0])
	}
	_, err := f.rec.CheckResults(f.doctor(t), &recognitionv1.CheckResultsRequest{Patient: f.wuyun, Receiver: "facilities/qrmyy", Results: []string{k}})
	servertest.WantCode(t, err, codes.PermissionDenied)
}
