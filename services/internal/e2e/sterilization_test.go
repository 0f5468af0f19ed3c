package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// TestSterilizationTwoWeeks plays two weeks of a township's packages at the
// county CSSD through REST, on a clock the test moves: a B-D test every
// morning, a load a day released on its physical and chemical results and
// monitored by a BI read the next morning, an implant held until its BI
// passes, the packages dispatched, received and used on patients, and
// collected again. Then the BI of the twelfth day's load fails: the recall
// finds every package of it in store, at the two clinics, or used on three
// patients, and says so for each.
func TestSterilizationTwoWeeks(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			// 08:00 in the community (UTC+8), Monday 2 November 2026.
			day0 := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
			clk := clock.NewManual(day0)
			testSterilizationTwoWeeks(t, startAt(t, clk, backend.flags(t)...), clk, day0)
		})
	}
}

func testSterilizationTwoWeeks(t *testing.T, sys *system, clk *clock.Manual, day0 time.Time) {
	cp := newCSSDPlay(t, sys)
	cp.setUp(t)

	dls := []string{"DLS-01", "DLS-02", "DLS-03", "DLS-04", "DLS-05", "DLS-06"}
	wjh := []string{"WJH-01", "WJH-02", "WJH-03"}
	for _, b := range dls {
		cp.post(t, "/v1/packages", cp.dls(), fmt.Sprintf(`{"barcode":%q,"setType":"setTypes/suture"}`, b), 200)
	}
	for _, b := range wjh {
		cp.post(t, "/v1/packages", cp.wjh(), fmt.Sprintf(`{"barcode":%q,"setType":"setTypes/suture"}`, b), 200)
	}
	cp.post(t, "/v1/packages", cp.dls(), `{"barcode":"ORTHO-01","setType":"setTypes/ortho"}`, 200)
	all := append(append([]string{}, dls...), wjh...)
	owner := func(b string) string {
		if strings.HasPrefix(b, "WJH") {
			return "wjh"
		}
		return "dls"
	}

	var loads []string
	for day := range 13 {
		at := func(h, m int) {
			clk.Set(day0.Add(time.Duration(day)*24*time.Hour + time.Duration(h-8)*time.Hour + time.Duration(m)*time.Minute))
		}
		at(8, 0)
		cp.post(t, "/v1/sterilizers/pv1/bowieDickTests", cp.cssd(), `{"result":"RESULT_PASS"}`, 200)
		// Yesterday's BI is read in the morning.
		if day > 0 {
			at(8, 30)
			cp.post(t, "/v1/"+loads[day-1]+":recordBiologicalResult", cp.cssd(), `{"result":"RESULT_PASS"}`, 200)
		}
		// The implant, held since yesterday, can go out now.
		if day == 2 {
			cp.dispatch(t, "ORTHO-01", 200)
			cp.post(t, "/v1/packages/ORTHO-01:receive", cp.dls(), `{}`, 200)
		}
		if day == 3 {
			cp.use(t, "ORTHO-01", "dls", cp.dlsPatients[0], 200)
		}
		at(9, 0)
		today := all
		if day == 1 {
			today = append(append([]string{}, all...), "ORTHO-01")
		}
		for _, b := range today {
			cp.reprocess(t, b)
		}
		load := cp.load(t, today)
		loads = append(loads, load)
		at(10, 0)
		cp.post(t, "/v1/"+load+":recordResults", cp.cssd(), `{"physical":"RESULT_PASS","chemical":"RESULT_PASS"}`, 200)
		cp.post(t, "/v1/"+load+":release", cp.cssd(), `{}`, 200)
		if day == 1 {
			r := cp.dispatch(t, "ORTHO-01", 400)
			cp.wantReason(t, r, "IMPLANT_HELD")
		}
		at(11, 0)
		if day < 12 {
			for _, b := range all {
				cp.dispatch(t, b, 200)
				cp.post(t, "/v1/packages/"+b+":receive", cp.clinic(owner(b)), `{}`, 200)
			}
			at(15, 0)
			// A few packages are used each day; the others come back
			// unused and are reprocessed tomorrow all the same.
			for i, b := range all {
				if (i+day)%3 == 0 {
					patient := cp.dlsPatients[(i+day)%2]
					if owner(b) == "wjh" {
						patient = cp.wjhPatient
					}
					cp.use(t, b, owner(b), patient, 200)
				}
			}
			continue
		}
		// Day 12: DLS-04 stays in store; DLS-05, DLS-06 and WJH-03 are on
		// their way; DLS-03 and WJH-02 are received and unused; three are
		// used on three patients.
		for _, b := range []string{"DLS-01", "DLS-02", "DLS-03", "DLS-05", "DLS-06", "WJH-01", "WJH-02", "WJH-03"} {
			cp.dispatch(t, b, 200)
		}
		for _, b := range []string{"DLS-01", "DLS-02", "DLS-03", "WJH-01", "WJH-02"} {
			cp.post(t, "/v1/packages/"+b+":receive", cp.clinic(owner(b)), `{}`, 200)
		}
		at(15, 0)
		cp.use(t, "DLS-01", "dls", cp.dlsPatients[0], 200)
		cp.use(t, "DLS-02", "dls", cp.dlsPatients[1], 200)
		cp.use(t, "WJH-01", "wjh", cp.wjhPatient, 200)
	}

	// Day 13, 08:30: the BI of day 12's load failed.
	clk.Set(day0.Add(13*24*time.Hour + 30*time.Minute))
	cp.post(t, "/v1/sterilizers/pv1/bowieDickTests", cp.cssd(), `{"result":"RESULT_PASS"}`, 200)
	failed := cp.post(t, "/v1/"+loads[12]+":recordBiologicalResult", cp.cssd(), `{"result":"RESULT_FAIL"}`, 200)
	recall := failed.str(t, "recall")
	if recall == "" || failed.str(t, "load.state") != "STATE_RECALLED" {
		t.Fatalf("BI failure: %s", failed.raw)
	}
	report := sys.do(t, "GET", "/v1/"+recall, cp.cssd(), "").want(t, 200)
	for field, want := range map[string]any{"packages": 9.0, "inStore": 1.0, "dispatched": 5.0, "used": 3.0, "exposedPatients": 3.0} {
		if got := report.get(t, "recall."+field); got != want {
			t.Errorf("recall %s = %v, want %v", field, got, want)
		}
	}
	if loadsRecalled := report.list(t, "recall.loads"); len(loadsRecalled) != 1 || loadsRecalled[0] != loads[12] {
		t.Errorf("recalled loads %v, want only %s (day 11's BI passed)", loadsRecalled, loads[12])
	}

	type place struct{ location, facility, patient string }
	want := map[string]place{
		"DLS-01": {"LOCATION_USED", "facilities/dls", cp.dlsPatients[0]},
		"DLS-02": {"LOCATION_USED", "facilities/dls", cp.dlsPatients[1]},
		"DLS-03": {"LOCATION_DISPATCHED", "facilities/dls", ""},
		"DLS-04": {"LOCATION_IN_STORE", "facilities/qrmyy", ""},
		"DLS-05": {"LOCATION_DISPATCHED", "facilities/dls", ""},
		"DLS-06": {"LOCATION_DISPATCHED", "facilities/dls", ""},
		"WJH-01": {"LOCATION_USED", "facilities/wjh", cp.wjhPatient},
		"WJH-02": {"LOCATION_DISPATCHED", "facilities/wjh", ""},
		"WJH-03": {"LOCATION_DISPATCHED", "facilities/wjh", ""},
	}
	items := sys.do(t, "GET", "/v1/"+recall+"/items?pageSize=100", cp.cssd(), "").want(t, 200)
	got := map[string]place{}
	for i := range items.list(t, "items") {
		p := fmt.Sprintf("items.%d.", i)
		got[strings.TrimPrefix(items.str(t, p+"package"), "packages/")] = place{items.str(t, p+"location"), items.str(t, p+"facility"), items.str(t, p+"use.patient")}
	}
	for b, w := range want {
		if got[b] != w {
			t.Errorf("%s found %v, want %v", b, got[b], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the recall lists %d packages, want %d: %v", len(got), len(want), got)
	}
	exposure := sys.do(t, "GET", "/v1/"+recall+"/items?location=LOCATION_USED", cp.cssd(), "").want(t, 200)
	if n := len(exposure.list(t, "items")); n != 3 {
		t.Errorf("exposure list of %d, want 3: %s", n, exposure.raw)
	}
	// Each clinic was notified and sees its own share only.
	for clinic, n := range map[string]int{"dls": 6, "wjh": 3} {
		mine := sys.do(t, "GET", "/v1/"+recall+"/items", cp.clinic(clinic), "").want(t, 200)
		if got := len(mine.list(t, "items")); got != n {
			t.Errorf("%s sees %d recall items, want %d", clinic, got, n)
		}
		notified := false
		for after := ""; ; {
			evs := sys.do(t, "GET", "/v1/sterilization/events?pageSize=1000&after="+after, cp.clinic(clinic), "").want(t, 200)
			notified = notified || strings.Contains(evs.raw, `"recall.notified"`)
			if next := evs.str(t, "nextCursor"); next != after {
				after = next
				continue
			}
			break
		}
		if !notified {
			t.Errorf("%s was not notified", clinic)
		}
	}

	// Nothing recalled gets out or onto a patient; the sterilizer is locked.
	cp.wantReason(t, cp.dispatch(t, "DLS-04", 400), "PACKAGE_RECALLED")
	cp.wantReason(t, cp.use(t, "DLS-03", "dls", cp.dlsPatients[0], 400), "PACKAGE_RECALLED")
	cp.wantReason(t, cp.post(t, "/v1/sterilizers/pv1/loads", cp.cssd(), `{"program":"134℃ 4min","packages":["packages/ORTHO-01"]}`, 400), "STERILIZER_LOCKED")
	if sys.do(t, "GET", "/v1/sterilizers/pv1", cp.cssd(), "").want(t, 200).str(t, "sterilizer.lock.load") != loads[12] {
		t.Error("the sterilizer is not locked by the failed load")
	}

	// The patient's history and the two weeks' figures.
	hist := sys.do(t, "GET", "/v1/"+cp.wjhPatient+"/packages?pageSize=1000", cp.wjh(), "").want(t, 200)
	if n := len(hist.list(t, "packages")); n < 5 {
		t.Errorf("the wjh patient's history has %d packages", n)
	}
	stats := sys.do(t, "GET", "/v1/sterilization/statistics?startDay=2026-11-02&endDay=2026-11-15", cp.cssd(), "").want(t, 200)
	for field, want := range map[string]string{"loads": "13", "released": "13", "biologicalPassed": "12", "biologicalFailed": "1", "recalls": "1", "recalledPackages": "9"} {
		if got := stats.str(t, "loads."+field); got != want {
			t.Errorf("statistics loads.%s = %q, want %s", field, got, want)
		}
	}
	costs := sys.do(t, "GET", "/v1/sterilization/costs?startDay=2026-11-02&endDay=2026-11-15", cp.cssd(), "").want(t, 200)
	// 12 days × 9 suture sets at 35 yuan, 8 on day 12, and one implant set.
	if got, want := costs.str(t, "totalFen"), fmt.Sprint((12*9+8)*3500+12000); got != want {
		t.Errorf("total cost %s fen, want %s", got, want)
	}

	logs := sys.logs.String()
	for _, secret := range []string{"巴特尔", "其其格", "王建国", directory.WithCheckDigit("15082419580314201")} {
		if strings.Contains(logs, secret) {
			t.Errorf("%q is in the logs", secret)
		}
	}
	// No other facility's staff can read one of these packages, loads or
	// recalls by name (BOLA).
	if n := sys.checkObjectAccess(t, "facilities/outsider"); n["sterilization"] == 0 {
		t.Error("no sterilization record was tried")
	} else {
		t.Logf("reads of another facility's records, all refused: %v", n)
	}
}

// cssdPlay drives the CSSD scenario through REST.
type cssdPlay struct {
	sys                   *system
	dlsPatients           []string
	wjhPatient            string
	cssd, dls, wjh, admin func() string
	clinic                func(id string) string
}

func newCSSDPlay(t *testing.T, sys *system) *cssdPlay {
	// Tokens are issued when used, on the system's clock, so they stay
	// valid as the clock moves through the two weeks.
	tok := func(facility string, role typev1.Role) func() string {
		return func() string { return sys.token(t, "demo", facility, time.Hour, role) }
	}
	cp := &cssdPlay{
		sys:   sys,
		cssd:  tok("qrmyy", typev1.Role_ROLE_CSSD_OPERATOR),
		dls:   tok("dls", typev1.Role_ROLE_CLINICIAN),
		wjh:   tok("wjh", typev1.Role_ROLE_CLINICIAN),
		admin: tok("qrmyy", typev1.Role_ROLE_ADMIN),
	}
	cp.clinic = func(id string) string {
		if id == "wjh" {
			return cp.wjh()
		}
		return cp.dls()
	}
	return cp
}

// setUp builds the directory and the CSSD's catalog and sterilizer.
func (cp *cssdPlay) setUp(t *testing.T) {
	served := `"centers":[{"center":"CENTER_STERILIZATION","facility":"facilities/qrmyy"}]`
	cp.post(t, "/v1/facilities?facility_id=qrmyy", cp.admin(), `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`, 200)
	cp.post(t, "/v1/facilities?facility_id=dls", cp.admin(), `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",`+served+`}`, 200)
	cp.post(t, "/v1/facilities?facility_id=wjh", cp.admin(), `{"displayName":"乌加河中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",`+served+`}`, 200)
	cp.post(t, "/v1/practitioners?practitioner_id=doc-dls", cp.admin(), `{"displayName":"韩医生","facility":"facilities/dls","roles":["ROLE_CLINICIAN"]}`, 200)
	cp.post(t, "/v1/practitioners?practitioner_id=doc-wjh", cp.admin(), `{"displayName":"李医生","facility":"facilities/wjh","roles":["ROLE_CLINICIAN"]}`, 200)
	for _, p := range []struct{ id17, name, clinic string }{
		{"15082419580314201", "巴特尔", "dls"}, {"15082419670821302", "其其格", "dls"}, {"15082419521107101", "王建国", "wjh"},
	} {
		r := cp.post(t, "/v1/patients:register", cp.clinic(p.clinic), fmt.Sprintf(`{"residentId":%q,"displayName":%q}`, directory.WithCheckDigit(p.id17), p.name), 200)
		if p.clinic == "wjh" {
			cp.wjhPatient = r.str(t, "patient.name")
		} else {
			cp.dlsPatients = append(cp.dlsPatients, r.str(t, "patient.name"))
		}
	}
	cp.post(t, "/v1/setTypes?set_type_id=suture", cp.cssd(), `{"displayName":"清创缝合包","priceFen":"3500","instruments":[{"displayName":"持针器","quantity":1}]}`, 200)
	cp.post(t, "/v1/setTypes?set_type_id=ortho", cp.cssd(), `{"displayName":"骨科内固定器械包","priceFen":"12000","implant":true}`, 200)
	cp.post(t, "/v1/sterilizers?sterilizer_id=pv1", cp.cssd(), `{"displayName":"1号预真空灭菌器","type":"TYPE_PRE_VACUUM"}`, 200)
}

func (cp *cssdPlay) post(t *testing.T, path, token, body string, status int) response {
	t.Helper()
	return cp.sys.do(t, "POST", path, token, body).want(t, status)
}

// reprocess takes a package from the clinic back through washing,
// disinfection and packing.
func (cp *cssdPlay) reprocess(t *testing.T, barcode string) {
	t.Helper()
	for _, step := range []string{"collect", "wash", "disinfect"} {
		cp.post(t, "/v1/packages/"+barcode+":"+step, cp.cssd(), `{}`, 200)
	}
	cp.post(t, "/v1/packages/"+barcode+":pack", cp.cssd(), `{"material":"PACKAGING_MATERIAL_NONWOVEN"}`, 200)
}

// load starts a BI-monitored load of packages on pv1 and returns its name.
func (cp *cssdPlay) load(t *testing.T, barcodes []string) string {
	t.Helper()
	names := make([]string, len(barcodes))
	for i, b := range barcodes {
		names[i] = fmt.Sprintf("%q", "packages/"+b)
	}
	r := cp.post(t, "/v1/sterilizers/pv1/loads", cp.cssd(), `{"program":"134℃ 4min","biologicalIndicator":true,"packages":[`+strings.Join(names, ",")+`]}`, 200)
	return r.str(t, "load.name")
}

func (cp *cssdPlay) dispatch(t *testing.T, barcode string, status int) response {
	t.Helper()
	return cp.post(t, "/v1/packages/"+barcode+":dispatch", cp.cssd(), `{"receiver":"下送员小张"}`, status)
}

func (cp *cssdPlay) use(t *testing.T, barcode, clinic, patient string, status int) response {
	t.Helper()
	return cp.post(t, "/v1/packages/"+barcode+":use", cp.clinic(clinic),
		fmt.Sprintf(`{"patient":%q,"clinician":"practitioners/doc-%s","procedure":{"system":"ICD-9-CM-3","code":"86.59","display":"皮肤缝合"}}`, patient, clinic), status)
}

// wantReason checks the ErrorInfo reason of a refused call.
func (cp *cssdPlay) wantReason(t *testing.T, r response, reason string) {
	t.Helper()
	for _, d := range r.list(t, "details") {
		if m, _ := d.(map[string]any); m["reason"] == reason {
			return
		}
	}
	t.Errorf("no reason %s in %s", reason, r.raw)
}
