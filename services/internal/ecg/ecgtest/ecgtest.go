// Package ecgtest makes ECGs for tests: synthetic 12-lead recordings of a
// known heart rate, with noise and baseline wander, and DICOM 12-lead ECG
// waveform files of them in either little endian transfer syntax.
package ecgtest

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// Synthetic describes a synthetic resting ECG.
type Synthetic struct {
	// HeartRate is the mean rate in beats per minute.
	HeartRate float64
	// Seconds is the recording's length.
	Seconds float64
	// SampleRate is in Hz.
	SampleRate float64
	// NoiseMV is the standard deviation of white noise, in mV.
	NoiseMV float64
	// WanderMV is the amplitude of the baseline wander (breathing and
	// electrode drift), in mV.
	WanderMV float64
	// Variability is the relative beat-to-beat change of the RR interval
	// (0.03 is 3%); the mean stays 60/HeartRate seconds.
	Variability float64
	// Seed makes the noise and variability repeatable.
	Seed uint64
}

// MicrovoltsPerUnit is the resolution the synthetic recordings are
// quantized to, a common one of ECG carts.
const MicrovoltsPerUnit = 2.5

// wave is one Gaussian component of a beat: its amplitude in mV, its
// centre relative to the R peak in seconds, and its width.
type wave struct{ amplitude, center, width float64 }

// lead is how a lead sees the beat: multipliers of the P wave, the QRS
// complex and the T wave.
type lead struct {
	name       string
	p, qrs, tw float64
}

// leads are a normal axis's projections on the 12 leads.
func leads() []lead {
	return []lead{
		{"I", 0.6, 0.6, 0.6}, {"II", 1, 1, 1}, {"III", 0.4, 0.4, 0.4},
		{"aVR", -0.8, -0.8, -0.8}, {"aVL", 0.1, 0.1, 0.2}, {"aVF", 0.7, 0.7, 0.7},
		{"V1", 0.3, -0.6, -0.2}, {"V2", 0.4, 0.8, 0.6}, {"V3", 0.4, 1.1, 0.8},
		{"V4", 0.4, 1.4, 0.8}, {"V5", 0.4, 1.2, 0.7}, {"V6", 0.4, 0.9, 0.5},
	}
}

// Beats returns the R peak times of the recording, in seconds.
func (s Synthetic) Beats() []float64 {
	rng := rand.New(rand.NewPCG(s.Seed, 0x5eed))
	mean := 60 / s.HeartRate
	var rr []float64
	total := 0.0
	for total < s.Seconds+2*mean {
		d := mean * (1 + s.Variability*(2*rng.Float64()-1))
		rr = append(rr, d)
		total += d
	}
	// The intervals are rescaled so their mean is exactly the rate's.
	scale := mean * float64(len(rr)) / total
	var out []float64
	for t, i := 0.3*mean, 0; t < s.Seconds && i < len(rr); i++ {
		out = append(out, t)
		t += rr[i] * scale
	}
	return out
}

