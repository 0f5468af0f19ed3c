package recognition

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/store"
)

// TestEntriesAtAnswersAsEveryEntryWould: a check that decodes only the
// entries entriesAt picks gives the same answer as one that judges every
// entry of the item, newest first, over random histories (withdrawn
// entries, issuers below the item's level, a QC suspension, another item
// in the bucket, entries with no report time, which tie, and entries
// reported after the time asked about) and random times, including the
// instants entries expire.
func TestEntriesAtAnswersAsEveryEntryWould(t *testing.T) {
	const item, other = "2823-3", "2951-2"
	const validity = 7
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	it := &recognitionv1.Item{
		Code: &typev1.Code{Code: item}, Recognized: true, ValidityDays: validity,
		Scope: recognitionv1.Scope_SCOPE_CITY, MinFacilityLevel: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, RequiresQc: true,
	}
	r := &rules{
		items: map[string]*recognitionv1.Item{item: it},
		suspensions: map[string][]*recognitionv1.QcSuspension{item: {{
			Name: "qcSuspensions/1", Facility: "facilities/f1",
			StartTime: timestamppb.New(base.Add(40 * 24 * time.Hour)), EndTime: timestamppb.New(base.Add(50 * 24 * time.Hour)),
		}}},
	}
	levels := []typev1.FacilityLevel{typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL, typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC}
	const id = "0192f0c4-patient"
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		pr := &patientRecord{id: id, bucket: bucketOf(item)}
		var times []time.Time
		for i := range 1 + rng.IntN(60) {
			reported := base.Add(time.Duration(rng.IntN(100*24*3600))*time.Second + time.Duration(i)*time.Millisecond)
			times = append(times, reported)
			e := &recognitionv1.Result{
				Name: fmt.Sprintf("results/%s-%d", id, i), Item: item, IssuingFacility: fmt.Sprintf("facilities/f%d", rng.IntN(3)),
				IssuerLevel: levels[rng.IntN(len(levels))], OriginScope: recognitionv1.Scope_SCOPE_COMMUNITY,
				ReportTime: timestamppb.New(reported), Summary: "4.2 mmol/L (N)", ReportVersion: 1,
				State: recognitionv1.Result_STATE_FINAL,
			}
			switch rng.IntN(8) {
			case 0:
				e.State = recognitionv1.Result_STATE_WITHDRAWN
			case 1:
				e.Item = other
			case 2:
				e.ReportTime = nil
			}
			pr.add(e)
		}
		raw, err := readEntries(func(string) (store.Record, error) {
			return store.Record{Value: pr.encode()}, nil
		}, pr.key())
		if err != nil {
			t.Fatal(err)
		}
		var every []*recognitionv1.Result
		for _, v := range raw {
			e, err := decodeEntry(id, v)
			if err != nil {
				t.Fatal(err)
			}
			every = append(every, e)
		}
		ats := []time.Time{base.Add(-time.Hour), base.Add(200 * 24 * time.Hour)}
		for range 20 {
			ats = append(ats, base.Add(time.Duration(rng.IntN(110*24*3600))*time.Second))
		}
		for _, reported := range times {
			expire := reported.AddDate(0, 0, validity)
			ats = append(ats, reported, expire.Add(-time.Nanosecond), expire)
		}
		for _, at := range ats {
			want := r.answer(it, everyEntryOf(every, item), at)
			picked, err := entriesAt(raw, id, item, validity, at)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.answer(it, picked, at); !proto.Equal(got, want) {
				t.Fatalf("seed %d, at %s: decoding %d of %d entries answered\n%v\nwant\n%v", seed, at, len(picked), len(every), got, want)
			}
		}
	}
}

// everyEntryOf is every entry of item, newest first and by name at the same
// instant: what a check judged before entriesAt.
func everyEntryOf(entries []*recognitionv1.Result, item string) []*recognitionv1.Result {
	var out []*recognitionv1.Result
	for _, e := range entries {
		if e.GetItem() == item {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *recognitionv1.Result) int {
		if c := b.GetReportTime().AsTime().Compare(a.GetReportTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	return out
}

// TestPeekEntry: the item and report time read from the stored bytes are
// the decoded entry's, also for times before 1970 and with no time.
func TestPeekEntry(t *testing.T) {
	for _, reported := range []*timestamppb.Timestamp{
		timestamppb.New(time.Date(2026, 11, 24, 3, 4, 5, 678, time.UTC)),
		timestamppb.New(time.Date(1960, 1, 1, 0, 0, 0, 999, time.UTC)),
		nil,
	} {
		e := &recognitionv1.Result{Name: "results/x", Item: "2823-3", Summary: "s", ReportTime: reported, Timeline: []*typev1.StateChange{{Reason: "r"}}}
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		name, item, at, err := peekEntry(b)
		if err != nil || string(name) != "results/x" || string(item) != "2823-3" || !at.Equal(reported.AsTime()) {
			t.Errorf("peekEntry = %q, %q, %s, %v; want results/x, 2823-3, %s", name, item, at, err, reported.AsTime())
		}
	}
	if _, _, _, err := peekEntry([]byte{0x1a, 0x05, 'a'}); err == nil {
		t.Error("peekEntry of a truncated entry: no error")
	}
}

// TestPatientRecordRewritesOnlyWhatItDecoded: a record read back, with one
// entry looked up and changed and one added, is written with the other
// entries' stored bytes as they were.
func TestPatientRecordRewritesOnlyWhatItDecoded(t *testing.T) {
	const id = "0192f0c4-patient"
	pr := &patientRecord{id: id, bucket: "ab"}
	for i := range 3 {
		pr.add(&recognitionv1.Result{Name: fmt.Sprintf("results/%s-%d", id, i), Item: "2823-3", Summary: "old", ReportVersion: 1})
	}
	stored := pr.encode()
	get := func(string) (store.Record, error) { return store.Record{Value: stored}, nil }
	before, err := readEntries(get, pr.key())
	if err != nil {
		t.Fatal(err)
	}
	read, err := readPatient(get, id, "ab")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := read.find("results/nobody"); e != nil || err != nil {
		t.Fatalf("find of a missing entry = %v, %v", e, err)
	}
	e, err := read.find(fmt.Sprintf("results/%s-1", id))
	if err != nil || e == nil || e.GetPatient() != "patients/"+id {
		t.Fatalf("find = %v, %v", e, err)
	}
	e.Summary = "new"
	read.add(&recognitionv1.Result{Name: "results/" + id + "-3", Item: "2823-3", Summary: "added"})
	stored = read.encode()
	after, err := readEntries(get, pr.key())
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 4 || string(after[0]) != string(before[0]) || string(after[2]) != string(before[2]) {
		t.Fatalf("the untouched entries were not kept as stored: %d entries", len(after))
	}
	for i, want := range []string{"old", "new", "old", "added"} {
		got, err := decodeEntry(id, after[i])
		if err != nil || got.GetSummary() != want {
			t.Errorf("entry %d: summary %q (%v), want %q", i, got.GetSummary(), err, want)
		}
	}
}
