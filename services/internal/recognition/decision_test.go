package recognition_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/recognition"
)

// decide records a decision as the dls doctor.
func (f *fixture) decide(t testing.TB, d *recognitionv1.Decision) *recognitionv1.Decision {
	t.Helper()
	resp, err := f.rec.CreateDecision(f.doctor(t), &recognitionv1.CreateDecisionRequest{Decision: d})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetDecision()
}

func TestDecisionsAndStatistics(t *testing.T) { onEveryStore(t, testDecisionsAndStatistics) }

func testDecisionsAndStatistics(t *testing.T, f *fixture) {
	released := t0.Add(-time.Hour)
	f.lab.add(labReport(t, "report.final", "S1", f.batu, 1, released, potassium, sodium, troponin))
	f.imaging.add(examReport(t, "report.final", "X1", f.batu, chest, 1, released))
	f.waitIndexed(t, "lab", "1")
	f.waitIndexed(t, "imaging", "1")
	resp := f.check(t, f.batu, potassium, sodium, chest)
	k, na, x := resp.GetItems()[0].GetRecognizable()[0].GetResult(), resp.GetItems()[1].GetRecognizable()[0].GetResult(), resp.GetItems()[2].GetRecognizable()[0].GetResult()
	notRecognized := recognitionv1.Outcome_OUTCOME_NOT_RECOGNIZED

	t.Run("bad decisions", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			d      *recognitionv1.Decision
			code   codes.Code
			field  string
			reason string
		}{
			{"not recognized without a reason", &recognitionv1.Decision{Result: k, Outcome: notRecognized}, codes.InvalidArgument, "decision.reason", ""},
			{"reason 08 without text", &recognitionv1.Decision{Result: k, Outcome: notRecognized, Reason: recognitionv1.Reason_REASON_OTHER}, codes.InvalidArgument, "decision.reason_text", ""},
			{"recognized with a reason", &recognitionv1.Decision{Result: k, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Reason: recognitionv1.Reason_REASON_EMERGENCY}, codes.InvalidArgument, "decision.reason", ""},
			{"no outcome", &recognitionv1.Decision{Result: k}, codes.InvalidArgument, "decision", ""},
			{"an unknown result", &recognitionv1.Decision{Result: "results/nope", Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED}, codes.NotFound, "", ""},
			{"an unknown check", &recognitionv1.Decision{Result: k, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Check: "checks/nope"}, codes.NotFound, "", ""},
			{"a correction of nothing", &recognitionv1.Decision{Result: k, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Corrects: "decisions/nope"}, codes.NotFound, "", ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := f.rec.CreateDecision(f.doctor(t), &recognitionv1.CreateDecisionRequest{Decision: tt.d})
				servertest.WantError(t, err, tt.code, tt.field)
			})
		}
	})
	t.Run("a decision on a result that is not recognizable", func(t *testing.T) {
		results, err := f.rec.ListSources(f.admin(t), &recognitionv1.ListSourcesRequest{})
		if err != nil || len(results.GetSources()) != 2 {
			t.Fatalf("sources %v, %v", results, err)
		}
		// Troponin is in the registry but not in the recognition catalog.
		tn := f.resultOf(t, f.batu, troponin)
		_, err = f.rec.CreateDecision(f.doctor(t), &recognitionv1.CreateDecisionRequest{Decision: &recognitionv1.Decision{Result: tn, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED}})
		servertest.WantReason(t, err, recognition.ReasonNotRecognizable)
	})
	t.Run("a facility not treating the patient cannot decide", func(t *testing.T) {
		_, err := f.rec.CreateDecision(f.As(t, community, "wjh", clinician), &recognitionv1.CreateDecisionRequest{Decision: &recognitionv1.Decision{Result: k, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED}})
		servertest.WantCode(t, err, codes.NotFound)
	})

	first := f.decide(t, &recognitionv1.Decision{Result: k, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Check: resp.GetCheck()})
	if first.GetFacility() != "facilities/dls" || first.GetPriceFen() != 500 || first.GetItem() != potassium || first.GetPatient() != f.batu {
		t.Fatalf("decision = %v", first)
	}
	f.decide(t, &recognitionv1.Decision{Result: na, Outcome: notRecognized, Reason: recognitionv1.Reason_REASON_CONDITION_CHANGED})
	f.decide(t, &recognitionv1.Decision{Result: x, Outcome: notRecognized, Reason: recognitionv1.Reason_REASON_IMAGES_NOT_RECEIVED})
	other := f.decide(t, &recognitionv1.Decision{Result: na, Outcome: notRecognized, Reason: recognitionv1.Reason_REASON_OTHER, ReasonText: "患者要求复查"})

	t.Run("a correction links the decision it corrects", func(t *testing.T) {
		fixed := f.decide(t, &recognitionv1.Decision{Result: na, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Corrects: other.GetName()})
		got, err := f.rec.GetDecision(f.doctor(t), &recognitionv1.GetDecisionRequest{Name: other.GetName()})
		if err != nil || got.GetDecision().GetCorrectedBy() != fixed.GetName() || got.GetDecision().GetOutcome() != notRecognized {
			t.Fatalf("corrected = %v, %v", got.GetDecision(), err)
		}
		_, err = f.rec.CreateDecision(f.doctor(t), &recognitionv1.CreateDecisionRequest{Decision: &recognitionv1.Decision{Result: na, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Corrects: other.GetName()}})
		servertest.WantReason(t, err, recognition.ReasonAlreadyCorrected)
		_, err = f.rec.CreateDecision(f.doctor(t), &recognitionv1.CreateDecisionRequest{Decision: &recognitionv1.Decision{Result: k, Outcome: recognitionv1.Outcome_OUTCOME_RECOGNIZED, Corrects: fixed.GetName()}})
		servertest.WantField(t, err, "decision.corrects")
		_, err = f.rec.GetDecision(f.As(t, community, "wjh", clinician), &recognitionv1.GetDecisionRequest{Name: fixed.GetName()})
		servertest.WantCode(t, err, codes.NotFound)
	})
	t.Run("a retried request records one decision", func(t *testing.T) {
		req := &recognitionv1.CreateDecisionRequest{RequestId: "r-1", Decision: &recognitionv1.Decision{Result: k, Outcome: notRecognized, Reason: recognitionv1.Reason_REASON_EMERGENCY}}
		a, err := f.rec.CreateDecision(f.doctor(t), req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := f.rec.CreateDecision(f.doctor(t), req)
		if err != nil || b.GetDecision().GetName() != a.GetDecision().GetName() {
			t.Fatalf("retry gave %v, %v", b.GetDecision().GetName(), err)
		}
	})

	// Counted: K recognized (500), Na recognized by the correction (500),
	// Na not recognized 01, K not recognized 02; the chest film's 98 is
	// excluded and the corrected 08 does not count.
	stats, err := f.rec.GetStatistics(f.admin(t), &recognitionv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-11"})
	if err != nil {
		t.Fatal(err)
	}
	tot := stats.GetTotal()
	if tot.GetDecisions() != 5 || tot.GetRecognized() != 2 || tot.GetNotRecognized() != 2 || tot.GetExcluded() != 1 || tot.GetRate() != 0.5 || tot.GetSavedFen() != 1000 {
		t.Errorf("total = %v", tot)
	}
	if len(stats.GetRows()) != 3 {
		t.Errorf("rows = %v", stats.GetRows())
	}
	for _, r := range stats.GetRows() {
		if r.GetItem() == chest && (r.GetExcluded() != 1 || r.GetRate() != 0 || r.GetMonth() != "2026-11" || r.GetFacility() != "facilities/dls") {
			t.Errorf("chest row = %v", r)
		}
	}
	if rs := stats.GetReasons(); len(rs) != 3 || rs[len(rs)-1].GetCumulativeShare() != 1 {
		t.Errorf("reasons = %v", rs)
	}
	if rep := stats.GetRepeated(); len(rep) != 2 || rep[0].GetCount() != 1 {
		t.Errorf("repeated = %v", rep)
	}
	// Another facility sees only its own figures.
	mine, err := f.rec.GetStatistics(f.As(t, community, "wjh", clinician), &recognitionv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-11", Facility: "facilities/dls"})
	if err != nil || mine.GetTotal().GetDecisions() != 0 {
		t.Errorf("wjh sees %v, %v", mine.GetTotal(), err)
	}
	_, err = f.rec.GetStatistics(f.admin(t), &recognitionv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-10"})
	servertest.WantField(t, err, "end_month")
	// Months holding more decisions than one call reads are refused,
	// naming the field to narrow: the month holds 6 decisions and a
	// correction.
	recognition.SetMaxStatDecisions(t, 6)
	_, err = f.rec.GetStatistics(f.admin(t), &recognitionv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-11"})
	servertest.WantError(t, err, codes.InvalidArgument, "end_month")
	recognition.SetMaxStatDecisions(t, 7)
	if _, err := f.rec.GetStatistics(f.admin(t), &recognitionv1.GetStatisticsRequest{StartMonth: "2026-11", EndMonth: "2026-11"}); err != nil {
		t.Errorf("statistics of 7 records with a bound of 7: %v", err)
	}
}

// resultOf returns the newest registry entry of patient and item, as an
// administrator sees it through GetResult after a check.
func (f *fixture) resultOf(t testing.TB, patient, item string) string {
	t.Helper()
	// A troponin is never recognizable, so a check does not name it;
	// its ID is the registry's stable ID of the report's item.
	return recognition.ResultName(patient, "lab", "facilities/qrmyy", "reports/S1", item)
}
