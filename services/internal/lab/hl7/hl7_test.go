package hl7_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/countymcc/mcc/services/internal/lab/hl7"
)

const oru = "MSH|^~\\&|XN-1000|QRMYY-LAB|MCC|QRMYY|20261123093000||ORU^R01^ORU_R01|MSG00001|P|2.5.1\r" +
	"PID|1||P123^^^MCC^PI~H456^^^HC||巴特尔^^||19580314|M\n" +
	"OBR|1|orders/abc|B0001|58410-2^CBC panel^LN\r\n" +
	"OBX|1|NM|718-7^Hemoglobin^LN||98|g/L^^UCUM|130-175|L|||F\r" +
	"NTE|1||line one\\.br\\line two \\F\\ pipe \\S\\ hat \\T\\ amp \\R\\ tilde \\E\\ slash \\X0D0A\\ \\H\\bold\\N\\\n\n"

func TestParse(t *testing.T) {
	m, err := hl7.Parse([]byte(oru))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range m.Segments {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"MSH", "PID", "OBR", "OBX", "NTE"}, names); diff != "" {
		t.Fatalf("segments (-want +got):\n%s", diff)
	}
	msh, pid, obx := m.Segment("MSH"), m.Segment("PID"), m.Segment("OBX")
	for _, tt := range []struct{ name, got, want string }{
		{"MSH-1", msh.Field(1).Value(), "|"},
		{"MSH-2", msh.Field(2).Value(), "^~\\&"},
		{"MSH-9", msh.Field(9).Text(m.Delimiters), "ORU^R01^ORU_R01"},
		{"MSH-9.2", msh.Get(9, 2), "R01"},
		{"MSH-10", msh.Get(10, 1), "MSG00001"},
		{"MSH-12", msh.Get(12, 1), "2.5.1"},
		{"PID-3 second repetition", pid.Field(3).Component(2, 1), "H456"},
		{"PID-3.4", pid.Get(3, 4), "MCC"},
		{"OBX-3.1", obx.Get(3, 1), "718-7"},
		{"OBX-5", obx.Get(5, 1), "98"},
		{"OBX-6.1", obx.Get(6, 1), "g/L"},
		{"OBX-8", obx.Get(8, 1), "L"},
		{"OBX-99 absent", obx.Get(99, 1), ""},
		{"escapes", m.Segment("NTE").Get(3, 1), "line one\nline two | pipe ^ hat & amp ~ tilde \\ slash \r\n \\H\\bold\\N\\"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestSubcomponentsAndOtherDelimiters(t *testing.T) {
	m, err := hl7.Parse([]byte("MSH#*!@%#A#B\rOBX#1#CE#a*b%c!d*e"))
	if err != nil {
		t.Fatal(err)
	}
	f := m.Segment("OBX").Field(3)
	want := hl7.Field{{{"a"}, {"b", "c"}}, {{"d"}, {"e"}}}
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("field (-want +got):\n%s", diff)
	}
	again, err := hl7.Parse(m.Encode())
	if err != nil || !cmp.Equal(m, again) {
		t.Errorf("round trip: %v\n%s", err, cmp.Diff(m, again))
	}
}

func TestParseErrors(t *testing.T) {
	for name, raw := range map[string]string{
		"empty":                  "",
		"no MSH":                 "PID|1\rMSH|^~\\&|",
		"truncated MSH":          "MSH|^~",
		"repeated delimiter":     "MSH|^^\\&|A",
		"alphanumeric delimiter": "MSH|^~A&|A",
		"second MSH":             "MSH|^~\\&|A\rMSH|^~\\&|B",
		"bad segment name":       "MSH|^~\\&|A\robx|1",
		"unterminated escape":    "MSH|^~\\&|A\rOBX|1|ST|x||a\\F",
		"bad hex escape":         "MSH|^~\\&|A\rOBX|1|ST|x||\\XZZ\\",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := hl7.Parse([]byte(raw)); !errors.Is(err, hl7.ErrMalformed) {
				t.Errorf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	m, err := hl7.Parse([]byte(oru))
	if err != nil {
		t.Fatal(err)
	}
	again, err := hl7.Parse(m.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, again); diff != "" {
		t.Errorf("round trip (-first +second):\n%s", diff)
	}
}

// FuzzParse checks that Parse never panics and that what it parses encodes
// to a message that parses to the same thing.
func FuzzParse(f *testing.F) {
	f.Add([]byte(oru))
	f.Add([]byte("MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.5\rOBX|1|NM|x||\\X41\\|mg"))
	f.Add([]byte("MSH#*!@%#A\nOBX#1#CE#a*b%c!d*e\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := hl7.Parse(raw)
		if err != nil {
			if !errors.Is(err, hl7.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		again, err := hl7.Parse(m.Encode())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", m.Encode(), err)
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", raw, diff)
		}
	})
}

// BenchmarkParseORU measures parsing a typical ORU^R01 with 20 results.
func BenchmarkParseORU(b *testing.B) {
	msg := "MSH|^~\\&|XN-1000|QRMYY-LAB|MCC|QRMYY|20261123093000||ORU^R01^ORU_R01|MSG00001|P|2.5.1\r" +
		"PID|1||P123^^^MCC^PI||巴特尔||19580314|M\rOBR|1|orders/abc|B0001|24323-8^CMP^LN\r"
	for i := range 20 {
		msg += "OBX|" + string(rune('1'+i%9)) + "|NM|2823-3^Potassium^LN||4.1|mmol/L^^UCUM|3.5-5.3|N|||F\r"
	}
	raw := []byte(msg)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := hl7.Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
}
