package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
)

// labFlags make the critical-value loop fast enough to watch: the
// clinician has one second before the duty doctor is called.
var labFlags = []string{"-lab.critical.ack-timeout=1s", "-lab.critical.escalation-timeout=1m", "-lab.deadline-interval=50ms"}

// labWorld is a county with a lab center, a township health center it
// serves, one patient, and the people of a lab day.
type labWorld struct {
	sys                      *system
	admin, doctor, wang, liu string
	patient, patientID, name string
}

func newLabWorld(t *testing.T, sys *system) *labWorld {
	t.Helper()
	w := &labWorld{
		sys:       sys,
		admin:     sys.tokenFor(t, "admin-qrmyy", "qrmyy", typev1.Role_ROLE_ADMIN),
		doctor:    sys.tokenFor(t, "doc-dls-han", "dls", typev1.Role_ROLE_CLINICIAN),
		wang:      sys.tokenFor(t, "lab-wang", "qrmyy", typev1.Role_ROLE_LAB_TECHNOLOGIST),
		liu:       sys.tokenFor(t, "lab-liu", "qrmyy", typev1.Role_ROLE_LAB_TECHNOLOGIST),
		patientID: directory.WithCheckDigit("15082419580314201"),
		name:      "巴特尔",
	}
	sys.do(t, "POST", "/v1/facilities?facility_id=qrmyy", w.admin, `{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
	sys.do(t, "POST", "/v1/facilities?facility_id=dls", w.admin, `{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy",
		"centers":[{"center":"CENTER_LAB","facility":"facilities/qrmyy"}]}`).want(t, 200)
	reg := sys.do(t, "POST", "/v1/patients:register", w.doctor, fmt.Sprintf(`{"residentId":%q,"displayName":%q}`, w.patientID, w.name)).want(t, 200)
	w.patient = reg.str(t, "patient.name")
	return w
}

// order places an order and returns its name.
func (w *labWorld) order(t *testing.T, priority string, tests ...string) string {
	t.Helper()
	body := fmt.Sprintf(`{"patient":%q,"tests":["%s"],"priority":%q,"clinicalNote":"乏力三天"}`, w.patient, strings.Join(tests, `","`), priority)
	return w.sys.do(t, "POST", "/v1/lab/orders", w.doctor, body).want(t, 200).str(t, "order.name")
}

// ship collects a specimen at the township, has the courier pick it up and
// the lab receive it.
func (w *labWorld) ship(t *testing.T, order, barcode string, tests ...string) {
	t.Helper()
	w.sys.do(t, "POST", "/v1/lab/specimens?barcode="+barcode, w.doctor,
		fmt.Sprintf(`{"order":%q,"tests":["%s"],"volumeMl":3}`, order, strings.Join(tests, `","`))).want(t, 200)
	w.sys.do(t, "POST", "/v1/lab/specimens/"+barcode+":dispatch", w.doctor, `{"courier":"物流 老张"}`).want(t, 200)
	got := w.sys.do(t, "POST", "/v1/lab/specimens/"+barcode+":receive", w.wang, `{"temperatureCelsius":12}`).want(t, 200)
	if got.str(t, "specimen.state") != "STATE_RECEIVED" {
		t.Fatalf("received %s", got.raw)
	}
}

// wantReason checks an error response's ErrorInfo reason.
func (r response) wantReason(t *testing.T, reason string) {
	t.Helper()
	for _, d := range r.list(t, "details") {
		if m, _ := d.(map[string]any); m["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" && m["reason"] == reason {
			return
		}
	}
	t.Fatalf("no ErrorInfo reason %s: %s", reason, r.raw)
}

func has(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

// oruFor is an analyzer's ORU^R01 for one specimen.
func oruFor(version, barcode string, obx ...string) string {
	msg := "MSH|^~\\&|BS-800|QRMYY-LAB|MCC|QRMYY|20261123100000||ORU^R01^ORU_R01|CTRL0042|P|" + version + "\r" +
		"PID|1||P0001^^^MCC^PI||巴特尔||19580314|M\r" +
		"OBR|1||" + barcode + "|24323-8^Chemistry^LN\r"
	return msg + strings.Join(obx, "\r")
}

// TestLabDay plays a township -> county -> township day through the REST
// gateway: a STAT order with two tubes, one rejected and collected again,
// testing, entry and verification by two technologists, a critical
// potassium acknowledged late after it escalated, an amended report, and
// an analyzer's HL7 import. It runs on both stores: the deadlines live in
// the store, so the escalation is the store's as much as the service's.
func TestLabDay(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			sys := start(t, append(backend.flags(t), labFlags...)...)
			testLabDay(t, sys)
		})
	}
}

func testLabDay(t *testing.T, sys *system) {
	w := newLabWorld(t, sys)

	// Township: the doctor orders a blood count and electrolytes, STAT.
	order := w.order(t, "PRIORITY_STAT", "718-7", "6690-2", "777-3", "2823-3", "2951-2")
	placed := sys.do(t, "GET", "/v1/lab/"+order, w.doctor, "").want(t, 200)
	if placed.str(t, "order.labFacility") != "facilities/qrmyy" || placed.str(t, "order.state") != "STATE_PLACED" {
		t.Fatalf("order %s", placed.raw)
	}
	// County: the lab's worklist has it.
	if sys.do(t, "GET", "/v1/lab/worklist?priority=PRIORITY_STAT", w.wang, "").want(t, 200).str(t, "orders.0.name") != order {
		t.Fatal("the STAT order is not on the lab's worklist")
	}

	// Two tubes travel; the EDTA tube arrives clotted and is rejected.
	w.ship(t, order, "D0001", "718-7", "6690-2", "777-3")
	w.ship(t, order, "D0002", "2823-3", "2951-2")
	sys.do(t, "POST", "/v1/lab/specimens/D0001:reject", w.wang,
		`{"reason":"REJECTION_REASON_CLOTTED","action":"REJECTION_ACTION_RECOLLECT","note":"EDTA 管有凝块"}`).want(t, 200)
	if !has(w.sys.eventsOf(t, "/v1/lab/events", w.doctor), "specimen.rejected specimens/D0001") {
		t.Fatal("the township was not notified of the rejection")
	}
	// Township: a new tube for the blood count.
	w.ship(t, order, "D0003", "718-7", "6690-2", "777-3")

	// County: test, enter (王), verify (刘).
	for _, b := range []string{"D0002", "D0003"} {
		sys.do(t, "POST", "/v1/lab/specimens/"+b+":startTesting", w.wang, `{}`).want(t, 200)
	}
	sys.do(t, "POST", "/v1/lab/reports/D0002:enterResults", w.wang,
		`{"results":[{"code":"2823-3","value":2.3,"unit":"mmol/L"},{"code":"2951-2","value":139,"unit":"mmol/L"}]}`).want(t, 200)
	sys.do(t, "POST", "/v1/lab/reports/D0003:enterResults", w.wang,
		`{"results":[{"code":"718-7","value":128,"unit":"g/L"},{"code":"6690-2","value":7.1,"unit":"10*9/L"},{"code":"777-3","value":220,"unit":"10*9/L"}]}`).want(t, 200)
	k := sys.do(t, "POST", "/v1/lab/reports/D0002:verify", w.liu, `{}`).want(t, 200)
	if k.str(t, "report.state") != "STATE_FINAL" || k.str(t, "report.results.0.flag") != "FLAG_LL" {
		t.Fatalf("potassium report %s", k.raw)
	}
	cbc := sys.do(t, "POST", "/v1/lab/reports/D0003:verify", w.liu, `{}`).want(t, 200)
	if cbc.str(t, "report.results.0.flag") != "FLAG_L" {
		t.Errorf("hemoglobin 128 g/L for a man: %s", cbc.raw)
	}

	// The critical potassium: nobody answers within the deadline, so it
	// escalates to the duty doctor, who then confirms with read-back.
	crit := k.str(t, "report.criticalNotifications.0")
	escalated := false
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if sys.do(t, "GET", "/v1/lab/"+crit, w.doctor, "").want(t, 200).str(t, "notification.state") == "STATE_ESCALATED_DUTY_DOCTOR" {
			escalated = true
			break
		}
	}
	if !escalated {
		t.Fatal("the critical value did not escalate")
	}
	// The escalation is counted for the alert rules (issue 11).
	if m := sys.do(t, "GET", "/metrics", "", "").want(t, 200).raw; !strings.Contains(m, `mcc_events_total{service="lab",type="criticalNotification.escalated_duty_doctor"} 1`) {
		t.Error("the escalation is not in mcc_events_total")
	}
	sys.do(t, "POST", "/v1/lab/"+crit+":acknowledge", w.doctor, `{"readBack":"3.2"}`).want(t, 400).wantReason(t, "READ_BACK_MISMATCH")
	acked := sys.do(t, "POST", "/v1/lab/"+crit+":acknowledge", w.doctor, `{"readBack":"2.3 mmol/L"}`).want(t, 200)
	if acked.str(t, "notification.state") != "STATE_CONFIRMED" || acked.get(t, "notification.timely") != false || len(acked.list(t, "notification.attempts")) != 2 {
		t.Errorf("acknowledged %s", acked.raw)
	}
	var steps []string
	for _, s := range acked.list(t, "notification.timeline") {
		steps = append(steps, s.(map[string]any)["to"].(string))
	}
	if strings.Join(steps, ",") != "STATE_NOTIFIED,STATE_ESCALATED_DUTY_DOCTOR,STATE_CONFIRMED" {
		t.Errorf("critical timeline %v", steps)
	}

	// The hemoglobin was mistyped: the lab amends the report.
	amended := sys.do(t, "POST", "/v1/lab/reports/D0003:amend", w.liu,
		`{"results":[{"code":"718-7","value":138,"unit":"g/L"}],"reason":"录入错误，复核后更正"}`).want(t, 200)
	if amended.str(t, "report.state") != "STATE_AMENDED" || amended.get(t, "report.version") != float64(2) ||
		amended.str(t, "report.history.0.results.0.flag") != "FLAG_L" || amended.str(t, "report.results.0.flag") != "FLAG_N" {
		t.Errorf("amended %s", amended.raw)
	}

	// An analyzer sends a glucose result of a second order over HL7.
	order2 := w.order(t, "PRIORITY_ROUTINE", "2345-7")
	w.ship(t, order2, "D0004", "2345-7")
	imported := sys.do(t, "POST", "/v1/lab/hl7Messages:import", w.wang,
		fmt.Sprintf(`{"message":%q}`, oruFor("2.5.1", "D0004", "OBX|1|NM|2345-7^Glucose^LN||6.8|mmol/L^^UCUM|3.9-6.1|H|||F"))).want(t, 200)
	if imported.str(t, "ackCode") != "ACK_CODE_AA" || !strings.Contains(imported.str(t, "ack"), "MSA|AA|CTRL0042") {
		t.Fatalf("HL7 import %s", imported.raw)
	}
	sys.do(t, "POST", "/v1/lab/reports/D0004:verify", w.liu, `{}`).want(t, 200)

	// Township: the order is complete, with its whole timeline.
	done := sys.do(t, "GET", "/v1/lab/"+order, w.doctor, "").want(t, 200)
	if done.str(t, "order.state") != "STATE_COMPLETED" || len(done.list(t, "specimens")) != 3 || len(done.list(t, "reports")) != 2 {
		t.Errorf("order at the end of the day: %s", done.raw)
	}
	feed := w.sys.eventsOf(t, "/v1/lab/events", w.doctor)
	for _, want := range []string{"report.final reports/D0002", "report.amended reports/D0003", "criticalNotification.confirmed " + crit, "order.completed " + order, "report.final reports/D0004"} {
		if !has(feed, want) {
			t.Errorf("the township's feed lacks %s", want)
		}
	}
	day := time.Now().In(time.FixedZone("CST", 8*3600)).Format(time.DateOnly)
	stats := sys.do(t, "GET", "/v1/lab/statistics?startDay="+day+"&endDay="+day, w.wang, "").want(t, 200)
	if n := len(stats.list(t, "rows")); n != 6 {
		t.Errorf("%d statistics rows, want 6 (one per test): %s", n, stats.raw)
	}

	t.Run("no patient identifier in events or logs", func(t *testing.T) {
		events := sys.do(t, "GET", "/v1/lab/events?pageSize=1000", w.admin, "").want(t, 200).raw
		logs := sys.logs.String()
		for _, secret := range []string{w.patientID, w.patientID[6:14], w.name} {
			if strings.Contains(events, secret) {
				t.Errorf("%q is in the lab's events", secret)
			}
			if strings.Contains(logs, secret) {
				t.Errorf("%q is in the logs", secret)
			}
		}
	})
}

// TestLabBadInputOverREST tries each bad input of issue 3 through REST.
func TestLabBadInputOverREST(t *testing.T) {
	sys := start(t, labFlags...)
	w := newLabWorld(t, sys)
	order := w.order(t, "PRIORITY_ROUTINE", "2823-3", "2345-7")
	w.ship(t, order, "X0001", "2823-3", "2345-7")
	sys.do(t, "POST", "/v1/lab/specimens/X0001:startTesting", w.wang, `{}`).want(t, 200)

	t.Run("an unknown test code", func(t *testing.T) {
		sys.do(t, "POST", "/v1/lab/orders", w.doctor, fmt.Sprintf(`{"patient":%q,"tests":["99999-9"],"priority":"PRIORITY_STAT"}`, w.patient)).
			want(t, 400).wantField(t, "order.tests[0]")
	})
	t.Run("a result for a test that was not ordered", func(t *testing.T) {
		sys.do(t, "POST", "/v1/lab/reports/X0001:enterResults", w.wang, `{"results":[{"code":"718-7","value":140,"unit":"g/L"}]}`).
			want(t, 400).wantField(t, "results[0].code")
	})
	t.Run("a unit the test does not accept", func(t *testing.T) {
		sys.do(t, "POST", "/v1/lab/reports/X0001:enterResults", w.wang, `{"results":[{"code":"2823-3","value":4,"unit":"mg"}]}`).
			want(t, 400).wantField(t, "results[0].unit")
	})
	t.Run("a duplicate barcode", func(t *testing.T) {
		other := w.order(t, "PRIORITY_ROUTINE", "718-7")
		sys.do(t, "POST", "/v1/lab/specimens?barcode=X0001", w.doctor, fmt.Sprintf(`{"order":%q,"tests":["718-7"]}`, other)).want(t, 409)
	})
	t.Run("verifying your own entry", func(t *testing.T) {
		sys.do(t, "POST", "/v1/lab/reports/X0001:enterResults", w.wang,
			`{"results":[{"code":"2823-3","value":4.1,"unit":"mmol/L"},{"code":"2345-7","value":5,"unit":"mmol/L"}]}`).want(t, 200)
		sys.do(t, "POST", "/v1/lab/reports/X0001:verify", w.wang, `{}`).want(t, 400).wantReason(t, "SAME_PERSON")
	})
	t.Run("receiving a cancelled order", func(t *testing.T) {
		cancelled := w.order(t, "PRIORITY_ROUTINE", "2823-3")
		sys.do(t, "POST", "/v1/lab/specimens?barcode=X0002", w.doctor, fmt.Sprintf(`{"order":%q,"tests":["2823-3"]}`, cancelled)).want(t, 200)
		sys.do(t, "POST", "/v1/lab/specimens/X0002:dispatch", w.doctor, `{"courier":"老张"}`).want(t, 200)
		sys.do(t, "POST", "/v1/lab/"+cancelled+":cancel", w.doctor, `{"reason":"患者已转诊"}`).want(t, 200)
		sys.do(t, "POST", "/v1/lab/specimens/X0002:receive", w.wang, `{}`).want(t, 400).wantReason(t, "ORDER_CANCELLED")
	})
	t.Run("acknowledging a critical value with the wrong read-back", func(t *testing.T) {
		crit := w.order(t, "PRIORITY_STAT", "2823-3")
		w.ship(t, crit, "X0003", "2823-3")
		sys.do(t, "POST", "/v1/lab/specimens/X0003:startTesting", w.wang, `{}`).want(t, 200)
		sys.do(t, "POST", "/v1/lab/reports/X0003:enterResults", w.wang, `{"results":[{"code":"2823-3","value":6.9,"unit":"mmol/L"}]}`).want(t, 200)
		name := sys.do(t, "POST", "/v1/lab/reports/X0003:verify", w.liu, `{}`).want(t, 200).str(t, "report.criticalNotifications.0")
		sys.do(t, "POST", "/v1/lab/"+name+":acknowledge", w.doctor, `{"readBack":"9.6"}`).want(t, 400).wantReason(t, "READ_BACK_MISMATCH")
		attempts := sys.do(t, "GET", "/v1/lab/"+name, w.doctor, "").want(t, 200).list(t, "notification.attempts")
		if len(attempts) != 1 || attempts[0].(map[string]any)["accepted"] != false {
			t.Errorf("the wrong read-back was not logged: %v", attempts)
		}
	})
	for _, tt := range []struct {
		name, message, ack string
	}{
		{"malformed HL7: truncated", "MSH|^~\\&|BS-800|QRMYY-LAB", "ACK_CODE_AR"},
		{"malformed HL7: wrong version", oruFor("2.1", "X0001", "OBX|1|NM|2823-3^K^LN||4.1|mmol/L|||||F"), "ACK_CODE_AR"},
		{"malformed HL7: missing OBX units", oruFor("2.5.1", "X0001", "OBX|1|NM|2823-3^K^LN||4.1||||||F"), "ACK_CODE_AE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := sys.do(t, "POST", "/v1/lab/hl7Messages:import", w.wang, fmt.Sprintf(`{"message":%q}`, tt.message)).want(t, 200)
			if r.str(t, "ackCode") != tt.ack || r.str(t, "kept") == "" {
				t.Fatalf("import: %s", r.raw)
			}
			kept := sys.do(t, "GET", "/v1/lab/"+r.str(t, "kept"), w.wang, "").want(t, 200)
			if kept.str(t, "message.raw") != tt.message {
				t.Errorf("kept %s", kept.raw)
			}
		})
	}
	t.Run("another facility sees none of it", func(t *testing.T) {
		stranger := sys.tokenFor(t, "doc-wjh-li", "wjh", typev1.Role_ROLE_CLINICIAN)
		sys.do(t, "GET", "/v1/lab/"+order, stranger, "").want(t, 404)
		sys.do(t, "GET", "/v1/lab/reports/X0001", stranger, "").want(t, 404)
		if n := len(sys.do(t, "GET", "/v1/lab/orders", stranger, "").want(t, 200).list(t, "orders")); n != 0 {
			t.Errorf("another facility lists %d orders", n)
		}
	})
}
