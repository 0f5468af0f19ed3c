package pathology_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/pathology"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading/readingtest"
)

type center struct {
	*readingtest.Center[pathologyv1.PathologyServiceClient]
}

func newCenter(t testing.TB) *center {
	t.Helper()
	return &center{readingtest.StartCenter(t, pathology.Name, pathology.Policy(), func(d readingtest.Deps) (readingtest.Service, error) {
		return pathology.New(d.Store, d.Clock, d.Peers, d.Logger, pathology.Config{FixationLimit: time.Hour, Reading: readingtest.Config()})
	}, pathologyv1.NewPathologyServiceClient)}
}

func (c *center) wu(t testing.TB) context.Context {
	return c.As(t, "practitioners/path-wu", "qrmyy", typev1.Role_ROLE_PATHOLOGIST)
}

func (c *center) request(t testing.TB, examType string) string {
	t.Helper()
	resp, err := c.API.CreateExam(c.Doctor(t), &pathologyv1.CreateExamRequest{Exam: &typev1.Exam{
		Patient: c.Batu, ExamType: &typev1.Code{Code: examType}, Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetExam().GetName()
}

// ago is a time the given duration before now.
func (c *center) ago(d time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(c.Clock.Now().Add(-d))
}

func TestReceiveSpecimens(t *testing.T) {
	c := newCenter(t)
	t.Run("a specimen fixed late raises the alert", func(t *testing.T) {
		name := c.request(t, "PATH-ROUTINE")
		resp, err := c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{
			{Barcode: "S0001", Site: "胃窦活检", ExcisionTime: c.ago(3 * time.Hour), FixationStartTime: c.ago(150 * time.Minute), Fixative: "10% NBF"},
			{Barcode: "S0002", Site: "胃体活检", ExcisionTime: c.ago(3 * time.Hour), FixationStartTime: c.ago(90 * time.Minute), Fixative: "10% NBF"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		sp := resp.GetExam().GetPathologyCase().GetSpecimens()
		if sp[0].GetFixationDelayMinutes() != 30 || sp[0].GetFixationDelayed() || sp[1].GetFixationDelayMinutes() != 90 || !sp[1].GetFixationDelayed() {
			t.Errorf("fixation delays: %v %v, %v %v", sp[0].GetFixationDelayMinutes(), sp[0].GetFixationDelayed(), sp[1].GetFixationDelayMinutes(), sp[1].GetFixationDelayed())
		}
		evs, err := c.API.ListEvents(c.Doctor(t), &pathologyv1.ListEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		alerts := 0
		for _, ev := range evs.GetEvents() {
			if ev.GetType() == "exam.fixation_delayed" && ev.GetResource() == name {
				alerts++
			}
		}
		if alerts != 1 {
			t.Errorf("%d fixation alerts in the requester's feed, want 1", alerts)
		}
		// Received once: a second reception is refused.
		_, err = c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{
			{Barcode: "S0003", Site: "x", ExcisionTime: c.ago(time.Hour), FixationStartTime: c.ago(time.Hour)},
		}})
		servertest.WantReason(t, err, "INVALID_TRANSITION")
	})
	t.Run("a frozen section comes fresh", func(t *testing.T) {
		name := c.request(t, "PATH-FROZEN")
		resp, err := c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{
			{Barcode: "F0001", Site: "甲状腺右叶结节", ExcisionTime: c.ago(5 * time.Minute)},
		}})
		if err != nil || resp.GetExam().GetPathologyCase().GetSpecimens()[0].GetFixationDelayed() {
			t.Fatalf("fresh frozen section: %v, %v", resp.GetExam().GetPathologyCase(), err)
		}
	})
	name := c.request(t, "PATH-ROUTINE")
	for _, tc := range []struct {
		name     string
		specimen *typev1.PathologySpecimen
		field    string
	}{
		{"no fixation time for a routine case", &typev1.PathologySpecimen{Barcode: "B0001", Site: "x", ExcisionTime: c.ago(time.Hour)}, "specimens[0].fixation_start_time"},
		{"fixed before it was excised", &typev1.PathologySpecimen{Barcode: "B0001", Site: "x", ExcisionTime: c.ago(time.Hour), FixationStartTime: c.ago(2 * time.Hour)}, "specimens[0].fixation_start_time"},
		{"excised in the future", &typev1.PathologySpecimen{Barcode: "B0001", Site: "x", ExcisionTime: c.ago(-time.Hour), FixationStartTime: c.ago(0)}, "specimens[0].excision_time"},
		{"a barcode already used", &typev1.PathologySpecimen{Barcode: "S0001", Site: "x", ExcisionTime: c.ago(time.Hour), FixationStartTime: c.ago(time.Hour)}, "specimens[0].barcode"},
		{"no excision time", &typev1.PathologySpecimen{Barcode: "B0001", Site: "x"}, "specimens[0].excision_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{tc.specimen}})
			servertest.WantField(t, err, tc.field)
		})
	}
}

func TestGrossBlocksAndSlides(t *testing.T) {
	c := newCenter(t)
	name := c.request(t, "PATH-ROUTINE")
	// Before reception there is nothing to describe.
	_, err := c.API.RecordGross(c.wu(t), &pathologyv1.RecordGrossRequest{Name: name, Description: "x", Blocks: []*typev1.PathologyBlock{{Barcode: "K0001", Specimen: "S1001", Label: "A1"}}})
	servertest.WantReason(t, err, "EXAM_CLOSED")
	if _, err := c.API.ReceiveSpecimens(c.wu(t), &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{
		{Barcode: "S1001", Site: "左乳肿物切除标本", ExcisionTime: c.ago(time.Hour), FixationStartTime: c.ago(50 * time.Minute)},
	}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.API.RecordGross(c.wu(t), &pathologyv1.RecordGrossRequest{Name: name, Description: "x", Blocks: []*typev1.PathologyBlock{{Barcode: "K0001", Specimen: "S9999", Label: "A1"}}})
	servertest.WantField(t, err, "blocks[0].specimen")
	gross, err := c.API.RecordGross(c.wu(t), &pathologyv1.RecordGrossRequest{Name: name, Description: "灰白色结节一枚，大小2.0×1.5×1.0cm，切面灰白实性，边界清。", Blocks: []*typev1.PathologyBlock{
		{Barcode: "K1001", Specimen: "S1001", Label: "A1", Pieces: 2}, {Barcode: "K1002", Specimen: "S1001", Label: "A2", Pieces: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if pc := gross.GetExam().GetPathologyCase(); len(pc.GetBlocks()) != 2 || pc.GetGrossedBy() != "practitioners/path-wu" || pc.GetGrossDescription() == "" {
		t.Errorf("gross: %v", pc)
	}
	_, err = c.API.AddSlides(c.wu(t), &pathologyv1.AddSlidesRequest{Name: name, Slides: []*typev1.PathologySlide{{Barcode: "K1001", Block: "K1001", Stain: &typev1.Code{Code: "HE"}}}})
	servertest.WantField(t, err, "slides[0].barcode")
	_, err = c.API.AddSlides(c.wu(t), &pathologyv1.AddSlidesRequest{Name: name, Slides: []*typev1.PathologySlide{{Barcode: "L1009", Block: "K9999", Stain: &typev1.Code{Code: "HE"}}}})
	servertest.WantField(t, err, "slides[0].block")
	slides, err := c.API.AddSlides(c.wu(t), &pathologyv1.AddSlidesRequest{Name: name, Slides: []*typev1.PathologySlide{
		{Barcode: "L1001", Block: "K1001", Stain: &typev1.Code{Code: "HE", Display: "苏木精-伊红"}},
		{Barcode: "L1002", Block: "K1001", Stain: &typev1.Code{System: "urn:mcc:stain", Code: "ER", Display: "雌激素受体 免疫组化"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []*typev1.PathologySlide{
		{Barcode: "L1001", Block: "K1001", Stain: &typev1.Code{Code: "HE", Display: "苏木精-伊红"}, CreatedBy: "practitioners/path-wu"},
		{Barcode: "L1002", Block: "K1001", Stain: &typev1.Code{System: "urn:mcc:stain", Code: "ER", Display: "雌激素受体 免疫组化"}, Special: true, CreatedBy: "practitioners/path-wu"},
	}
	if diff := cmp.Diff(want, slides.GetExam().GetPathologyCase().GetSlides(), protocmp.Transform(), protocmp.IgnoreFields(&typev1.PathologySlide{}, "create_time")); diff != "" {
		t.Errorf("slides (-want +got):\n%s", diff)
	}
	// Events carry the case without its gross description.
	evs, err := c.API.ListEvents(c.wu(t), &pathologyv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.GetEvents() {
		e := &typev1.Exam{}
		if ev.GetSnapshot().UnmarshalTo(e) == nil && e.GetPathologyCase().GetGrossDescription() != "" {
			t.Errorf("%s carries the gross description", ev.GetType())
		}
	}
}
