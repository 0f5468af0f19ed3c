package e2e

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
	"github.com/countymcc/mcc/services/internal/imaging/orthanctest"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// The remote reading centers end to end, through REST: an imaging study
// sent to a real Orthanc and read, an ECG uploaded as DICOM and read under
// a suspected STEMI, and frozen sections against their turnaround.

// readingCounty is the community of these tests: the people's hospital
// (qrmyy) hosts the imaging and pathology centers, the Mongolian and TCM
// hospital (mzyy) the ECG center, for the township dls, where Batu is
// registered.
type readingCounty struct {
	sys      *system
	batu, id string
}

func newReadingCounty(t *testing.T, sys *system) *readingCounty {
	t.Helper()
	c := &readingCounty{sys: sys, id: directory.WithCheckDigit("15082419580314201")}
	admin := c.sys.tokenFor(t, "practitioners/admin-qrmyy", "qrmyy", typev1.Role_ROLE_ADMIN)
	sys.do(t, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sys.do(t, "POST", "/v1/facilities?facility_id=mzyy", admin, `{"displayName":"乌拉特中旗蒙中医医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sys.do(t, "POST", "/v1/facilities?facility_id=dls", admin, `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",
		"centers":[{"center":"CENTER_IMAGING","facility":"facilities/qrmyy"},{"center":"CENTER_ECG","facility":"facilities/mzyy"},{"center":"CENTER_PATHOLOGY","facility":"facilities/qrmyy"}]}`).want(t, 200)
	reg := sys.do(t, "POST", "/v1/patients:register", c.doctor(t), fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, c.id)).want(t, 200)
	c.batu = reg.str(t, "patient.name")
	return c
}

func (c *readingCounty) doctor(t *testing.T) string {
	return c.sys.tokenFor(t, "practitioners/doc-dls-han", "dls", typev1.Role_ROLE_CLINICIAN)
}

func reportOf(exam string) string { return "reports/" + strings.TrimPrefix(exam, "exams/") }

func TestImagingStudyReadThroughREST(t *testing.T) {
	pacs := orthanctest.Start(t)
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			sys := start(t, append(backend.flags(t), "-imaging.dicomweb-url="+pacs.DICOMweb)...)
			testImagingStudy(t, sys, pacs)
		})
	}
	t.Run("PACS unreachable", func(t *testing.T) {
		sys := start(t, "-imaging.dicomweb-url=http://127.0.0.1:1/dicom-web")
		c := newReadingCounty(t, sys)
		body := fmt.Sprintf(`{"patient":%q,"examType":{"code":"DX-CHEST"},"priority":"EXAM_PRIORITY_URGENT","study":{"studyInstanceUid":%q}}`, c.batu, orthanctest.NewUID())
		sys.do(t, "POST", "/v1/imaging/exams?requestId=dls-x-9", c.doctor(t), body).want(t, 503)
		if got := sys.do(t, "GET", "/v1/imaging/exams", c.doctor(t), "").want(t, 200).list(t, "exams"); len(got) != 0 {
			t.Errorf("after 503 the township has %d exams", len(got))
		}
		if got := c.sys.eventsOf(t, "/v1/imaging/events", c.doctor(t)); len(got) != 0 {
			t.Errorf("after 503 the feed has %v", got)
		}
	})
}

func testImagingStudy(t *testing.T, sys *system, pacs *orthanctest.Server) {
	c := newReadingCounty(t, sys)
	sun := c.sys.tokenFor(t, "practitioners/rad-sun", "qrmyy", typev1.Role_ROLE_RADIOLOGIST)
	zhou := c.sys.tokenFor(t, "practitioners/rad-zhou", "qrmyy", typev1.Role_ROLE_RADIOLOGIST)

	// The township's DR sends a chest film of Batu to the PACS (C-STORE).
	study := orthanctest.Study{
		UID: orthanctest.NewUID(), PatientID: c.id, PatientName: "BATEER^=巴特尔", BirthDate: "19580314", Sex: "M",
		Modality: "DX", BodyPart: "CHEST", Date: "20261123", Series: 1, Images: 2,
	}
	files, sops := study.Files(t)
	pacs.Send(t, files...)

	// Sun is on duty for plain films today.
	now := time.Now().UTC()
	sys.do(t, "POST", "/v1/imaging/shifts", sun, fmt.Sprintf(`{"reader":"practitioners/rad-sun","examTypes":["DX-CHEST"],"startTime":%q,"endTime":%q}`,
		now.Add(-time.Hour).Format(time.RFC3339), now.Add(8*time.Hour).Format(time.RFC3339))).want(t, 200)

	t.Run("bad studies are refused before anything is written", func(t *testing.T) {
		body := fmt.Sprintf(`{"patient":%q,"examType":{"code":"DX-CHEST"},"priority":"EXAM_PRIORITY_URGENT","study":{"studyInstanceUid":%q}}`, c.batu, orthanctest.NewUID())
		sys.do(t, "POST", "/v1/imaging/exams", c.doctor(t), body).want(t, 400).wantReason(t, "STUDY_NOT_FOUND")
		other := orthanctest.Study{UID: orthanctest.NewUID(), PatientID: "DLS-0099", PatientName: "=其其格", Modality: "DX", BodyPart: "CHEST", Date: "20261123"}
		otherFiles, _ := other.Files(t)
		pacs.Post(t, otherFiles...)
		body = fmt.Sprintf(`{"patient":%q,"examType":{"code":"DX-CHEST"},"priority":"EXAM_PRIORITY_URGENT","study":{"studyInstanceUid":%q}}`, c.batu, other.UID)
		sys.do(t, "POST", "/v1/imaging/exams", c.doctor(t), body).want(t, 400).wantReason(t, "PATIENT_MISMATCH")
	})

	// The township requests the reading; the study is checked in the PACS
	// and arrives, assigned to Sun by the rota.
	body := fmt.Sprintf(`{"patient":%q,"examType":{"code":"DX-CHEST"},"priority":"EXAM_PRIORITY_EMERGENCY","patientClass":"PATIENT_CLASS_EMERGENCY",
		"clinicalNote":"外伤后胸痛、气促","study":{"studyInstanceUid":%q}}`, c.batu, study.UID)
	created := sys.do(t, "POST", "/v1/imaging/exams?requestId=dls-dx-1", c.doctor(t), body).want(t, 200)
	exam := created.str(t, "exam.name")
	if created.str(t, "exam.state") != "STATE_ASSIGNED" || created.str(t, "exam.reader") != "practitioners/rad-sun" ||
		created.get(t, "exam.study.instanceCount") != 2.0 || created.str(t, "exam.study.bodyParts.0") != "CHEST" {
		t.Fatalf("created %s", created.raw)
	}
	if again := sys.do(t, "POST", "/v1/imaging/exams?requestId=dls-dx-1", c.doctor(t), body).want(t, 200); again.str(t, "exam.name") != exam {
		t.Errorf("a retry made another exam: %s", again.raw)
	}
	wl := sys.do(t, "GET", "/v1/imaging/worklist?mine=true", sun, "").want(t, 200)
	if wl.str(t, "exams.0.name") != exam {
		t.Errorf("Sun's worklist: %s", wl.raw)
	}

	// Sun reads it: a tension pneumothorax, a critical finding, with a key
	// image.
	report := fmt.Sprintf(`{"content":{"findings":"右侧胸腔见大量气体影，右肺压缩约80%%，纵隔左移。","impression":"右侧张力性气胸。",
		"results":[{"code":"ABNORMAL"}],"criticalFinding":{"code":"PNEUMOTHORAX"},"keyImages":[%q]}}`, sops[1])
	written := sys.do(t, "POST", "/v1/imaging/"+exam+":writeReport", sun, report).want(t, 200)
	crit := written.str(t, "exam.criticalNotifications.0")
	if written.str(t, "exam.state") != "STATE_PRELIMINARY" || crit == "" {
		t.Fatalf("written %s", written.raw)
	}
	// Sun cannot review it; Zhou reviews, then releases it.
	sys.do(t, "POST", "/v1/imaging/"+exam+":review", sun, `{}`).want(t, 400).wantReason(t, "SAME_PERSON")
	sys.do(t, "POST", "/v1/imaging/"+exam+":finalize", zhou, `{}`).want(t, 400).wantReason(t, "INVALID_TRANSITION")
	sys.do(t, "POST", "/v1/imaging/"+exam+":review", zhou, `{}`).want(t, 200)
	final := sys.do(t, "POST", "/v1/imaging/"+exam+":finalize", zhou, `{}`).want(t, 200)
	if final.str(t, "exam.state") != "STATE_FINAL" || final.str(t, "exam.reviewer") != "practitioners/rad-zhou" {
		t.Fatalf("final %s", final.raw)
	}

	// The township: the critical finding to acknowledge, the report, the
	// feed that recognition indexes.
	sys.do(t, "POST", "/v1/imaging/"+crit+":acknowledge", c.doctor(t), `{"readBack":"大量或张力性气胸"}`).want(t, 200)
	got := sys.do(t, "GET", "/v1/imaging/"+reportOf(exam), c.doctor(t), "").want(t, 200)
	if got.str(t, "report.state") != "STATE_FINAL" || got.str(t, "report.content.keyImages.0") != sops[1] || got.str(t, "report.content.impression") != "右侧张力性气胸。" {
		t.Errorf("report %s", got.raw)
	}
	feed := c.sys.eventsOf(t, "/v1/imaging/events", c.doctor(t))
	for _, want := range []string{"exam.requested " + exam, "exam.arrived " + exam, "exam.assigned " + exam, "report.final " + reportOf(exam), "criticalNotification.confirmed " + crit} {
		if !has(feed, want) {
			t.Errorf("the township's feed lacks %q: %v", want, feed)
		}
	}
	logs := sys.logs.String()
	for _, secret := range []string{c.id, "巴特尔", "BATEER"} {
		if strings.Contains(logs, secret) {
			t.Errorf("%q is in the logs", secret)
		}
	}
}

func TestECGWithSuspectedSTEMIThroughREST(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			testECGWithSTEMI(t, start(t, backend.flags(t)...))
		})
	}
}

func testECGWithSTEMI(t *testing.T, sys *system) {
	c := newReadingCounty(t, sys)
	bao := c.sys.tokenFor(t, "practitioners/ecg-bao", "mzyy", typev1.Role_ROLE_CARDIOLOGIST)
	gao := c.sys.tokenFor(t, "practitioners/ecg-gao", "mzyy", typev1.Role_ROLE_CARDIOLOGIST)
	request := func(priority string) string {
		body := fmt.Sprintf(`{"patient":%q,"examType":{"code":"ECG-12"},"priority":%q,"clinicalNote":"胸痛两小时，大汗"}`, c.batu, priority)
		return sys.do(t, "POST", "/v1/ecg/exams", c.doctor(t), body).want(t, 200).str(t, "exam.name")
	}
	routine := request("EXAM_PRIORITY_ROUTINE")
	exam := request("EXAM_PRIORITY_URGENT")

	// The township's cart writes a DICOM 12-lead ECG; it is uploaded as
	// such (a corrupt file is refused first).
	dcm := ecgtest.DICOM(ecgtest.Normal(98), "2.25.20261123", false)
	sys.do(t, "POST", "/v1/ecg/"+exam+":uploadRecording", c.doctor(t), fmt.Sprintf(`{"dicom":%q}`, base64.StdEncoding.EncodeToString(dcm[:len(dcm)/3]))).want(t, 400).wantField(t, "dicom")
	sys.do(t, "POST", "/v1/ecg/"+routine+":uploadRecording", c.doctor(t), fmt.Sprintf(`{"dicom":%q}`, base64.StdEncoding.EncodeToString(ecgtest.DICOM(ecgtest.Normal(70), "2.25.1", true)))).want(t, 200)
	up := sys.do(t, "POST", "/v1/ecg/"+exam+":uploadRecording", c.doctor(t), fmt.Sprintf(`{"dicom":%q}`, base64.StdEncoding.EncodeToString(dcm))).want(t, 200)
	hr, _ := up.get(t, "exam.recording.preRead.heartRateBpm").(float64)
	if up.str(t, "exam.recording.preRead.status") != "STATUS_MACHINE_READ" || hr < 96 || hr > 100 || up.get(t, "exam.recording.preRead.tachycardia") != false {
		t.Fatalf("pre-read %s", up.raw)
	}
	arrived, _ := time.Parse(time.RFC3339Nano, up.str(t, "exam.arriveTime"))

	// The township suspects a STEMI: the exam goes to the top of the ECG
	// center's worklist, due 10 minutes after the recording arrived.
	flagged := sys.do(t, "POST", "/v1/ecg/"+exam+":flagSuspectedStemi", c.doctor(t), `{}`).want(t, 200)
	due, _ := time.Parse(time.RFC3339Nano, flagged.str(t, "exam.dueTime"))
	if !due.Equal(arrived.Add(10*time.Minute)) || flagged.str(t, "exam.expedited.reason.code") != "SUSPECTED_STEMI" {
		t.Errorf("flagged: due %v after arrival %v: %s", due, arrived, flagged.raw)
	}
	wl := sys.do(t, "GET", "/v1/ecg/worklist", bao, "").want(t, 200)
	if wl.str(t, "exams.0.name") != exam || wl.str(t, "exams.1.name") != routine {
		t.Errorf("worklist: %s", wl.raw)
	}

	// Bao claims it, confirms the machine's reading and reports the STEMI;
	// Gao reviews; the report is released.
	sys.do(t, "POST", "/v1/ecg/"+exam+":assign", bao, `{}`).want(t, 200)
	confirmed := sys.do(t, "POST", "/v1/ecg/"+exam+":confirmPreRead", bao, `{}`).want(t, 200)
	if confirmed.str(t, "exam.recording.preRead.status") != "STATUS_CONFIRMED" || confirmed.str(t, "exam.recording.preRead.confirmedBy") != "practitioners/ecg-bao" {
		t.Errorf("confirmed %s", confirmed.raw)
	}
	sys.do(t, "POST", "/v1/ecg/"+exam+":writeReport", bao, `{"content":{"findings":"窦性心律，心率98次/分；V1-V4导联ST段抬高0.3mV。",
		"impression":"急性前壁ST段抬高型心肌梗死。","results":[{"code":"ST_ELEVATION"}],"criticalFinding":{"code":"STEMI"},
		"measurements":{"heartRateBpm":98,"prIntervalMs":160,"qrsDurationMs":90,"qtIntervalMs":340,"qtcIntervalMs":430}}}`).want(t, 200)
	sys.do(t, "POST", "/v1/ecg/"+exam+":review", gao, `{}`).want(t, 200)
	final := sys.do(t, "POST", "/v1/ecg/"+exam+":finalize", gao, `{}`).want(t, 200)
	if final.str(t, "exam.state") != "STATE_FINAL" || final.get(t, "exam.overdue") == true {
		t.Errorf("final %s", final.raw)
	}
	feed := c.sys.eventsOf(t, "/v1/ecg/events", c.doctor(t))
	for _, want := range []string{"exam.expedited " + exam, "exam.pre_read_confirmed " + exam, "report.final " + reportOf(exam)} {
		if !has(feed, want) {
			t.Errorf("the township's feed lacks %q", want)
		}
	}
	crits := sys.do(t, "GET", "/v1/ecg/criticalNotifications", c.doctor(t), "").want(t, 200)
	if crits.str(t, "notifications.0.item.code") != "STEMI" {
		t.Errorf("critical notifications: %s", crits.raw)
	}
	// The waveform comes back as sampled data.
	w := sys.do(t, "GET", "/v1/ecg/"+exam+"/waveform", c.doctor(t), "").want(t, 200)
	if len(w.list(t, "waveform.leads")) != 12 || len(w.list(t, "waveform.leads.11.samples")) != 5000 {
		t.Errorf("waveform with %d leads", len(w.list(t, "waveform.leads")))
	}
}

func TestFrozenSectionsThroughREST(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			// Monday 2026-11-23, 09:00 in the banner.
			clk := clock.NewManual(time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC))
			testFrozenSections(t, startAt(t, clk, append(backend.flags(t), "-pathology.deadline-interval=20ms")...), clk)
		})
	}
}

func testFrozenSections(t *testing.T, sys *system, clk *clock.Manual) {
	c := newReadingCounty(t, sys)
	surgeon := c.sys.tokenFor(t, "practitioners/surgeon-qrmyy", "qrmyy", typev1.Role_ROLE_CLINICIAN)
	sys.do(t, "PATCH", "/v1/facilities/qrmyy?updateMask=centers", c.sys.tokenFor(t, "practitioners/admin-qrmyy", "qrmyy", typev1.Role_ROLE_ADMIN),
		`{"centers":[{"center":"CENTER_PATHOLOGY","facility":"facilities/qrmyy"}]}`).want(t, 200)
	wu := c.sys.tokenFor(t, "practitioners/path-wu", "qrmyy", typev1.Role_ROLE_PATHOLOGIST)
	ma := c.sys.tokenFor(t, "practitioners/path-ma", "qrmyy", typev1.Role_ROLE_PATHOLOGIST)
	t0 := clk.Now()

	// The county's theatre sends two frozen sections, five minutes apart.
	frozen := func(barcode string) (string, time.Time) {
		exam := sys.do(t, "POST", "/v1/pathology/exams", surgeon, fmt.Sprintf(`{"patient":%q,"examType":{"code":"PATH-FROZEN"},"priority":"EXAM_PRIORITY_EMERGENCY","clinicalNote":"甲状腺结节术中"}`, c.batu)).want(t, 200).str(t, "exam.name")
		got := sys.do(t, "POST", "/v1/pathology/"+exam+":receive", wu, fmt.Sprintf(`{"specimens":[{"barcode":%q,"site":"甲状腺右叶结节","excisionTime":%q}]}`,
			barcode, clk.Now().Add(-3*time.Minute).Format(time.RFC3339))).want(t, 200)
		due, _ := time.Parse(time.RFC3339, got.str(t, "exam.dueTime"))
		return exam, due
	}
	first, firstDue := frozen("FS-0001")
	clk.Advance(5 * time.Minute)
	second, secondDue := frozen("FS-0002")
	if !firstDue.Equal(t0.Add(30*time.Minute)) || !secondDue.Equal(t0.Add(50*time.Minute)) {
		t.Fatalf("due %v and %v; want 30 minutes, then 45 while the first is open", firstDue, secondDue)
	}

	// Wu reads the first, Ma reviews and releases it 20 minutes in.
	report := `{"content":{"findings":"滤泡性病变","impression":"（甲状腺右叶）结节性甲状腺肿，待石蜡切片确诊。","results":[{"code":"BENIGN"}]}}`
	sys.do(t, "POST", "/v1/pathology/"+first+":assign", wu, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/pathology/"+first+":writeReport", wu, report).want(t, 200)
	clk.Set(t0.Add(20 * time.Minute))
	sys.do(t, "POST", "/v1/pathology/"+first+":review", ma, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/pathology/"+first+":finalize", ma, `{}`).want(t, 200)

	// The second misses its 45 minutes: the breach alert reaches the
	// theatre's feed, and its report needs the reason of the delay.
	clk.Set(t0.Add(55 * time.Minute))
	eventually(t, 10*time.Second, "the breach alert in the theatre's feed", func() bool {
		return has(c.sys.eventsOf(t, "/v1/pathology/events", surgeon), "exam.turnaround_breached "+second)
	})
	sys.do(t, "POST", "/v1/pathology/"+second+":assign", wu, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/pathology/"+second+":writeReport", wu, report).want(t, 200)
	sys.do(t, "POST", "/v1/pathology/"+second+":review", ma, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/pathology/"+second+":finalize", ma, `{}`).want(t, 400).wantReason(t, "DELAY_REASON_REQUIRED")
	sys.do(t, "POST", "/v1/pathology/"+second+":recordDelay", wu, `{"reason":"EQUIPMENT","note":"冰冻切片机故障"}`).want(t, 200)
	final := sys.do(t, "POST", "/v1/pathology/"+second+":finalize", ma, `{}`).want(t, 200)
	if final.get(t, "exam.overdue") != true || final.str(t, "exam.delay.reason.code") != "EQUIPMENT" {
		t.Errorf("second: %s", final.raw)
	}

	// The day's statistics: two frozen sections, one late.
	day := t0.In(time.FixedZone("CST", 8*3600)).Format(time.DateOnly)
	stats := sys.do(t, "GET", "/v1/pathology/statistics?startDay="+day+"&endDay="+day, wu, "").want(t, 200)
	if stats.str(t, "rows.0.examType") != "PATH-FROZEN" || stats.get(t, "rows.0.count") != 2.0 || stats.get(t, "rows.0.overdue") != 1.0 || stats.get(t, "rows.0.onTimeRate") != 0.5 {
		t.Errorf("statistics %s", stats.raw)
	}
}