// Waveform returns the recording as sampled data.
func (s Synthetic) Waveform() *typev1.EcgWaveform {
	rng := rand.New(rand.NewPCG(s.Seed, 0x4015e))
	n := int(s.Seconds * s.SampleRate)
	beats := s.Beats()
	rr := 60 / s.HeartRate
	// The QT interval shortens with the rate (Bazett), and the PR a little.
	qt := 0.4 * math.Sqrt(rr)
	p := []wave{{0.15, -0.16 * math.Sqrt(rr), 0.025}}
	qrs := []wave{{-0.1, -0.03, 0.008}, {1.2, 0, 0.01}, {-0.25, 0.03, 0.01}}
	t := []wave{{0.3, qt - 0.1, 0.05}}
	w := &typev1.EcgWaveform{}
	for _, l := range leads() {
		mv := make([]float64, n)
		for _, b := range beats {
			from, to := max(int((b-0.5)*s.SampleRate), 0), min(int((b+0.8)*s.SampleRate), n)
			for i := from; i < to; i++ {
				d := float64(i)/s.SampleRate - b
				mv[i] += l.p*sum(p, d) + l.qrs*sum(qrs, d) + l.tw*sum(t, d)
			}
		}
		samples := make([]int32, n)
		for i := range samples {
			at := float64(i) / s.SampleRate
			v := mv[i] + s.WanderMV*(math.Sin(2*math.Pi*0.25*at)+0.5*math.Sin(2*math.Pi*0.07*at+1))
			v += 0.02*math.Sin(2*math.Pi*50*at) + s.NoiseMV*rng.NormFloat64()
			samples[i] = int32(math.Round(v * 1000 / MicrovoltsPerUnit))
		}
		w.Leads = append(w.Leads, &typev1.EcgLead{Name: l.name, SampleRateHz: s.SampleRate, MicrovoltsPerUnit: MicrovoltsPerUnit, Samples: samples})
	}
	return w
}

func sum(waves []wave, d float64) float64 {
	v := 0.0
	for _, w := range waves {
		x := (d - w.center) / w.width
		v += w.amplitude * math.Exp(-x*x/2)
	}
	return v
}

// Normal is a 10-second recording at 500 Hz of a given rate with the
// noise and wander of an ordinary township recording.
func Normal(heartRate float64) *typev1.EcgWaveform {
	return Synthetic{HeartRate: heartRate, Seconds: 10, SampleRate: 500, NoiseMV: 0.03, WanderMV: 0.3, Variability: 0.03, Seed: 1}.Waveform()
}

// The UIDs of the files: a 12-lead ECG object in a Part 10 file.
const (
	twelveLeadECG   = "1.2.840.10008.5.1.4.1.1.9.1.1"
	implicitLE      = "1.2.840.10008.1.2"
	explicitLE      = "1.2.840.10008.1.2.1"
	implementation  = "2.25.173498431975329183541262981349587013"
	mdcScheme       = "MDC"
	sensitivityUnit = "uV"
)

// leadCodes are the MDC codes of the leads (DICOM CID 3001).
func leadCodes() map[string]string {
	return map[string]string{
		"I": "2:1", "II": "2:2", "V1": "2:3", "V2": "2:4", "V3": "2:5", "V4": "2:6", "V5": "2:7", "V6": "2:8",
		"III": "2:61", "aVR": "2:62", "aVL": "2:63", "aVF": "2:64",
	}
}

