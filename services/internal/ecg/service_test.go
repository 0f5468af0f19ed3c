package ecg_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	ecgv1 "github.com/countymcc/mcc/proto/mcc/ecg/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/ecg"
	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading/readingtest"
)

// center is the ECG center of the fixture.
type center struct {
	*readingtest.Center[ecgv1.EcgServiceClient]
}

func newCenter(t testing.TB) *center {
	t.Helper()
	return &center{readingtest.StartCenter(t, ecg.Name, ecg.Policy(), func(d readingtest.Deps) (readingtest.Service, error) {
		return ecg.New(d.Store, d.Clock, d.Peers, d.Logger, ecg.Config{Reading: readingtest.Config()})
	}, ecgv1.NewEcgServiceClient)}
}

func (c *center) bao(t testing.TB) context.Context {
	return c.As(t, "practitioners/ecg-bao", "qrmyy", typev1.Role_ROLE_CARDIOLOGIST)
}

func (c *center) gao(t testing.TB) context.Context {
	return c.As(t, "practitioners/ecg-gao", "qrmyy", typev1.Role_ROLE_CARDIOLOGIST)
}

func (c *center) request(t testing.TB, priority typev1.ExamPriority) *typev1.Exam {
	t.Helper()
	resp, err := c.API.CreateExam(c.Doctor(t), &ecgv1.CreateExamRequest{Exam: &typev1.Exam{
		Patient: c.Batu, ExamType: &typev1.Code{Code: "ECG-12"}, Priority: priority, ClinicalNote: "胸闷两小时",
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetExam()
}

func TestUploadForms(t *testing.T) {
	c := newCenter(t)
	w := ecgtest.Normal(72)
	for _, tc := range []struct {
		name   string
		req    func(exam string) *ecgv1.UploadRecordingRequest
		source typev1.EcgSource
		sop    string
	}{
		{"sampled", func(exam string) *ecgv1.UploadRecordingRequest {
			return &ecgv1.UploadRecordingRequest{Name: exam, Recording: &ecgv1.UploadRecordingRequest_Sampled{Sampled: w}}
		}, typev1.EcgSource_ECG_SOURCE_SAMPLED, ""},
		{"DICOM explicit VR", func(exam string) *ecgv1.UploadRecordingRequest {
			return &ecgv1.UploadRecordingRequest{Name: exam, Recording: &ecgv1.UploadRecordingRequest_Dicom{Dicom: ecgtest.DICOM(w, "2.25.11", true)}}
		}, typev1.EcgSource_ECG_SOURCE_DICOM, "2.25.11"},
		{"DICOM implicit VR", func(exam string) *ecgv1.UploadRecordingRequest {
			return &ecgv1.UploadRecordingRequest{Name: exam, Recording: &ecgv1.UploadRecordingRequest_Dicom{Dicom: ecgtest.DICOM(w, "2.25.12", false)}}
		}, typev1.EcgSource_ECG_SOURCE_DICOM, "2.25.12"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := c.request(t, typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
			got, err := c.API.UploadRecording(c.Doctor(t), tc.req(e.GetName()))
			if err != nil {
				t.Fatal(err)
			}
			rec := got.GetExam().GetRecording()
			want := &typev1.EcgRecording{
				Source: tc.source, Leads: []string{"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"},
				SampleRateHz: 500, SamplesPerLead: 5000, DurationSeconds: 10, SopInstanceUid: tc.sop,
			}
			if diff := cmp.Diff(want, rec, protocmp.Transform(), protocmp.IgnoreFields(&typev1.EcgRecording{}, "pre_read", "upload_time")); diff != "" {
				t.Errorf("recording (-want +got):\n%s", diff)
			}
			pre := rec.GetPreRead()
			if pre.GetStatus() != typev1.EcgPreRead_STATUS_MACHINE_READ || pre.GetHeartRateBpm() < 70 || pre.GetHeartRateBpm() > 74 || pre.GetBradycardia() || pre.GetTachycardia() {
				t.Errorf("pre-read %v", pre)
			}
			if got.GetExam().GetState() != typev1.Exam_STATE_ARRIVED || got.GetExam().GetDueTime().AsTime() != readingtest.T0.Add(30*time.Minute) {
				t.Errorf("exam %v due %v, want arrived and due in 30 minutes", got.GetExam().GetState(), got.GetExam().GetDueTime().AsTime())
			}
			// The waveform comes back in the sampled form, whatever the
			// upload's form, and is stored once: a second upload is refused.
			back, err := c.API.GetWaveform(c.Doctor(t), &ecgv1.GetWaveformRequest{Name: e.GetName() + "/waveform"})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(w, back.GetWaveform(), protocmp.Transform()); diff != "" {
				t.Errorf("waveform (-uploaded +served):\n%s", diff)
			}
			_, err = c.API.UploadRecording(c.Doctor(t), tc.req(e.GetName()))
			servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
		})
	}
}

func TestUploadBadInput(t *testing.T) {
	c := newCenter(t)
	e := c.request(t, typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	sampled := func(edit func(w *typev1.EcgWaveform)) *ecgv1.UploadRecordingRequest {
		w := ecgtest.Normal(72)
		edit(w)
		return &ecgv1.UploadRecordingRequest{Name: e.GetName(), Recording: &ecgv1.UploadRecordingRequest_Sampled{Sampled: w}}
	}
	dicomOf := func(data []byte) *ecgv1.UploadRecordingRequest {
		return &ecgv1.UploadRecordingRequest{Name: e.GetName(), Recording: &ecgv1.UploadRecordingRequest_Dicom{Dicom: data}}
	}
	good := ecgtest.DICOM(ecgtest.Normal(72), "2.25.9", true)
	elevenLeads := ecgtest.Normal(72)
	elevenLeads.Leads = elevenLeads.Leads[:11]
	for _, tc := range []struct {
		name  string
		req   *ecgv1.UploadRecordingRequest
		field string
	}{
		{"missing leads", sampled(func(w *typev1.EcgWaveform) { w.Leads = w.Leads[:8] }), "sampled.leads"},
		{"a lead twice", sampled(func(w *typev1.EcgWaveform) { w.Leads[11].Name = "V5" }), "sampled.leads[11].name"},
		{"zero samples", sampled(func(w *typev1.EcgWaveform) { w.Leads[3].Samples = nil }), "sampled.leads[3].samples"},
		{"no samples at all", sampled(func(w *typev1.EcgWaveform) {
			for _, l := range w.Leads {
				l.Samples = nil
			}
		}), "sampled.leads[0].samples"},
		{"absurd sample rate", sampled(func(w *typev1.EcgWaveform) {
			for _, l := range w.Leads {
				l.SampleRateHz = 50000
			}
		}), "sampled.leads[0].sample_rate_hz"},
		{"rates differ", sampled(func(w *typev1.EcgWaveform) { w.Leads[5].SampleRateHz = 250 }), "sampled.leads[5].sample_rate_hz"},
		{"lengths differ", sampled(func(w *typev1.EcgWaveform) { w.Leads[7].Samples = w.Leads[7].Samples[:4000] }), "sampled.leads[7].samples"},
		{"too short", sampled(func(w *typev1.EcgWaveform) {
			for _, l := range w.Leads {
				l.Samples = l.Samples[:1000]
			}
		}), "sampled.leads[0].samples"},
		{"no µV per unit", sampled(func(w *typev1.EcgWaveform) { w.Leads[0].MicrovoltsPerUnit = 0 }), "sampled.leads[0].microvolts_per_unit"},
		{"not DICOM", dicomOf([]byte("%PDF-1.4 not an ECG")), "dicom"},
		{"corrupt DICOM", dicomOf(good[:len(good)-100]), "dicom"},
		{"DICOM with missing leads", dicomOf(ecgtest.DICOM(elevenLeads, "2.25.10", false)), "dicom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.API.UploadRecording(c.Doctor(t), tc.req)
			servertest.WantField(t, err, tc.field)
		})
	}
	got, err := c.API.GetExam(c.Doctor(t), &ecgv1.GetExamRequest{Name: e.GetName()})
	if err != nil || got.GetExam().GetState() != typev1.Exam_STATE_REQUESTED || got.GetExam().GetRecording() != nil {
		t.Errorf("after refused uploads: %v, %v", got.GetExam(), err)
	}
}

func TestSuspectedSTEMI(t *testing.T) {
	c := newCenter(t)
	routine := c.request(t, typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	emergency := c.request(t, typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY)
	stemi := c.request(t, typev1.ExamPriority_EXAM_PRIORITY_ROUTINE)
	for _, e := range []*typev1.Exam{routine, emergency, stemi} {
		if _, err := c.API.UploadRecording(c.Doctor(t), &ecgv1.UploadRecordingRequest{Name: e.GetName(), Recording: &ecgv1.UploadRecordingRequest_Sampled{Sampled: ecgtest.Normal(88)}}); err != nil {
			t.Fatal(err)
		}
		c.Clock.Advance(time.Minute)
	}
	worklist := func() []string {
		resp, err := c.API.ListWorklist(c.bao(t), &ecgv1.ListWorklistRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range resp.GetExams() {
			names = append(names, e.GetName())
		}
		return names
	}
	// By due time: the emergency (10 minutes), then the routine ones (30).
	if diff := cmp.Diff([]string{emergency.GetName(), routine.GetName(), stemi.GetName()}, worklist()); diff != "" {
		t.Errorf("worklist before the flag (-want +got):\n%s", diff)
	}
	// A cardiologist flags the last one: it goes to the top, due 10
	// minutes after its recording arrived; flagging again changes nothing.
	flagged, err := c.API.FlagSuspectedStemi(c.bao(t), &ecgv1.FlagSuspectedStemiRequest{Name: stemi.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	arrived := readingtest.T0.Add(2 * time.Minute)
	if got := flagged.GetExam(); got.GetExpedited().GetReason().GetCode() != "SUSPECTED_STEMI" || !got.GetDueTime().AsTime().Equal(arrived.Add(10*time.Minute)) {
		t.Errorf("flagged: %v due %v", got.GetExpedited(), got.GetDueTime().AsTime())
	}
	again, err := c.API.FlagSuspectedStemi(c.Doctor(t), &ecgv1.FlagSuspectedStemiRequest{Name: stemi.GetName()})
	if err != nil || again.GetExam().GetEtag() != flagged.GetExam().GetEtag() {
		t.Errorf("second flag: %v, %v", again.GetExam().GetEtag(), err)
	}
	if diff := cmp.Diff([]string{stemi.GetName(), emergency.GetName(), routine.GetName()}, worklist()); diff != "" {
		t.Errorf("worklist after the flag (-want +got):\n%s", diff)
	}
	// Another township does not see it, and cannot flag it.
	other := c.As(t, "practitioners/doc-wjh-li", "wjh", typev1.Role_ROLE_CLINICIAN)
	_, err = c.API.FlagSuspectedStemi(other, &ecgv1.FlagSuspectedStemiRequest{Name: routine.GetName()})
	servertest.WantCode(t, err, codes.NotFound)
	// Past its 10 minutes it breaches its target.
	c.Fire(t, 11*time.Minute)
	got, err := c.API.GetExam(c.bao(t), &ecgv1.GetExamRequest{Name: stemi.GetName()})
	if err != nil || !got.GetExam().GetOverdue() || !got.GetExam().GetBreachTime().AsTime().Equal(arrived.Add(10*time.Minute)) {
		t.Errorf("after 13 minutes: overdue %v at %v (%v)", got.GetExam().GetOverdue(), got.GetExam().GetBreachTime().AsTime(), err)
	}
}

func TestConfirmPreRead(t *testing.T) {
	c := newCenter(t)
	e := c.request(t, typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY)
	// Before the recording there is nothing to confirm.
	_, err := c.API.ConfirmPreRead(c.bao(t), &ecgv1.ConfirmPreReadRequest{Name: e.GetName()})
	servertest.WantReason(t, err, "EXAM_CLOSED")
	up, err := c.API.UploadRecording(c.Doctor(t), &ecgv1.UploadRecordingRequest{Name: e.GetName(), Recording: &ecgv1.UploadRecordingRequest_Sampled{Sampled: ecgtest.Normal(45)}})
	if err != nil {
		t.Fatal(err)
	}
	if pre := up.GetExam().GetRecording().GetPreRead(); !pre.GetBradycardia() || pre.GetStatus() != typev1.EcgPreRead_STATUS_MACHINE_READ {
		t.Errorf("pre-read of a 45 bpm recording: %v", pre)
	}
	// The township cannot confirm; a cardiologist of the center can, with
	// a corrected rate.
	_, err = c.API.ConfirmPreRead(c.Doctor(t), &ecgv1.ConfirmPreReadRequest{Name: e.GetName()})
	servertest.WantCode(t, err, codes.PermissionDenied)
	got, err := c.API.ConfirmPreRead(c.gao(t), &ecgv1.ConfirmPreReadRequest{Name: e.GetName(), HeartRateBpm: 44})
	if err != nil {
		t.Fatal(err)
	}
	pre := got.GetExam().GetRecording().GetPreRead()
	want := proto.CloneOf(up.GetExam().GetRecording().GetPreRead())
	want.Status, want.ConfirmedBy, want.ConfirmTime, want.ConfirmedHeartRateBpm = typev1.EcgPreRead_STATUS_CONFIRMED, "practitioners/ecg-gao", pre.GetConfirmTime(), 44
	if diff := cmp.Diff(want, pre, protocmp.Transform()); diff != "" {
		t.Errorf("confirmed pre-read (-want +got):\n%s", diff)
	}
}
