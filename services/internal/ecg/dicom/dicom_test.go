package dicom_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/countymcc/mcc/services/internal/ecg/dicom"
	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
)

func TestReadDICOMRoundTrip(t *testing.T) {
	want := ecgtest.Normal(72)
	for _, explicit := range []bool{true, false} {
		data := ecgtest.DICOM(want, "2.25.1234", explicit)
		got, err := dicom.ReadECG(data)
		if err != nil {
			t.Fatalf("explicit=%v: %v", explicit, err)
		}
		var leads []dicom.Lead
		for _, l := range want.GetLeads() {
			leads = append(leads, dicom.Lead{Name: l.GetName(), SampleRateHz: l.GetSampleRateHz(), MicrovoltsPerUnit: l.GetMicrovoltsPerUnit(), Samples: l.GetSamples()})
		}
		if diff := cmp.Diff(leads, got.Leads); diff != "" {
			t.Errorf("explicit=%v: waveform differs (-want +got):\n%s", explicit, diff)
		}
		if got.SOPInstanceUID != "2.25.1234" {
			t.Errorf("SOP instance UID %q", got.SOPInstanceUID)
		}
	}
}

func TestReadDICOMCorrupt(t *testing.T) {
	good := ecgtest.DICOM(ecgtest.Normal(72), "2.25.1", true)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, dicom.ErrNotDICOM},
		{"no DICM", append(make([]byte, 128), []byte("DICX")...), dicom.ErrNotDICOM},
		{"truncated meta", good[:140], dicom.ErrCorrupt},
		{"truncated data", good[:len(good)/2], dicom.ErrCorrupt},
		{"one byte short", good[:len(good)-1], dicom.ErrCorrupt},
		{"bad VR", bytes.Replace(good, []byte("SQ\x00\x00"), []byte("s1\x00\x00"), 1), dicom.ErrCorrupt},
		{"big endian", bytes.Replace(good, []byte("1.2.840.10008.1.2.1\x00"), []byte("1.2.840.10008.1.2.2\x00"), 1), dicom.ErrUnsupported},
		{"another SOP class", bytes.ReplaceAll(good, []byte("1.2.840.10008.5.1.4.1.1.9.1.1"), []byte("1.2.840.10008.5.1.4.1.1.9.1.2")), dicom.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dicom.ReadECG(tc.data)
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzReadECG(f *testing.F) {
	small := ecgtest.Synthetic{HeartRate: 70, Seconds: 1, SampleRate: 100, Seed: 1}.Waveform()
	f.Add(ecgtest.DICOM(small, "2.25.1", true))
	f.Add(ecgtest.DICOM(small, "2.25.2", false))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := dicom.ReadECG(data)
		if err != nil {
			if !errors.Is(err, dicom.ErrNotDICOM) && !errors.Is(err, dicom.ErrCorrupt) && !errors.Is(err, dicom.ErrUnsupported) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		for _, l := range rec.Leads {
			if l.MicrovoltsPerUnit <= 0 {
				t.Fatalf("lead %s with %g µV per unit", l.Name, l.MicrovoltsPerUnit)
			}
		}
	})
}
