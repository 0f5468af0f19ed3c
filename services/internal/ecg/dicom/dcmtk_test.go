package dicom_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/ecg/dicom"
	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
)

// requireEnv, set to 1 (as CI does, with the imaging tests' Orthanc),
// turns a missing dcmtk into a failure instead of a skip.
const requireEnv = "MCC_TEST_REQUIRE_ORTHANC"

// TestReadsDCMTKFiles checks the reader against files made by another
// implementation: dcmtk's dump2dcm writes the same 12-lead ECG in both
// transfer syntaxes, with its own choice of lengths and padding.
func TestReadsDCMTKFiles(t *testing.T) {
	bin, err := exec.LookPath("dump2dcm")
	if err != nil {
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("dump2dcm not found, and %s=1 requires it", requireEnv)
		}
		fmt.Fprintf(os.Stderr, "\n*** dump2dcm (dcmtk) not found: SKIPPING the cross-check of the DICOM reader ***\n\n")
		t.Skip("dump2dcm (dcmtk) not found")
	}
	w := ecgtest.Synthetic{HeartRate: 75, Seconds: 4, SampleRate: 250, NoiseMV: 0.02, Seed: 7}.Waveform()
	dump := dcmtkDump(w)
	for syntax, uid := range map[string]string{"+te": dicom.ExplicitVRLittleEndian, "+ti": dicom.ImplicitVRLittleEndian} {
		t.Run(syntax, func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "ecg.dump"), filepath.Join(dir, "ecg.dcm")
			if err := os.WriteFile(in, []byte(dump), 0o600); err != nil {
				t.Fatal(err)
			}
			if msg, err := exec.Command(bin, "+l", "1000000", syntax, in, out).CombinedOutput(); err != nil {
				t.Fatalf("dump2dcm: %v\n%s", err, msg)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(data[:300], []byte(uid+"\x00")) {
				t.Fatalf("dump2dcm %s did not write %s", syntax, uid)
			}
			got, err := dicom.ReadECG(data)
			if err != nil {
				t.Fatal(err)
			}
			if got.SOPInstanceUID != "2.25.42" || len(got.Leads) != 12 {
				t.Fatalf("read %q with %d leads", got.SOPInstanceUID, len(got.Leads))
			}
			for i, l := range got.Leads {
				want := w.GetLeads()[i]
				if l.Name != want.GetName() || l.SampleRateHz != 250 || l.MicrovoltsPerUnit != want.GetMicrovoltsPerUnit() {
					t.Errorf("lead %d: %s at %g Hz, %g µV per unit", i, l.Name, l.SampleRateHz, l.MicrovoltsPerUnit)
				}
				for s, v := range l.Samples {
					if v != want.GetSamples()[s] {
						t.Fatalf("lead %s sample %d: %d, want %d", l.Name, s, v, want.GetSamples()[s])
					}
				}
			}
		})
	}
}

// dcmtkDump is w as a dcmtk dump file, with the leads named by their code
// meaning only (no code value), as some carts write them, and mV as the
// sensitivity unit.
func dcmtkDump(w *typev1.EcgWaveform) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("(0002,0010) UI =LittleEndianExplicit")
	line("(0008,0016) UI =TwelveLeadECGWaveformStorage")
	line("(0008,0018) UI [2.25.42]")
	line("(0008,0060) CS [ECG]")
	line("(5400,0100) SQ (Sequence with undefined length)")
	line("  (fffe,e000) na (Item with undefined length)")
	line("    (003a,0005) US %d", len(w.GetLeads()))
	line("    (003a,0010) UL %d", len(w.GetLeads()[0].GetSamples()))
	line("    (003a,001a) DS [%g]", w.GetLeads()[0].GetSampleRateHz())
	line("    (003a,0200) SQ (Sequence with undefined length)")
	for _, l := range w.GetLeads() {
		line("      (fffe,e000) na (Item with undefined length)")
		line("        (003a,0208) SQ (Sequence with undefined length)")
		line("          (fffe,e000) na (Item with undefined length)")
		line("            (0008,0104) LO [Lead %s]", l.GetName())
		line("          (fffe,e00d) na (ItemDelimitationItem)")
		line("        (fffe,e0dd) na (SequenceDelimitationItem)")
		line("        (003a,0210) DS [%g]", l.GetMicrovoltsPerUnit()/1000)
		line("        (003a,0211) SQ (Sequence with undefined length)")
		line("          (fffe,e000) na (Item with undefined length)")
		line("            (0008,0100) SH [mV]")
		line("            (0008,0102) SH [UCUM]")
		line("          (fffe,e00d) na (ItemDelimitationItem)")
		line("        (fffe,e0dd) na (SequenceDelimitationItem)")
		line("      (fffe,e00d) na (ItemDelimitationItem)")
	}
	line("    (fffe,e0dd) na (SequenceDelimitationItem)")
	line("    (5400,1004) US 16")
	line("    (5400,1006) CS [SS]")
	var words []string
	for s := range w.GetLeads()[0].GetSamples() {
		for _, l := range w.GetLeads() {
			words = append(words, fmt.Sprintf("%04x", uint16(int16(l.GetSamples()[s]))))
		}
	}
	line("    (5400,1010) OW %s", strings.Join(words, `\`))
	line("  (fffe,e00d) na (ItemDelimitationItem)")
	line("(fffe,e0dd) na (SequenceDelimitationItem)")
	return b.String()
}
