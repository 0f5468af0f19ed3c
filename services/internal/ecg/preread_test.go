package ecg

import (
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/countymcc/mcc/services/internal/ecg/dicom"
	"github.com/countymcc/mcc/services/internal/ecg/ecgtest"
)

// TestPreReadRates reads synthetic recordings of known rates from 40 to
// 180 bpm, at three sampling rates, with white noise, mains hum, baseline
// wander of ±0.75 mV and 5% beat-to-beat variability: the heart rate must
// be within 2 bpm, every beat found (but perhaps one cut by the start or
// end of the recording), and the flags right away from their limits.
func TestPreReadRates(t *testing.T) {
	worst := 0.0
	for bpm := 40.0; bpm <= 180; bpm += 10 {
		for _, rate := range []float64{250, 500, 1000} {
			for seed := uint64(1); seed <= 2; seed++ {
				s := ecgtest.Synthetic{HeartRate: bpm, Seconds: 10, SampleRate: rate, NoiseMV: 0.05, WanderMV: 0.5, Variability: 0.05, Seed: seed}
				t.Run(fmt.Sprintf("%gbpm/%gHz/%d", bpm, rate, seed), func(t *testing.T) {
					w, err := checkWaveform(s.Waveform(), sampledField)
					if err != nil {
						t.Fatal(err)
					}
					got := PreRead(w)
					diff := math.Abs(got.GetHeartRateBpm() - bpm)
					worst = math.Max(worst, diff)
					if missed := len(s.Beats()) - int(got.GetBeats()); diff > 2 || missed < 0 || missed > 1 {
						t.Errorf("%g bpm with %d beats, want %g ± 2 with %d", got.GetHeartRateBpm(), got.GetBeats(), bpm, len(s.Beats()))
					}
					if bpm != 60 && bpm != 100 && (got.GetBradycardia() != (bpm < 60) || got.GetTachycardia() != (bpm > 100)) {
						t.Errorf("flags: bradycardia %v, tachycardia %v", got.GetBradycardia(), got.GetTachycardia())
					}
				})
			}
		}
	}
	t.Logf("largest error %.2f bpm", worst)
}

// TestPreReadVariability checks the RR statistics on a rhythm whose
// intervals alternate between two known values.
func TestPreReadVariability(t *testing.T) {
	s := ecgtest.Synthetic{HeartRate: 60, Seconds: 10, SampleRate: 500, NoiseMV: 0.02, Seed: 3}
	w, err := checkWaveform(s.Waveform(), sampledField)
	if err != nil {
		t.Fatal(err)
	}
	got := PreRead(w)
	if math.Abs(got.GetMeanRrMs()-1000) > 5 || got.GetRrSdnnMs() > 5 || got.GetRrRmssdMs() > 5 {
		t.Errorf("steady 60 bpm: mean RR %v ms, SDNN %v, RMSSD %v", got.GetMeanRrMs(), got.GetRrSdnnMs(), got.GetRrRmssdMs())
	}
	s.Variability = 0.1
	w, _ = checkWaveform(s.Waveform(), sampledField)
	if v := PreRead(w); v.GetRrSdnnMs() < 20 || v.GetRrRmssdMs() < 20 {
		t.Errorf("10%% variability: SDNN %v, RMSSD %v", v.GetRrSdnnMs(), v.GetRrRmssdMs())
	}
}

// TestExampleFile reads the example recording the README uploads: a DICOM
// 12-lead ECG (implicit VR) of a synthetic sinus rhythm at 98 bpm.
func TestExampleFile(t *testing.T) {
	data, err := os.ReadFile("testdata/resting-12lead.dcm")
	if err != nil {
		t.Fatal(err)
	}
	file, err := dicom.ReadECG(data)
	if err != nil {
		t.Fatal(err)
	}
	w, err := checkWaveform(sampled(file), dicomField)
	if err != nil {
		t.Fatal(err)
	}
	if got := PreRead(w); math.Abs(got.GetHeartRateBpm()-98) > 2 || got.GetTachycardia() {
		t.Errorf("pre-read %v", got)
	}
}
