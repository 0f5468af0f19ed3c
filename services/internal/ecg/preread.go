package ecg

import (
	"math"
	"slices"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// The machine pre-read is a QRS detector after Pan and Tompkins (IEEE
// Trans Biomed Eng 1985;32:230-236), made independent of the sampling
// rate and run on several leads at once:
//
//  1. each of the detection leads is band-passed to 5-15 Hz, where the
//     QRS complex has its energy and baseline wander, T waves and mains
//     noise have little;
//  2. differentiated and squared, and the leads summed, so a beat small in
//     one lead still shows in the others;
//  3. integrated over a 150 ms moving window;
//  4. the integrated signal's peaks are classified as QRS or noise with
//     two adaptive thresholds, a 200 ms refractory period, a T-wave check
//     within 360 ms of the previous beat, and a search back for a missed
//     beat when an interval grows past 166% of the recent mean;
//  5. each R peak is placed at the largest band-passed amplitude in the
//     integration window before the detection.
//
// From the R peaks come the heart rate (60 s over the mean RR interval),
// the RR intervals' standard deviation (SDNN) and root mean square of
// successive differences (RMSSD), and the bradycardia (< 60 bpm) and
// tachycardia (> 100 bpm) flags.

// Algorithm names the detector in a pre-read, so a reading can be traced
// to the version that made it.
const Algorithm = "mcc-pan-tompkins/1"

// Rate limits of the flags, beats per minute.
const (
	bradycardiaBelow = 60
	tachycardiaAbove = 100
)

// detectionLeads are the leads the detector sums: a limb lead and two
// precordial leads that see the QRS from different directions.
func detectionLeads() []string { return []string{"II", "V2", "V5"} }

// biquad is a second-order IIR filter section (direct form I).
type biquad struct {
	b0, b1, b2, a1, a2 float64
	x1, x2, y1, y2     float64
}

// newBiquad designs a Butterworth (Q = 1/√2) low-pass or high-pass section
// at cutoff Hz for a sampling rate (the RBJ audio cookbook's formulas).
func newBiquad(highPass bool, cutoff, rate float64) *biquad {
	w := 2 * math.Pi * cutoff / rate
	cos, alpha := math.Cos(w), math.Sin(w)/math.Sqrt2
	a0 := 1 + alpha
	f := &biquad{a1: -2 * cos / a0, a2: (1 - alpha) / a0}
	if highPass {
		f.b0, f.b1, f.b2 = (1+cos)/2/a0, -(1+cos)/a0, (1+cos)/2/a0
	} else {
		f.b0, f.b1, f.b2 = (1-cos)/2/a0, (1-cos)/a0, (1-cos)/2/a0
	}
	return f
}

// settle sets the filter's state as if x had always been its input, so a
// recording's offset causes no start-up transient.
func (f *biquad) settle(x float64) {
	gain := (f.b0 + f.b1 + f.b2) / (1 + f.a1 + f.a2)
	f.x1, f.x2, f.y1, f.y2 = x, x, x*gain, x*gain
}

func (f *biquad) next(x float64) float64 {
	y := f.b0*x + f.b1*f.x1 + f.b2*f.x2 - f.a1*f.y1 - f.a2*f.y2
	f.x2, f.x1, f.y2, f.y1 = f.x1, x, f.y1, y
	return y
}

// PreRead reads a checked 12-lead recording.
func PreRead(w *typev1.EcgWaveform) *typev1.EcgPreRead {
	leads := map[string]*typev1.EcgLead{}
	for _, l := range w.GetLeads() {
		leads[l.GetName()] = l
	}
	rate := w.GetLeads()[0].GetSampleRateHz()
	n := len(w.GetLeads()[0].GetSamples())
	feature := make([]float64, n)   // summed squared slope
	amplitude := make([]float64, n) // summed band-passed amplitude
	for _, name := range detectionLeads() {
		l := leads[name]
		scale := l.GetMicrovoltsPerUnit() / 1000
		hp, lp := newBiquad(true, 5, rate), newBiquad(false, 15, rate)
		hp.settle(float64(l.GetSamples()[0]) * scale)
		lp.settle(0)
		var y [5]float64 // the last band-passed values, newest first
		for i, s := range l.GetSamples() {
			copy(y[1:], y[:4])
			y[0] = lp.next(hp.next(float64(s) * scale))
			// The five-point derivative of Pan and Tompkins, per second.
			d := (2*y[0] + y[1] - y[3] - 2*y[4]) * rate / 8
			feature[i] += d * d
			amplitude[i] += math.Abs(y[0])
		}
	}
	window := max(int(0.150*rate), 1)
	integrated := movingAverage(feature, window)
	peaks := detect(integrated, feature, rate)
	var r []int
	for _, p := range peaks {
		from := max(p-window-int(0.05*rate), 0)
		r = append(r, from+argmax(amplitude[from:p+1]))
	}
	return summarize(r, rate)
}

// movingAverage is the mean of each window of x ending at each sample.
func movingAverage(x []float64, window int) []float64 {
	out := make([]float64, len(x))
	sum := 0.0
	for i, v := range x {
		sum += v
		if i >= window {
			sum -= x[i-window]
		}
		out[i] = sum / float64(window)
	}
	return out
}

func argmax(x []float64) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// detect classifies the peaks of the integrated signal and returns those
// of the QRS complexes, in order.
func detect(integrated, slope []float64, rate float64) []int {
	refractory, tWindow := int(0.2*rate), int(0.36*rate)
	learn := min(int(2*rate), len(integrated))
	mean := 0.0
	for _, v := range integrated[:learn] {
		mean += v
	}
	signal := 0.25 * slices.Max(integrated[:learn])
	noise := 0.5 * mean / float64(learn)
	threshold := func() float64 { return noise + 0.25*(signal-noise) }

	var candidates []int
	for i := 1; i < len(integrated)-1; i++ {
		if integrated[i] > integrated[i-1] && integrated[i] >= integrated[i+1] {
			candidates = append(candidates, i)
		}
	}
	// maxSlope is the steepest slope in the integration window before a
	// peak, which tells a QRS from a T wave.
	maxSlope := func(p int) float64 { return slices.Max(slope[max(p-refractory, 0) : p+1]) }

	var qrs []int
	for ci, p := range candidates {
		v := integrated[p]
		if len(qrs) > 0 {
			last := qrs[len(qrs)-1]
			if p-last < refractory {
				if v > integrated[last] {
					qrs[len(qrs)-1] = p
				}
				continue
			}
			if v > threshold() && p-last < tWindow && maxSlope(p) < 0.5*maxSlope(last) {
				noise = 0.125*v + 0.875*noise
				continue
			}
		}
		if v <= threshold() {
			noise = 0.125*v + 0.875*noise
			continue
		}
		signal = 0.125*v + 0.875*signal
		if missed, ok := searchBack(qrs, candidates[:ci], p, integrated, threshold()/2, refractory); ok {
			qrs = append(qrs, missed)
		}
		qrs = append(qrs, p)
	}
	return qrs
}

// searchBack looks for a beat missed between the last QRS and a new one
// at p, when their interval exceeds 166% of the mean of the last eight:
// the largest earlier candidate above the lower threshold, a refractory
// period away from both.
func searchBack(qrs, earlier []int, p int, integrated []float64, lower float64, refractory int) (int, bool) {
	if len(qrs) < 2 {
		return 0, false
	}
	recent := qrs[max(len(qrs)-9, 0):]
	mean := float64(recent[len(recent)-1]-recent[0]) / float64(len(recent)-1)
	last := qrs[len(qrs)-1]
	if float64(p-last) <= 1.66*mean {
		return 0, false
	}
	best, found := 0, false
	for _, c := range earlier {
		if c-last < refractory || p-c < refractory || integrated[c] <= lower {
			continue
		}
		if !found || integrated[c] > integrated[best] {
			best, found = c, true
		}
	}
	return best, found
}

// summarize turns R peak positions into the pre-read's figures.
func summarize(r []int, rate float64) *typev1.EcgPreRead {
	out := &typev1.EcgPreRead{Status: typev1.EcgPreRead_STATUS_MACHINE_READ, Beats: int32(len(r)), Algorithm: Algorithm}
	if len(r) < 2 {
		return out
	}
	rr := make([]float64, len(r)-1)
	mean := 0.0
	for i := range rr {
		rr[i] = float64(r[i+1]-r[i]) * 1000 / rate
		mean += rr[i]
	}
	mean /= float64(len(rr))
	var sd, successive float64
	for i, v := range rr {
		sd += (v - mean) * (v - mean)
		if i > 0 {
			successive += (v - rr[i-1]) * (v - rr[i-1])
		}
	}
	out.MeanRrMs = round1(mean)
	out.HeartRateBpm = round1(60000 / mean)
	out.RrSdnnMs = round1(math.Sqrt(sd / float64(len(rr))))
	if len(rr) > 1 {
		out.RrRmssdMs = round1(math.Sqrt(successive / float64(len(rr)-1)))
	}
	out.Bradycardia = out.GetHeartRateBpm() < bradycardiaBelow
	out.Tachycardia = out.GetHeartRateBpm() > tachycardiaAbove
	return out
}

// round1 rounds to one decimal, the precision a reading is shown with.
func round1(x float64) float64 { return math.Round(x*10) / 10 }
