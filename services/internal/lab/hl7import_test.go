package lab_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	"github.com/countymcc/mcc/services/internal/lab/hl7"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// oru builds an ORU^R01 from an analyzer with the given OBR-2, OBR-3 and
// OBX segments.
func oru(version, placer, filler string, obx ...string) string {
	msg := "MSH|^~\\&|BS-800|QRMYY-LAB|MCC|QRMYY|20261123100000||ORU^R01^ORU_R01|CTRL0001|P|" + version + "\r" +
		"PID|1||P0001^^^MCC^PI||巴特尔||19580314|M\r" +
		"OBR|1|" + placer + "|" + filler + "|24323-8^Chemistry^LN\r"
	for _, o := range obx {
		msg += o + "\r"
	}
	return msg
}

func ackCode(t *testing.T, ack string) string {
	t.Helper()
	m, err := hl7.Parse([]byte(ack))
	if err != nil {
		t.Fatalf("ACK %q: %v", ack, err)
	}
	if m.Segment("MSH").Field(9).Text(m.Delimiters) != "ACK^R01^ACK" {
		t.Errorf("ACK type %q", m.Segment("MSH").Field(9).Text(m.Delimiters))
	}
	if m.Segment("MSA").Get(2, 1) != "CTRL0001" && m.Segment("MSA").Get(2, 1) != "" {
		t.Errorf("MSA-2 %q", m.Segment("MSA").Get(2, 1))
	}
	return m.Segment("MSA").Get(1, 1)
}

func TestImportHL7(t *testing.T) {
	f := newFixture(t)
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_STAT, "2823-3", "2951-2")
	f.toState(t, o, "H0001", labv1.Specimen_STATE_RECEIVED)
	o2 := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2345-7")
	f.toState(t, o2, "H0002", labv1.Specimen_STATE_IN_TESTING)
	k := "OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L^^UCUM|3.5-5.3|N|||F"
	na := "OBX|2|NM|2951-2^Sodium^LN||131|mmol/L|137-147|L|||F"

	t.Run("matched by barcode", func(t *testing.T) {
		resp, err := f.lab.ImportHl7Message(f.wang(t), &labv1.ImportHl7MessageRequest{Message: oru("2.5.1", "", "H0001", k, na)})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAckCode() != labv1.AckCode_ACK_CODE_AA || ackCode(t, resp.GetAck()) != "AA" || resp.GetReports()[0] != "reports/H0001" {
			t.Fatalf("import: %v", resp)
		}
		r, err := f.lab.GetReport(f.wang(t), &labv1.GetReportRequest{Name: "reports/H0001"})
		if err != nil {
			t.Fatal(err)
		}
		res := r.GetReport().GetResults()
		if r.GetReport().GetState() != labv1.Report_STATE_PRELIMINARY || len(res) != 2 || res[1].GetFlag() != labv1.Flag_FLAG_L || res[1].GetReportedFlag() != "L" || res[1].GetReportedRange() != "137-147" {
			t.Errorf("imported report %v", r.GetReport())
		}
		// The interface entered the results; a person verifies them.
		if _, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/H0001"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("matched by order number", func(t *testing.T) {
		resp, err := f.lab.ImportHl7Message(f.wang(t), &labv1.ImportHl7MessageRequest{Message: oru("2.4", o2.GetName(), "", "OBX|1|NM|2345-7^Glucose^LN||99|mg/dL|70-110|N|||F")})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAckCode() != labv1.AckCode_ACK_CODE_AA || resp.GetReports()[0] != "reports/H0002" {
			t.Fatalf("import: %v", resp)
		}
	})

	for _, tt := range []struct {
		name    string
		message string
		code    labv1.AckCode
		error   string
	}{
		{"unknown barcode", oru("2.5.1", "", "NOPE1", k), labv1.AckCode_ACK_CODE_AE, "no specimen"},
		{"unknown order", oru("2.5.1", "orders/00000000-0000-0000-0000-000000000000", "", k), labv1.AckCode_ACK_CODE_AE, "no open specimen"},
		{"missing OBX units", oru("2.5.1", "", "H0002", "OBX|1|NM|2345-7^Glucose^LN||5.1||3.9-6.1|N|||F"), labv1.AckCode_ACK_CODE_AE, "OBX-6 (units) is missing"},
		{"unit not accepted", oru("2.5.1", "", "H0002", "OBX|1|NM|2345-7^Glucose^LN||5.1|g/L|3.9-6.1|N|||F"), labv1.AckCode_ACK_CODE_AE, "not a unit"},
		{"test not on the specimen", oru("2.5.1", "", "H0002", k), labv1.AckCode_ACK_CODE_AE, "was not ordered"},
		{"text result", oru("2.5.1", "", "H0002", "OBX|1|ST|2345-7^Glucose^LN||high|mmol/L||||F"), labv1.AckCode_ACK_CODE_AE, "only numeric"},
		{"no OBX", oru("2.5.1", "", "H0002"), labv1.AckCode_ACK_CODE_AE, "has no OBX"},
		{"wrong version", oru("3.0", "", "H0002", k), labv1.AckCode_ACK_CODE_AR, "version"},
		{"not an ORU", strings.Replace(oru("2.5.1", "", "H0002", k), "ORU^R01^ORU_R01", "ADT^A01", 1), labv1.AckCode_ACK_CODE_AR, "not ORU^R01"},
		{"truncated header", "MSH|^~\\&|BS-800|QRMYY-LAB|MCC", labv1.AckCode_ACK_CODE_AR, "truncated"},
		{"truncated in the encoding characters", "MSH|^~", labv1.AckCode_ACK_CODE_AR, "MSH"},
		{"not HL7", "hello", labv1.AckCode_ACK_CODE_AR, "MSH"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := f.lab.ImportHl7Message(f.wang(t), &labv1.ImportHl7MessageRequest{Message: tt.message})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetAckCode() != tt.code || ackCode(t, resp.GetAck()) != strings.TrimPrefix(tt.code.String(), "ACK_CODE_") {
				t.Fatalf("ack %v: %q", resp.GetAckCode(), resp.GetAck())
			}
			if !strings.Contains(strings.Join(resp.GetErrors(), "; "), tt.error) {
				t.Errorf("errors %q do not mention %q", resp.GetErrors(), tt.error)
			}
			// Never dropped: the message is kept, verbatim, for review.
			kept, err := f.lab.GetHl7Message(f.wang(t), &labv1.GetHl7MessageRequest{Name: resp.GetKept()})
			if err != nil {
				t.Fatal(err)
			}
			if kept.GetMessage().GetRaw() != tt.message || kept.GetMessage().GetAckCode() != tt.code {
				t.Errorf("kept %v", kept.GetMessage())
			}
		})
	}

	t.Run("kept messages are listed for the lab only, and their events carry no raw text", func(t *testing.T) {
		list, err := f.lab.ListHl7Messages(f.wang(t), &labv1.ListHl7MessagesRequest{})
		if err != nil || len(list.GetMessages()) != 12 {
			t.Fatalf("listed %d (%v)", len(list.GetMessages()), err)
		}
		_, err = f.lab.GetHl7Message(f.as(t, "lab-x", "wjh", clinician, tech), &labv1.GetHl7MessageRequest{Name: list.GetMessages()[0].GetName()})
		servertest.WantCode(t, err, codes.NotFound)
		evs, err := f.lab.ListEvents(f.wang(t), &labv1.ListEventsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.GetEvents() {
			if strings.Contains(string(e.GetSnapshot().GetValue()), "巴特尔") {
				t.Errorf("event %s carries the patient's name", e.GetType())
			}
		}
	})
}

