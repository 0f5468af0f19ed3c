package imaging_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	imagingv1 "github.com/countymcc/mcc/proto/mcc/imaging/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/imaging"
	"github.com/countymcc/mcc/services/internal/imaging/orthanctest"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/reading/readingtest"
	"github.com/countymcc/mcc/services/internal/store"
)

// center is the imaging center of the fixture, on the PACS at dicomweb.
type center struct {
	*readingtest.Center[imagingv1.ImagingServiceClient]
}

func newCenter(t testing.TB, dicomweb string) *center {
	t.Helper()
	return &center{readingtest.StartCenter(t, imaging.Name, imaging.Policy(), func(d readingtest.Deps) (readingtest.Service, error) {
		return imaging.New(d.Store, d.Clock, d.Peers, d.PII, d.Logger, imaging.Config{DICOMwebURL: dicomweb, PACSTimeout: 5 * time.Second, Reading: readingtest.Config()})
	}, imagingv1.NewImagingServiceClient)}
}

func (c *center) sun(t testing.TB) context.Context {
	return c.As(t, "practitioners/rad-sun", "qrmyy", typev1.Role_ROLE_RADIOLOGIST)
}

func (c *center) zhou(t testing.TB) context.Context {
	return c.As(t, "practitioners/rad-zhou", "qrmyy", typev1.Role_ROLE_RADIOLOGIST)
}

// batuStudy is a chest film of Batu as the township's PACS has it: his
// resident ID number as patient ID, his name in both DICOM groups.
func (c *center) batuStudy() orthanctest.Study {
	return orthanctest.Study{
		UID: orthanctest.NewUID(), PatientID: c.BatuID, PatientName: "BATEER^=巴特尔", BirthDate: "19580314", Sex: "M",
		Modality: "DX", BodyPart: "CHEST", Date: "20261123", Series: 2, Images: 2,
	}
}

func (c *center) createReq(uid, examType, requestID string) *imagingv1.CreateExamRequest {
	return &imagingv1.CreateExamRequest{RequestId: requestID, Exam: &typev1.Exam{
		Patient: c.Batu, ExamType: &typev1.Code{Code: examType}, Priority: typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY,
		PatientClass: typev1.PatientClass_PATIENT_CLASS_EMERGENCY, ClinicalNote: "外伤后胸痛",
		Material: &typev1.Exam_Study{Study: &typev1.ImagingStudy{StudyInstanceUid: uid}},
	}}
}

