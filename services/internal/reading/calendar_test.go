package reading

import (
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

func TestWorkingTime(t *testing.T) {
	cal, err := CalendarConfig{WorkingHours: "08:00-12:00,14:30-18:00", Holidays: "2026-10-01,2026-10-02", UTCOffset: 8 * time.Hour}.parse()
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, cal.zone)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name, from string
		hours      time.Duration
		days       int
		want       string
	}{
		{"4 working hours within a morning and an afternoon", "2026-11-23 10:00", 4 * time.Hour, 0, "2026-11-23 16:30"},
		{"from the lunch break", "2026-11-23 12:30", time.Hour, 0, "2026-11-23 15:30"},
		{"across the night", "2026-11-23 17:00", 4 * time.Hour, 0, "2026-11-24 11:00"},
		{"from Friday evening to Monday", "2026-11-27 17:30", 2 * time.Hour, 0, "2026-11-30 09:30"},
		{"from a Sunday", "2026-11-29 10:00", time.Hour, 0, "2026-11-30 09:00"},
		{"over a holiday", "2026-09-30 17:00", 2 * time.Hour, 0, "2026-10-05 09:00"},
		{"5 working days from a Monday", "2026-11-23 09:00", 0, 5, "2026-11-30 09:00"},
		{"5 working days from a Thursday", "2026-11-26 15:00", 0, 5, "2026-12-03 15:00"},
		{"over a holiday", "2026-09-30 10:00", 0, 1, "2026-10-05 10:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got time.Time
			if tc.days > 0 {
				got, err = cal.addWorkingDays(at(tc.from), tc.days)
			} else {
				got, err = cal.addWorkingTime(at(tc.from), tc.hours)
			}
			if err != nil || !got.Equal(at(tc.want)) {
				t.Errorf("got %v (%v), want %s", got.In(cal.zone), err, tc.want)
			}
		})
	}
	for _, bad := range []string{"8-12", "12:00-08:00", "08:00-12:00,11:00-13:00", ""} {
		if _, err := (CalendarConfig{WorkingHours: bad}).parse(); err == nil {
			t.Errorf("working hours %q accepted", bad)
		}
	}
	if _, err := (CalendarConfig{WorkingHours: "08:00-12:00", Holidays: "2026-13-01"}).parse(); err == nil {
		t.Error("a bad holiday accepted")
	}
}

func TestLimitFor(t *testing.T) {
	cat, err := newCatalog(0, []byte(`{"examTypes":[{"code":{"code":"CT-X"},"displayName":"x","results":[{"code":"N","display":"n"}],"turnaround":[
		{"priority":"EXAM_PRIORITY_EMERGENCY","limit":"3600s","basis":"TURNAROUND_BASIS_CLOCK"},
		{"priority":"EXAM_PRIORITY_URGENT","limit":"7200s","basis":"TURNAROUND_BASIS_CLOCK"},
		{"priority":"EXAM_PRIORITY_ROUTINE","patientClass":"PATIENT_CLASS_OUTPATIENT","limit":"14400s","basis":"TURNAROUND_BASIS_WORKING_HOURS"},
		{"priority":"EXAM_PRIORITY_ROUTINE","limit":"21600s","basis":"TURNAROUND_BASIS_CLOCK"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	et := cat.seed["CT-X"]
	for _, tc := range []struct {
		priority typev1.ExamPriority
		class    typev1.PatientClass
		want     time.Duration
	}{
		{typev1.ExamPriority_EXAM_PRIORITY_ROUTINE, typev1.PatientClass_PATIENT_CLASS_OUTPATIENT, 4 * time.Hour},
		{typev1.ExamPriority_EXAM_PRIORITY_ROUTINE, typev1.PatientClass_PATIENT_CLASS_INPATIENT, 6 * time.Hour},
		{typev1.ExamPriority_EXAM_PRIORITY_ROUTINE, typev1.PatientClass_PATIENT_CLASS_UNSPECIFIED, 6 * time.Hour},
		{typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY, typev1.PatientClass_PATIENT_CLASS_OUTPATIENT, time.Hour},
	} {
		row := limitFor(et, tc.priority, tc.class)
		if row.GetLimit().AsDuration() != tc.want {
			t.Errorf("%v %v: %v, want %v", tc.priority, tc.class, row.GetLimit().AsDuration(), tc.want)
		}
	}
}
