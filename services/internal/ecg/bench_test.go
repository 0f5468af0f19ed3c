package ecg

import (
	"testing"

	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
)

// BenchmarkPreRead reads one 10-second 12-lead recording at 500 Hz (the
// target is under 5 ms).
func BenchmarkPreRead(b *testing.B) {
	w, err := checkWaveform(ecgtest.Normal(75), sampledField)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		PreRead(w)
	}
}