func TestCreateChecksTheStudyInThePACS(t *testing.T) {
	pacs := orthanctest.Start(t)
	c := newCenter(t, pacs.DICOMweb)
	good := c.batuStudy()
	goodFiles, _ := good.Files(t)
	pacs.Send(t, goodFiles...)

	other := c.batuStudy()
	other.PatientName, other.PatientID = "QIQIGE^=其其格", "T-0002"
	anotherID := c.batuStudy()
	// Another man of the same banner born the same day: only the
	// sequence and check characters differ.
	anotherID.PatientID = directory.WithCheckDigit("15082419580314205")
	wrongBirth := c.batuStudy()
	wrongBirth.PatientID, wrongBirth.BirthDate = "DLS-0001", "19600101"
	ct := c.batuStudy()
	ct.Modality, ct.BodyPart = "CT", "HEAD"
	for _, st := range []orthanctest.Study{other, anotherID, wrongBirth, ct} {
		files, _ := st.Files(t)
		pacs.Post(t, files...)
	}

	t.Run("a study of the patient arrives with its description", func(t *testing.T) {
		resp, err := c.API.CreateExam(c.Doctor(t), c.createReq(good.UID, "DX-CHEST", "dls-x-1"))
		if err != nil {
			t.Fatal(err)
		}
		e := resp.GetExam()
		want := &typev1.ImagingStudy{
			StudyInstanceUid: good.UID, Modalities: []string{"DX"}, BodyParts: []string{"CHEST"}, StudyDate: "2026-11-23",
			SeriesCount: 2, InstanceCount: 4, PatientIdMasked: c.BatuID[:6] + "********" + c.BatuID[14:],
		}
		if diff := cmp.Diff(want, e.GetStudy(), protocmp.Transform(), protocmp.IgnoreFields(&typev1.ImagingStudy{}, "check_time")); diff != "" {
			t.Errorf("study (-want +got):\n%s", diff)
		}
		if e.GetState() != typev1.Exam_STATE_ARRIVED || !e.GetDueTime().AsTime().Equal(readingtest.T0.Add(30*time.Minute)) {
			t.Errorf("exam %v due %v; want arrived, due in 30 minutes (emergency X-ray)", e.GetState(), e.GetDueTime().AsTime())
		}
		// The PACS's identifiers are kept sealed: neither the answer, nor
		// the store, nor the events hold the ID number or the name.
		raw, _ := protojson.Marshal(e)
		if bytes.Contains(raw, []byte(c.BatuID)) || bytes.Contains(raw, []byte("巴特尔")) || bytes.Contains(raw, []byte("BATEER")) {
			t.Errorf("the exam shows the PACS identifiers: %s", raw)
		}
		assertNotStored(t, c, c.BatuID, "巴特尔", "BATEER")
	})

	for _, tc := range []struct {
		name, uid, examType, reason string
	}{
		{"an unknown study", orthanctest.NewUID(), "DX-CHEST", imaging.ReasonStudyNotFound},
		{"another patient's study", other.UID, "DX-CHEST", imaging.ReasonPatientMismatch},
		{"another resident ID number", anotherID.UID, "DX-CHEST", imaging.ReasonPatientMismatch},
		{"another birth date", wrongBirth.UID, "DX-CHEST", imaging.ReasonPatientMismatch},
		{"a CT study for a chest film", ct.UID, "DX-CHEST", imaging.ReasonModalityMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.API.CreateExam(c.Doctor(t), c.createReq(tc.uid, tc.examType, ""))
			servertest.WantReason(t, err, tc.reason)
			if msg := err.Error(); strings.Contains(msg, c.BatuID) || strings.Contains(msg, "巴特尔") || strings.Contains(msg, "其其格") {
				t.Errorf("the error repeats an identifier: %s", msg)
			}
		})
	}

	t.Run("the CT study is fine for a head CT", func(t *testing.T) {
		if _, err := c.API.CreateExam(c.Doctor(t), c.createReq(ct.UID, "CT-HEAD", "")); err != nil {
			t.Fatal(err)
		}
	})
}

// assertNotStored fails if a value is in the imaging store as plain text.
func assertNotStored(t *testing.T, c *center, values ...string) {
	t.Helper()
	for _, prefix := range []string{"exam/", "pacspatient/"} {
		recs, _, err := c.Store.List(context.Background(), store.Partition(readingtest.Community), prefix, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			t.Fatalf("nothing under %s", prefix)
		}
		for _, r := range recs {
			for _, v := range values {
				if bytes.Contains(r.Value, []byte(v)) {
					t.Errorf("%s holds %q in plain text", r.Key, v)
				}
			}
		}
	}
	events, err := c.Store.Events(context.Background(), store.Partition(readingtest.Community), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		for _, v := range values {
			if bytes.Contains(ev.Data, []byte(v)) {
				t.Errorf("event %d holds %q", ev.Seq, v)
			}
		}
	}
}