func TestMLLP(t *testing.T) {
	f := newFixture(t)
	o := f.order(t, f.batu, labv1.Priority_PRIORITY_STAT, "2823-3")
	f.toState(t, o, "M0001", labv1.Specimen_STATE_RECEIVED)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.svc.ServeMLLP(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeMLLP: %v", err)
		}
	}()
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	exchange := func(msg string) string {
		t.Helper()
		if _, err := conn.Write([]byte("\x0b" + msg + "\x1c\r")); err != nil {
			t.Fatal(err)
		}
		frame, err := r.ReadBytes('\x1c')
		if err != nil {
			t.Fatal(err)
		}
		if cr, err := r.ReadByte(); err != nil || cr != '\r' || frame[0] != '\x0b' {
			t.Fatalf("bad MLLP frame %q", frame)
		}
		return ackCode(t, string(frame[1:len(frame)-1]))
	}
	// Two messages on one connection, LF line ends in the second.
	if got := exchange(oru("2.5.1", "", "M0001", "OBX|1|NM|2823-3^Potassium^LN||2.4|mmol/L|3.5-5.3|LL|||F")); got != "AA" {
		t.Errorf("first message: %s", got)
	}
	if got := exchange(strings.ReplaceAll(oru("2.5.1", "", "NOPE2", "OBX|1|NM|2823-3^Potassium^LN||4|mmol/L|||||F"), "\r", "\n")); got != "AE" {
		t.Errorf("unmatched message: %s", got)
	}
	if got := exchange(oru("2.2", "", "M0001", "OBX|1|NM|2823-3^Potassium^LN||4|mmol/L|||||F")); got != "AR" {
		t.Errorf("old version: %s", got)
	}
	r2, err := f.lab.GetReport(f.wang(t), &labv1.GetReportRequest{Name: "reports/M0001"})
	if err != nil {
		t.Fatal(err)
	}
	if res := r2.GetReport().GetResults(); len(res) != 1 || res[0].GetFlag() != labv1.Flag_FLAG_LL || r2.GetReport().GetEnteredBy() != "service:lab-mllp" {
		t.Errorf("report from MLLP: %v", r2.GetReport())
	}
}

