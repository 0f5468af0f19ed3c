package dicom_test

import (
	"testing"

	"github.com/countymcc/mcc/services/internal/ecg/dicom"
	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
)

// BenchmarkReadECG parses a DICOM file of a 10-second 12-lead recording at
// 500 Hz (120 kB of samples), in each transfer syntax.
func BenchmarkReadECG(b *testing.B) {
	w := ecgtest.Normal(75)
	for _, tc := range []struct {
		name     string
		explicit bool
	}{{"explicit", true}, {"implicit", false}} {
		data := ecgtest.DICOM(w, "2.25.1", tc.explicit)
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dicom.ReadECG(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