func TestPACSUnreachableWritesNothing(t *testing.T) {
	// A PACS that refuses connections, one that fails, and one that is
	// stopped after the fixture started.
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr + "/dicom-web"
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database locked", http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"connection refused", func(*testing.T) string { return closed() }},
		{"server error", func(*testing.T) string { return failing.URL + "/dicom-web" }},
		{"Orthanc stopped", func(t *testing.T) string {
			pacs := orthanctest.Start(t)
			pacs.Stop()
			return pacs.DICOMweb
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCenter(t, tc.url(t))
			_, err := c.API.CreateExam(c.Doctor(t), c.createReq(orthanctest.NewUID(), "DX-CHEST", "dls-retry-1"))
			servertest.WantCode(t, err, codes.Unavailable)
			p := store.Partition(readingtest.Community)
			recs, _, err := c.Store.List(context.Background(), p, "", "", 10)
			if err != nil || len(recs) != 0 {
				t.Errorf("after Unavailable the store holds %d keys (%v)", len(recs), err)
			}
			events, err := c.Store.Events(context.Background(), p, 0, 10)
			if err != nil || len(events) != 0 {
				t.Errorf("after Unavailable the feed holds %d events (%v)", len(events), err)
			}
		})
	}
}

func TestKeyImagesAndQualityRejection(t *testing.T) {
	pacs := orthanctest.Start(t)
	c := newCenter(t, pacs.DICOMweb)
	st := c.batuStudy()
	files, sops := st.Files(t)
	pacs.Post(t, files...)
	create := func() *typev1.Exam {
		resp, err := c.API.CreateExam(c.Doctor(t), c.createReq(st.UID, "DX-CHEST", ""))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.API.AssignExam(c.sun(t), &imagingv1.AssignExamRequest{Name: resp.GetExam().GetName()}); err != nil {
			t.Fatal(err)
		}
		return resp.GetExam()
	}
	e := create()
	report := func(keys ...string) *typev1.ReportContent {
		return &typev1.ReportContent{Findings: "右侧气胸，肺组织压缩约40%。", Impression: "右侧气胸。", Results: []*typev1.Code{{Code: "ABNORMAL"}}, KeyImages: keys}
	}
	_, err := c.API.WriteReport(c.sun(t), &imagingv1.WriteReportRequest{Name: e.GetName(), Content: report(sops[0], orthanctest.NewUID())})
	servertest.WantField(t, err, "content.key_images[1]")
	got, err := c.API.WriteReport(c.sun(t), &imagingv1.WriteReportRequest{Name: e.GetName(), Content: report(sops[3], sops[0])})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{sops[3], sops[0]}, got.GetExam().GetReport().GetContent().GetKeyImages()); diff != "" {
		t.Errorf("key images (-want +got):\n%s", diff)
	}

	// Another exam of the same study is rejected for image quality with a
	// coded reason, which the township's feed carries.
	r := create()
	_, err = c.API.RejectExam(c.sun(t), &imagingv1.RejectExamRequest{Name: r.GetName(), Reason: "BLURRY"})
	servertest.WantField(t, err, "reason")
	rejected, err := c.API.RejectExam(c.sun(t), &imagingv1.RejectExamRequest{Name: r.GetName(), Reason: "MOTION", Note: "患者呼吸配合差"})
	if err != nil {
		t.Fatal(err)
	}
	want := &typev1.ExamRejection{Reason: &typev1.Code{Code: "MOTION", Display: "运动伪影 motion artifact"}, Note: "患者呼吸配合差"}
	if diff := cmp.Diff(want, rejected.GetExam().GetRejection(), protocmp.Transform()); diff != "" || rejected.GetExam().GetState() != typev1.Exam_STATE_REJECTED {
		t.Errorf("rejection (-want +got):\n%s", diff)
	}
	evs, err := c.API.ListEvents(c.Doctor(t), &imagingv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs.GetEvents() {
		if ev.GetType() == "exam.rejected" && ev.GetResource() == r.GetName() {
			found = true
			if strings.Contains(fmt.Sprint(ev.GetSnapshot()), "患者呼吸配合差") {
				t.Error("the event carries the rejection's free text")
			}
		}
	}
	if !found {
		t.Error("the township's feed has no exam.rejected")
	}
}