func TestStatistics(t *testing.T) {
	f := newFixture(t)
	// Two potassium specimens done, one rejected, one critical confirmed
	// in time.
	for _, b := range []string{"S0001", "S0002"} {
		o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
		f.collect(t, o, b)
		f.Clock.Advance(30 * time.Minute)
		f.toStateFrom(t, b, labv1.Specimen_STATE_IN_TRANSIT)
		f.Clock.Advance(60 * time.Minute)
		f.toStateFrom(t, b, labv1.Specimen_STATE_RECEIVED)
		f.Clock.Advance(20 * time.Minute)
		f.toStateFrom(t, b, labv1.Specimen_STATE_DONE)
	}
	rej := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
	f.toState(t, rej, "S0003", labv1.Specimen_STATE_RECEIVED)
	if _, err := f.lab.RejectSpecimen(f.wang(t), &labv1.RejectSpecimenRequest{Name: "specimens/S0003", Reason: labv1.RejectionReason_REJECTION_REASON_HEMOLYSIS, Action: labv1.RejectionAction_REJECTION_ACTION_RECOLLECT}); err != nil {
		t.Fatal(err)
	}
	n := f.criticalReport(t, "S0004")
	if _, err := f.lab.AcknowledgeCriticalNotification(f.doctor(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: "2.1"}); err != nil {
		t.Fatal(err)
	}
	day := f.Clock.Now().In(time.FixedZone("CST", 8*3600)).Format(time.DateOnly)
	stats, err := f.lab.GetStatistics(f.wang(t), &labv1.GetStatisticsRequest{StartDay: day, EndDay: day})
	if err != nil {
		t.Fatal(err)
	}
	if len(stats.GetRows()) != 1 {
		t.Fatalf("rows %v", stats.GetRows())
	}
	row := stats.GetRows()[0]
	if row.GetFacility() != "facilities/dls" || row.GetTest() != "2823-3" || row.GetCount() != 3 || row.GetRejected() != 1 ||
		row.GetRejectionRate() != 0.25 || row.GetRejections()[0].GetReason() != labv1.RejectionReason_REJECTION_REASON_HEMOLYSIS ||
		row.GetCriticalResults() != 1 || row.GetCriticalNotificationRate() != 1 || row.GetCriticalTimelyRate() != 1 {
		t.Errorf("row %v", row)
	}
	// S0001 and S0002: 90 min pre-analytic, 20 min in the lab; S0004 has
	// no wait, so the median is 90 and the 90th percentile 90.
	if row.GetPreAnalytic().GetP90Minutes() != 90 || row.GetInLab().GetMedianMinutes() != 20 {
		t.Errorf("TAT pre %v in-lab %v", row.GetPreAnalytic(), row.GetInLab())
	}
	other, err := f.lab.GetStatistics(f.other(t), &labv1.GetStatisticsRequest{StartDay: day, EndDay: day})
	if err != nil || len(other.GetRows()) != 0 {
		t.Errorf("another clinic sees %d rows (%v)", len(other.GetRows()), err)
	}
	_, err = f.lab.GetStatistics(f.wang(t), &labv1.GetStatisticsRequest{StartDay: day, EndDay: "2025-01-01"})
	servertest.WantField(t, err, "end_day")
}

// toStateFrom moves an existing specimen one step to state.
func (f *fixture) toStateFrom(t *testing.T, barcode string, state labv1.Specimen_State) {
	t.Helper()
	name := "specimens/" + barcode
	var err error
	switch state {
	case labv1.Specimen_STATE_IN_TRANSIT:
		_, err = f.lab.DispatchSpecimen(f.doctor(t), &labv1.DispatchSpecimenRequest{Name: name, Courier: "老张"})
	case labv1.Specimen_STATE_RECEIVED:
		_, err = f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: name})
	case labv1.Specimen_STATE_DONE:
		if _, err = f.lab.StartTesting(f.wang(t), &labv1.StartTestingRequest{Name: name}); err == nil {
			if _, err = f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/" + barcode, Results: []*labv1.ResultInput{normal("2823-3")}}); err == nil {
				_, err = f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/" + barcode})
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}
