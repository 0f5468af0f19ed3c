package recognition_test

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// TestGarbageAndRepeatedEvents: unreadable events are skipped and counted,
// never fatal; the same event three times makes one entry.
func TestGarbageAndRepeatedEvents(t *testing.T) { onEveryStore(t, testGarbageAndRepeatedEvents) }

func testGarbageAndRepeatedEvents(t *testing.T, f *fixture) {
	released := t0.Add(-time.Hour)
	final := labReport(t, "report.final", "S1", f.batu, 1, released, potassium)
	noPatient := labReport(t, "report.final", "S2", "", 1, released, potassium)
	f.lab.add(
		final, final,
		&typev1.Event{Id: "g1", Type: "report.final", Resource: "reports/G1"},
		&typev1.Event{Id: "g2", Type: "report.final", Resource: "reports/G2", Snapshot: &anypb.Any{TypeUrl: "type.googleapis.com/mcc.lab.v1.Report", Value: []byte{0xff, 0xff, 0xff}}},
		&typev1.Event{Id: "g3", Type: "report.amended", Resource: "reports/G3", Snapshot: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Message", Value: []byte{1}}},
		event(t, "report.final", "reports/G4", &typev1.Code{Code: "not a report"}),
		noPatient,
		&typev1.Event{Id: "o1", Type: "order.placed", Resource: "orders/1"},
		final,
	)
	st := f.waitIndexed(t, "lab", "9")
	if st.GetIndexed() != 1 || st.GetSkipped() != 5 || st.GetLastSkipped() == "" {
		t.Fatalf("source = %v", st)
	}
	// The feed goes on after the garbage.
	f.lab.add(labReport(t, "report.final", "S3", f.batu, 1, released.Add(time.Minute), sodium))
	if st := f.waitIndexed(t, "lab", "10"); st.GetIndexed() != 2 {
		t.Fatalf("source = %v", st)
	}
	got := f.check(t, f.batu, potassium).GetItems()[0]
	if len(got.GetRecognizable()) != 1 {
		t.Fatalf("%d entries from one report sent three times", len(got.GetRecognizable()))
	}
	e, err := f.rec.GetResult(f.doctor(t), &recognitionv1.GetResultRequest{Name: got.GetRecognizable()[0].GetResult()})
	if err != nil || len(e.GetResult().GetHistory()) != 0 || len(e.GetResult().GetTimeline()) != 1 {
		t.Fatalf("entry = %v, %v", e.GetResult(), err)
	}
	// An older version after a newer one changes nothing.
	f.lab.add(labReport(t, "report.amended", "S1", f.batu, 2, released, potassium), final)
	f.waitIndexed(t, "lab", "12")
	if s := f.check(t, f.batu, potassium).GetItems()[0].GetRecognizable()[0].GetSummary(); s != "5.2 mmol/L (N)" {
		t.Errorf("summary = %q after an old version came late", s)
	}
}

// TestRestartResumesTheCursor: after a restart the registry asks the center
// for the events after the last one it indexed, and indexes new ones.
func TestRestartResumesTheCursor(t *testing.T) { onEveryStore(t, testRestartResumesTheCursor) }

func testRestartResumesTheCursor(t *testing.T, f *fixture) {
	released := t0.Add(-time.Hour)
	f.lab.add(labReport(t, "report.final", "S1", f.batu, 1, released, potassium), labReport(t, "report.final", "S2", f.batu, 1, released, sodium))
	f.waitIndexed(t, "lab", "2")
	f.restart(t)
	f.lab.add(labReport(t, "report.final", "S3", f.qiqige, 1, released, potassium))
	st := f.waitIndexed(t, "lab", "3")
	if st.GetIndexed() != 3 {
		t.Errorf("indexed %d events, want 3: none twice", st.GetIndexed())
	}
	f.lab.mu.Lock()
	afters := slices.Clone(f.lab.afters)
	f.lab.mu.Unlock()
	if !slices.Contains(afters, "2") || afters[0] != "" {
		t.Errorf("streams were opened after %q, want the start and then 2", afters)
	}
	if n := len(f.check(t, f.qiqige, potassium).GetItems()[0].GetRecognizable()); n != 1 {
		t.Errorf("qiqige has %d results", n)
	}
}

// TestADownCenterDelaysNothingElse: imaging refuses every stream; the lab
// is indexed all the same, and imaging is caught up when it is back.
func TestADownCenterDelaysNothingElse(t *testing.T) {
	f := newFixture(t)
	f.imaging.mu.Lock()
	f.imaging.down = true
	f.imaging.mu.Unlock()
	f.imaging.add(examReport(t, "report.final", "X1", f.batu, chest, 1, t0.Add(-time.Hour)))
	f.lab.add(labReport(t, "report.final", "S1", f.batu, 1, t0.Add(-time.Hour), potassium))
	f.waitIndexed(t, "lab", "1")
	unrecognizable(t, f.check(t, f.batu, chest).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_NO_PRIOR_RESULT)
	f.imaging.mu.Lock()
	f.imaging.down = false
	f.imaging.mu.Unlock()
	f.waitIndexed(t, "imaging", "1")
	unrecognizable(t, f.check(t, f.batu, chest).GetItems()[0], recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED)
}
