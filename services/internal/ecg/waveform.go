package ecg

import (
	"fmt"
	"slices"
	"strings"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

// standardLeads are the 12 leads of a resting ECG, in the order a
// recording is stored and served.
func standardLeads() []string {
	return []string{"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}
}

// Bounds of an accepted recording: a resting ECG is sampled at 100 to
// 10000 Hz (250 to 1000 in practice) for about 10 seconds, at a few µV per
// unit.
const (
	minSampleRate        = 100
	maxSampleRate        = 10000
	minSeconds           = 4
	maxSeconds           = 60
	maxMicrovoltsPerUnit = 1000
)

// fieldOf names the request field of a lead's attribute, for errors.
type fieldOf func(lead int, attribute string) string

// sampledField names the fields of an upload of sampled data.
func sampledField(lead int, attribute string) string {
	return fmt.Sprintf("sampled.leads[%d].%s", lead, attribute)
}

// dicomField names the file of a DICOM upload for any lead's fault.
func dicomField(int, string) string { return "dicom" }

// checkWaveform checks a 12-lead recording (every standard lead once, one
// plausible sample rate, the same number of samples in every lead, a
// resting ECG's length) and returns it with its leads in the standard
// order.
func checkWaveform(w *typev1.EcgWaveform, at fieldOf) (*typev1.EcgWaveform, error) {
	byName := map[string]*typev1.EcgLead{}
	for i, l := range w.GetLeads() {
		if _, dup := byName[l.GetName()]; dup {
			return nil, apierr.Invalid(at(i, "name"), "lead %s is given twice", l.GetName())
		}
		if !slices.Contains(standardLeads(), l.GetName()) {
			return nil, apierr.Invalid(at(i, "name"), "%q is not one of the 12 standard leads", l.GetName())
		}
		byName[l.GetName()] = l
	}
	var missing []string
	for _, name := range standardLeads() {
		if byName[name] == nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		field := strings.TrimSuffix(at(0, ""), "[0].")
		return nil, apierr.Invalid(field, "a 12-lead ECG needs every standard lead; missing: %s", strings.Join(missing, ", "))
	}
	first := w.GetLeads()[0]
	rate, count := first.GetSampleRateHz(), len(first.GetSamples())
	for i, l := range w.GetLeads() {
		switch {
		case l.GetSampleRateHz() < minSampleRate || l.GetSampleRateHz() > maxSampleRate:
			return nil, apierr.Invalid(at(i, "sample_rate_hz"), "%g Hz is not an ECG sampling rate (%d to %d Hz)", l.GetSampleRateHz(), minSampleRate, maxSampleRate)
		case l.GetSampleRateHz() != rate:
			return nil, apierr.Invalid(at(i, "sample_rate_hz"), "lead %s is sampled at %g Hz, lead %s at %g Hz", l.GetName(), l.GetSampleRateHz(), first.GetName(), rate)
		case l.GetMicrovoltsPerUnit() <= 0 || l.GetMicrovoltsPerUnit() > maxMicrovoltsPerUnit:
			return nil, apierr.Invalid(at(i, "microvolts_per_unit"), "%g µV per unit is not plausible (above 0, at most %d)", l.GetMicrovoltsPerUnit(), maxMicrovoltsPerUnit)
		case len(l.GetSamples()) == 0:
			return nil, apierr.Invalid(at(i, "samples"), "lead %s has no samples", l.GetName())
		case len(l.GetSamples()) != count:
			return nil, apierr.Invalid(at(i, "samples"), "lead %s has %d samples, lead %s %d", l.GetName(), len(l.GetSamples()), first.GetName(), count)
		}
	}
	if seconds := float64(count) / rate; seconds < minSeconds || seconds > maxSeconds {
		return nil, apierr.Invalid(at(0, "samples"), "the recording lasts %.1f s; a resting ECG lasts %d to %d s", seconds, minSeconds, maxSeconds)
	}
	out := &typev1.EcgWaveform{}
	for _, name := range standardLeads() {
		out.Leads = append(out.Leads, byName[name])
	}
	return out, nil
}