// DICOM returns a Part 10 file of a 12-lead ECG waveform object holding w,
// whose leads must share one rate and length and whose samples must fit
// in 16 bits. Explicit chooses explicit VR little endian (with sequences
// of undefined length); otherwise implicit VR little endian (with defined
// lengths), so a test exercises both encodings of both.
func DICOM(w *typev1.EcgWaveform, sopInstanceUID string, explicit bool) []byte {
	e := encoder{explicit: explicit}
	var channels [][]byte
	for _, l := range w.GetLeads() {
		source := e.item(e.str(0x00080100, "SH", leadCodes()[l.GetName()]) + e.str(0x00080102, "SH", mdcScheme) + e.str(0x00080104, "LO", "Lead "+l.GetName()))
		units := e.item(e.str(0x00080100, "SH", sensitivityUnit) + e.str(0x00080102, "SH", "UCUM") + e.str(0x00080104, "LO", "microvolt"))
		channels = append(channels, []byte(e.item(
			e.seq(0x003A0208, source)+
				e.str(0x003A0210, "DS", strconv.FormatFloat(l.GetMicrovoltsPerUnit(), 'f', -1, 64))+
				e.seq(0x003A0211, units)+
				e.str(0x003A0212, "DS", "1")+
				e.str(0x003A0213, "DS", "0")+
				e.u16(0x003A021A, 16))))
	}
	first := w.GetLeads()[0]
	n := len(first.GetSamples())
	data := make([]byte, 0, 2*n*len(w.GetLeads()))
	for s := range n {
		for _, l := range w.GetLeads() {
			data = binary.LittleEndian.AppendUint16(data, uint16(int16(l.GetSamples()[s])))
		}
	}
	group := e.item(
		e.u16(0x003A0005, uint16(len(w.GetLeads()))) +
			e.u32(0x003A0010, uint32(n)) +
			e.str(0x003A001A, "DS", strconv.FormatFloat(first.GetSampleRateHz(), 'f', -1, 64)) +
			e.seq(0x003A0200, string(bytes.Join(channels, nil))) +
			e.u16(0x54001004, 16) +
			e.str(0x54001006, "CS", "SS") +
			e.raw(0x54001010, "OW", data))
	dataset := e.str(0x00080016, "UI", twelveLeadECG) + e.str(0x00080018, "UI", sopInstanceUID) +
		e.str(0x00080060, "CS", "ECG") + e.str(0x00100010, "PN", "TEST^PATIENT") + e.str(0x00100020, "LO", "T0001") +
		e.seq(0x54000100, group)

	syntax := implicitLE
	if explicit {
		syntax = explicitLE
	}
	meta := encoder{explicit: true}
	info := meta.raw(0x00020001, "OB", []byte{0, 1}) + meta.str(0x00020002, "UI", twelveLeadECG) +
		meta.str(0x00020003, "UI", sopInstanceUID) + meta.str(0x00020010, "UI", syntax) + meta.str(0x00020012, "UI", implementation)
	out := make([]byte, 128, 128+4+len(info)+len(dataset)+12)
	out = append(out, "DICM"...)
	out = append(out, meta.u32(0x00020000, uint32(len(info)))...)
	out = append(out, info...)
	return append(out, dataset...)
}

// encoder writes DICOM elements in little endian, with explicit or
// implicit VRs.
type encoder struct{ explicit bool }

func (e encoder) header(tag uint32, vr string, length uint32) string {
	var b []byte
	b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
	b = binary.LittleEndian.AppendUint16(b, uint16(tag))
	if !e.explicit {
		return string(binary.LittleEndian.AppendUint32(b, length))
	}
	b = append(b, vr...)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, length)
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(length))
	}
	return string(b)
}

func (e encoder) raw(tag uint32, vr string, value []byte) string {
	return e.header(tag, vr, uint32(len(value))) + string(value)
}

// str writes a string value padded to an even length (UIDs with NUL).
func (e encoder) str(tag uint32, vr, value string) string {
	if len(value)%2 == 1 {
		if vr == "UI" {
			value += "\x00"
		} else {
			value += " "
		}
	}
	return e.raw(tag, vr, []byte(value))
}

func (e encoder) u16(tag uint32, v uint16) string {
	return e.raw(tag, "US", binary.LittleEndian.AppendUint16(nil, v))
}

func (e encoder) u32(tag uint32, v uint32) string {
	return e.raw(tag, "UL", binary.LittleEndian.AppendUint32(nil, v))
}

// item wraps a data set as a sequence item: of undefined length with a
// delimiter in explicit files, of defined length in implicit ones.
func (e encoder) item(content string) string {
	tag := string([]byte{0xFE, 0xFF, 0x00, 0xE0})
	if e.explicit {
		return tag + "\xff\xff\xff\xff" + content + "\xfe\xff\x0d\xe0\x00\x00\x00\x00"
	}
	return tag + string(binary.LittleEndian.AppendUint32(nil, uint32(len(content)))) + content
}

// seq writes a sequence of items, like item.
func (e encoder) seq(tag uint32, items string) string {
	if e.explicit {
		return e.header(tag, "SQ", 0xFFFFFFFF) + items + "\xfe\xff\xdd\xe0\x00\x00\x00\x00"
	}
	return e.header(tag, "SQ", uint32(len(items))) + items
}
