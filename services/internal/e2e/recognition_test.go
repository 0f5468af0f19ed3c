package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/imaging/orthanctest"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// TestRecognitionThroughREST plays issue 7 through the REST gateway: a lab
// result and a chest film are finalized at the county; the township checks
// and sees both as recognizable; it recognizes one and repeats the other
// (reason 01); the lab amends its report and the registry follows; after
// the validity window (a manual clock) the result is expired; and the
// statistics show the rate and the money saved.
func TestRecognitionThroughREST(t *testing.T) {
	pacs := orthanctest.Start(t)
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			// 09:00 in Urad Middle Banner.
			clk := clock.NewManual(time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC))
			flags := append(backend.flags(t), "-imaging.dicomweb-url="+pacs.DICOMweb, "-recognition.communities=demo", "-recognition.retry-max=200ms", "-lab.deadline-interval=50ms")
			testRecognition(t, startAt(t, clk, flags...), clk, pacs)
		})
	}
}

func testRecognition(t *testing.T, sys *system, clk *clock.Manual, pacs *orthanctest.Server) {
	as := func(subject, facility string, roles ...typev1.Role) string {
		t.Helper()
		keys, _, err := auth.LoadKeys(filepath.Join(sys.dataDir, "signing.key"), false, clk)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := keys.Issue(auth.Caller{Subject: subject, Community: "demo", Facility: "facilities/" + facility, Roles: roles}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var (
		admin  = as("practitioners/admin-qrmyy", "qrmyy", typev1.Role_ROLE_ADMIN)
		doctor = as("practitioners/doc-dls-han", "dls", typev1.Role_ROLE_CLINICIAN)
		wang   = as("practitioners/lab-wang", "qrmyy", typev1.Role_ROLE_LAB_TECHNOLOGIST)
		liu    = as("practitioners/lab-liu", "qrmyy", typev1.Role_ROLE_LAB_TECHNOLOGIST)
		sun    = as("practitioners/rad-sun", "qrmyy", typev1.Role_ROLE_RADIOLOGIST)
		zhou   = as("practitioners/rad-zhou", "qrmyy", typev1.Role_ROLE_RADIOLOGIST)
		id     = directory.WithCheckDigit("15082419580314201")
	)
	sys.do(t, "POST", "/v1/facilities?facility_id=qrmyy", admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sys.do(t, "POST", "/v1/facilities?facility_id=dls", admin, `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",
		"centers":[{"center":"CENTER_LAB","facility":"facilities/qrmyy"},{"center":"CENTER_IMAGING","facility":"facilities/qrmyy"}]}`).want(t, 200)
	batu := sys.do(t, "POST", "/v1/patients:register", doctor, fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, id)).want(t, 200).str(t, "patient.name")

	// 1. The county lab releases a potassium of Batu.
	order := sys.do(t, "POST", "/v1/lab/orders", doctor, fmt.Sprintf(`{"patient":%q,"tests":["2823-3"],"priority":"PRIORITY_ROUTINE"}`, batu)).want(t, 200).str(t, "order.name")
	sys.do(t, "POST", "/v1/lab/specimens?barcode=R0001", doctor, fmt.Sprintf(`{"order":%q,"tests":["2823-3"],"volumeMl":3}`, order)).want(t, 200)
	sys.do(t, "POST", "/v1/lab/specimens/R0001:dispatch", doctor, `{"courier":"物流 老张"}`).want(t, 200)
	sys.do(t, "POST", "/v1/lab/specimens/R0001:receive", wang, `{"temperatureCelsius":12}`).want(t, 200)
	sys.do(t, "POST", "/v1/lab/specimens/R0001:startTesting", wang, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/lab/reports/R0001:enterResults", wang, `{"results":[{"code":"2823-3","value":4.1,"unit":"mmol/L"}]}`).want(t, 200)
	sys.do(t, "POST", "/v1/lab/reports/R0001:verify", liu, `{}`).want(t, 200)

	// ... and the county imaging center a chest film.
	study := orthanctest.Study{
		UID: orthanctest.NewUID(), PatientID: id, PatientName: "BATEER^=巴特尔", BirthDate: "19580314", Sex: "M",
		Modality: "DX", BodyPart: "CHEST", Date: "20261123", Series: 1, Images: 1,
	}
	files, _ := study.Files(t)
	pacs.Send(t, files...)
	exam := sys.do(t, "POST", "/v1/imaging/exams", doctor, fmt.Sprintf(`{"patient":%q,"examType":{"code":"DX-CHEST"},"priority":"EXAM_PRIORITY_ROUTINE","study":{"studyInstanceUid":%q}}`, batu, study.UID)).
		want(t, 200).str(t, "exam.name")
	sys.do(t, "POST", "/v1/imaging/"+exam+":assign", sun, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/imaging/"+exam+":writeReport", sun, `{"content":{"findings":"双肺纹理清晰。","impression":"心肺未见异常。","results":[{"code":"NORMAL"}]}}`).want(t, 200)
	sys.do(t, "POST", "/v1/imaging/"+exam+":review", zhou, `{}`).want(t, 200)
	sys.do(t, "POST", "/v1/imaging/"+exam+":finalize", zhou, `{}`).want(t, 200)

	// 2. The township checks before ordering them again: both are
	// recognizable, once the registry has read the centers' feeds.
	check := func(token string) response {
		return sys.do(t, "POST", "/v1/recognition/checks", token, fmt.Sprintf(`{"patient":%q,"items":["2823-3","DX-CHEST"],"purpose":"门诊开单"}`, batu)).want(t, 200)
	}
	var got response
	eventually(t, 10*time.Second, "both results in the registry", func() bool {
		got = check(doctor)
		return len(got.list(t, "items.0.recognizable")) == 1 && len(got.list(t, "items.1.recognizable")) == 1
	})
	k, x := got.str(t, "items.0.recognizable.0.result"), got.str(t, "items.1.recognizable.0.result")
	if got.str(t, "items.0.recognizable.0.summary") != "4.1 mmol/L (N)" || got.str(t, "items.0.recognizable.0.issuingFacility") != "facilities/qrmyy" ||
		got.str(t, "items.1.recognizable.0.source") != "imaging" || got.str(t, "items.0.recognizable.0.expireTime") != "2026-12-07T01:00:00Z" {
		t.Fatalf("check %s", got.raw)
	}

	// A referral up to the county that attaches the potassium finds it
	// recognizable for the county (the referral service asks CheckResults).
	ref := sys.do(t, "POST", "/v1/referrals", doctor, fmt.Sprintf(`{"direction":"DIRECTION_UP","patient":%q,"targetFacility":"facilities/qrmyy",
		"targetDepartment":"心内科","reason":"乏力","urgency":"URGENCY_ROUTINE","diagnosis":{"code":"E87.6","display":"低钾血症"},"clinicalSummary":"乏力一周。",
		"attachments":[{"kind":"KIND_RESULT","ref":%q,"title":"血钾"}]}`, batu, k)).want(t, 200)
	if ref.str(t, "referral.attachments.0.recognition") != "RECOGNITION_RECOGNIZABLE" {
		t.Errorf("referral attachment %s", ref.raw)
	}

	// 3. It recognizes the potassium, and repeats the film: the condition
	// changed (01). A not-recognized decision without a reason is refused.
	sys.do(t, "POST", "/v1/recognition/decisions", doctor, fmt.Sprintf(`{"result":%q,"outcome":"OUTCOME_NOT_RECOGNIZED"}`, x)).want(t, 400).wantField(t, "decision.reason")
	sys.do(t, "POST", "/v1/recognition/decisions", doctor, fmt.Sprintf(`{"result":%q,"outcome":"OUTCOME_RECOGNIZED","check":%q}`, k, got.str(t, "check"))).want(t, 200)
	sys.do(t, "POST", "/v1/recognition/decisions", doctor, fmt.Sprintf(`{"result":%q,"outcome":"OUTCOME_NOT_RECOGNIZED","reason":"REASON_CONDITION_CHANGED"}`, x)).want(t, 200)

	// 4. The lab amends the potassium: the registry replaces the entry and
	// keeps the first version.
	sys.do(t, "POST", "/v1/lab/reports/R0001:amend", liu, `{"results":[{"code":"2823-3","value":4.4,"unit":"mmol/L"}],"reason":"复核更正"}`).want(t, 200)
	eventually(t, 10*time.Second, "the amended potassium in the registry", func() bool {
		return check(doctor).str(t, "items.0.recognizable.0.summary") == "4.4 mmol/L (N)"
	})
	entry := sys.do(t, "GET", "/v1/recognition/"+k, doctor, "").want(t, 200)
	if entry.str(t, "result.state") != "STATE_AMENDED" || entry.str(t, "result.history.0.summary") != "4.1 mmol/L (N)" {
		t.Errorf("amended entry %s", entry.raw)
	}

	// 5. Fifteen days later the potassium has expired; the film (30 days)
	// has not.
	clk.Advance(15 * 24 * time.Hour)
	doctor = as("practitioners/doc-dls-han", "dls", typev1.Role_ROLE_CLINICIAN)
	admin = as("practitioners/admin-qrmyy", "qrmyy", typev1.Role_ROLE_ADMIN)
	later := check(doctor)
	if later.str(t, "items.0.unrecognizable") != "UNRECOGNIZABLE_EXPIRED" || len(later.list(t, "items.1.recognizable")) != 1 {
		t.Errorf("after 15 days: %s", later.raw)
	}

	// 6. One recognized, one not: a rate of 50% and the potassium's price
	// (5.00 CNY) saved; the film is the item repeated.
	stats := sys.do(t, "GET", "/v1/recognition/statistics?startMonth=2026-11&endMonth=2026-12", admin, "").want(t, 200)
	if stats.get(t, "total.rate") != 0.5 || stats.str(t, "total.savedFen") != "500" || stats.get(t, "total.recognized") != 1.0 ||
		stats.str(t, "reasons.0.reason") != "REASON_CONDITION_CHANGED" || stats.str(t, "repeated.0.item") != "DX-CHEST" {
		t.Errorf("statistics %s", stats.raw)
	}

	// Every check is in the recognition feed, for the audit log.
	if !has(sys.eventsOf(t, "/v1/recognition/events", admin), "check.recorded "+got.str(t, "check")) {
		t.Error("the check is not in the recognition feed")
	}
}
