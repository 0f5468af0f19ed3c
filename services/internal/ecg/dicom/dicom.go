// Package dicom reads DICOM 12-lead ECG waveform objects (PS3.3 A.34.3)
// from Part 10 files (PS3.10): the 128-byte preamble, "DICM", the file meta
// information in explicit VR little endian, then the data set in explicit
// or implicit VR little endian (PS3.5 §7).
//
// No DICOM library is available here, so the reader is ours. It reads only
// what a waveform needs and skips everything else by its length; every
// length is checked against the bytes that remain, so a corrupt or hostile
// file is an error, never a panic or a large allocation. It depends on
// nothing but the standard library, so its fuzz target runs fast.
package dicom

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// UIDs the reader knows.
const (
	// TwelveLeadECG is the SOP class of a 12-lead ECG waveform.
	TwelveLeadECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
	// ImplicitVRLittleEndian and ExplicitVRLittleEndian are the transfer
	// syntaxes the reader accepts.
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
)

// tag is a DICOM attribute tag, group << 16 | element.
type tag uint32

// The attributes the reader uses (PS3.6).
const (
	tagMetaGroupLength    tag = 0x00020000
	tagTransferSyntax     tag = 0x00020010
	tagSOPClassUID        tag = 0x00080016
	tagSOPInstanceUID     tag = 0x00080018
	tagCodeValue          tag = 0x00080100
	tagCodeMeaning        tag = 0x00080104
	tagChannels           tag = 0x003A0005
	tagSamples            tag = 0x003A0010
	tagSamplingFrequency  tag = 0x003A001A
	tagChannelDefinitions tag = 0x003A0200
	tagChannelSource      tag = 0x003A0208
	tagSensitivity        tag = 0x003A0210
	tagSensitivityUnits   tag = 0x003A0211
	tagSensitivityFactor  tag = 0x003A0212
	tagBaseline           tag = 0x003A0213
	tagWaveformSequence   tag = 0x54000100
	tagBitsAllocated      tag = 0x54001004
	tagSampleInterp       tag = 0x54001006
	tagWaveformData       tag = 0x54001010
	tagItem               tag = 0xFFFEE000
	tagItemEnd            tag = 0xFFFEE00D
	tagSequenceEnd        tag = 0xFFFEE0DD
)

// implicitVR is the VR of the attributes the reader uses, for the implicit
// VR transfer syntax, where the file does not say it. Any other attribute
// is skipped by its length (or read as a sequence when its length is
// undefined, as PS3.5 §6.2.2 requires of unknown ones).
func implicitVR(t tag) string {
	switch t {
	case tagChannelDefinitions, tagChannelSource, tagSensitivityUnits, tagWaveformSequence:
		return "SQ"
	case tagChannels, tagBitsAllocated:
		return "US"
	case tagSamples:
		return "UL"
	case tagSamplingFrequency, tagSensitivity, tagSensitivityFactor, tagBaseline:
		return "DS"
	case tagWaveformData:
		return "OW"
	}
	return "UN"
}

// Bounds that keep a hostile file cheap.
const (
	maxDepth    = 8
	maxElements = 100000
	// undefinedLength marks a sequence or item ended by a delimiter.
	undefinedLength = 0xFFFFFFFF
)

// ErrNotDICOM reports data that is not a DICOM Part 10 file. Every error
// of ReadECG wraps ErrCorrupt, this, or ErrUnsupported.
var (
	ErrNotDICOM    = errors.New("not a DICOM Part 10 file")
	ErrCorrupt     = errors.New("corrupt DICOM file")
	ErrUnsupported = errors.New("unsupported DICOM file")
)

// element is one attribute: its VR, its value bytes, or its items.
type element struct {
	vr    string
	value []byte
	items []dataset
}

// dataset is the attributes of a data set or sequence item, by tag.
type dataset map[tag]*element

// reader walks the bytes of a data set.
type reader struct {
	data     []byte
	pos      int
	explicit bool
	count    int
}

func (r *reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrCorrupt, r.pos, fmt.Sprintf(format, args...))
}

func (r *reader) u16() (uint16, error) {
	if len(r.data)-r.pos < 2 {
		return 0, r.corrupt("truncated")
	}
	v := binary.LittleEndian.Uint16(r.data[r.pos:])
	r.pos += 2
	return v, nil
}

func (r *reader) u32() (uint32, error) {
	if len(r.data)-r.pos < 4 {
		return 0, r.corrupt("truncated")
	}
	v := binary.LittleEndian.Uint32(r.data[r.pos:])
	r.pos += 4
	return v, nil
}

func (r *reader) tag() (tag, error) {
	g, err := r.u16()
	if err != nil {
		return 0, err
	}
	e, err := r.u16()
	return tag(uint32(g)<<16 | uint32(e)), err
}

// take returns the next n bytes.
func (r *reader) take(n uint32) ([]byte, error) {
	if uint64(n) > uint64(len(r.data)-r.pos) {
		return nil, r.corrupt("a length of %d bytes runs past the end", n)
	}
	b := r.data[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

// longLength reports whether an explicit VR has a 4-byte length (PS3.5
// Table 7.1-1).
func longLength(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

// header reads an element's tag, VR and length.
func (r *reader) header() (tag, string, uint32, error) {
	t, err := r.tag()
	if err != nil {
		return 0, "", 0, err
	}
	if t>>16 == 0xFFFE || !r.explicit {
		n, err := r.u32()
		return t, implicitVR(t), n, err
	}
	vrBytes, err := r.take(2)
	if err != nil {
		return 0, "", 0, err
	}
	vr := string(vrBytes)
	if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
		return 0, "", 0, r.corrupt("no VR for tag %08X", uint32(t))
	}
	if !longLength(vr) {
		n, err := r.u16()
		return t, vr, uint32(n), err
	}
	if _, err := r.take(2); err != nil {
		return 0, "", 0, err
	}
	n, err := r.u32()
	return t, vr, n, err
}

// readDataset reads elements until end bytes are read (a defined length)
// or, with end < 0, until the item delimiter.
func (r *reader) readDataset(end int, depth int) (dataset, error) {
	if depth > maxDepth {
		return nil, r.corrupt("sequences nested deeper than %d", maxDepth)
	}
	ds := dataset{}
	for end < 0 || r.pos < end {
		if r.count++; r.count > maxElements {
			return nil, r.corrupt("more than %d elements", maxElements)
		}
		t, vr, n, err := r.header()
		if err != nil {
			return nil, err
		}
		if t == tagItemEnd {
			if end >= 0 {
				return nil, r.corrupt("an item delimiter in an item of defined length")
			}
			return ds, nil
		}
		el := &element{vr: vr}
		if vr == "SQ" || n == undefinedLength {
			if el.items, err = r.readSequence(n, depth+1); err != nil {
				return nil, err
			}
		} else if el.value, err = r.take(n); err != nil {
			return nil, err
		}
		ds[t] = el
	}
	if r.pos != end {
		return nil, r.corrupt("an item runs past its length")
	}
	return ds, nil
}

// readSequence reads a sequence's items, of defined or undefined length.
func (r *reader) readSequence(n uint32, depth int) ([]dataset, error) {
	end := -1
	if n != undefinedLength {
		if uint64(n) > uint64(len(r.data)-r.pos) {
			return nil, r.corrupt("a sequence of %d bytes runs past the end", n)
		}
		end = r.pos + int(n)
	}
	var items []dataset
	for end < 0 || r.pos < end {
		t, err := r.tag()
		if err != nil {
			return nil, err
		}
		length, err := r.u32()
		if err != nil {
			return nil, err
		}
		switch t {
		case tagSequenceEnd:
			if end >= 0 {
				return nil, r.corrupt("a sequence delimiter in a sequence of defined length")
			}
			return items, nil
		case tagItem:
		default:
			return nil, r.corrupt("tag %08X where a sequence item was expected", uint32(t))
		}
		itemEnd := -1
		if length != undefinedLength {
			if uint64(length) > uint64(len(r.data)-r.pos) {
				return nil, r.corrupt("an item of %d bytes runs past the end", length)
			}
			itemEnd = r.pos + int(length)
		}
		item, err := r.readDataset(itemEnd, depth)
		if err != nil {
			return nil, err
		}
		items = append(items, item)
	}
	if r.pos != end {
		return nil, r.corrupt("a sequence runs past its length")
	}
	return items, nil
}

// text returns a string attribute without its padding.
func (ds dataset) text(t tag) string {
	el := ds[t]
	if el == nil {
		return ""
	}
	return strings.TrimRight(string(el.value), "\x00 ")
}

// decimal returns the first value of a DS attribute.
func (ds dataset) decimal(t tag) (float64, bool) {
	s, _, _ := strings.Cut(ds.text(t), `\`)
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return v, err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)
}

// unsigned returns a US or UL attribute.
func (ds dataset) unsigned(t tag) (uint32, bool) {
	el := ds[t]
	switch {
	case el == nil:
		return 0, false
	case len(el.value) == 2:
		return uint32(binary.LittleEndian.Uint16(el.value)), true
	case len(el.value) == 4:
		return binary.LittleEndian.Uint32(el.value), true
	}
	return 0, false
}

// first returns the first item of a sequence attribute.
func (ds dataset) first(t tag) dataset {
	if el := ds[t]; el != nil && len(el.items) > 0 {
		return el.items[0]
	}
	return nil
}

// parseFile reads a Part 10 file into its data set.
func parseFile(data []byte) (dataset, error) {
	if len(data) < 132 || !bytes.Equal(data[128:132], []byte("DICM")) {
		return nil, ErrNotDICOM
	}
	meta := &reader{data: data, pos: 132, explicit: true}
	t, _, n, err := meta.header()
	if err != nil || t != tagMetaGroupLength || n != 4 {
		return nil, fmt.Errorf("%w: the file meta information has no group length", ErrCorrupt)
	}
	length, err := meta.u32()
	if err != nil || uint64(length) > uint64(len(data)-meta.pos) {
		return nil, fmt.Errorf("%w: the file meta information runs past the end", ErrCorrupt)
	}
	info, err := meta.readDataset(meta.pos+int(length), 0)
	if err != nil {
		return nil, err
	}
	r := &reader{data: data, pos: meta.pos, count: meta.count}
	switch syntax := info.text(tagTransferSyntax); syntax {
	case ExplicitVRLittleEndian:
		r.explicit = true
	case ImplicitVRLittleEndian:
	default:
		return nil, fmt.Errorf("%w: transfer syntax %q (only explicit and implicit VR little endian)", ErrUnsupported, syntax)
	}
	return r.readDataset(len(data), 0)
}

// Lead is one lead of an ECG as sampled data.
type Lead struct {
	// Name is the lead: I, II, III, aVR, aVL, aVF, V1 to V6.
	Name string
	// SampleRateHz is the sampling rate.
	SampleRateHz float64
	// MicrovoltsPerUnit is the value of one sample unit in µV.
	MicrovoltsPerUnit float64
	// Samples are the samples, in units, baseline applied.
	Samples []int32
}

// ECG is what ReadECG found in a file.
type ECG struct {
	// SOPInstanceUID is the object's UID.
	SOPInstanceUID string
	// Leads are the rhythm waveform's channels, in the file's order.
	Leads []Lead
}

// ReadECG reads the rhythm waveform of a 12-lead ECG object: the first
// multiplex group of the waveform sequence, 16-bit signed samples
// interleaved by channel, each channel with its lead and sensitivity.
func ReadECG(data []byte) (*ECG, error) {
	ds, err := parseFile(data)
	if err != nil {
		return nil, err
	}
	if class := ds.text(tagSOPClassUID); class != TwelveLeadECG {
		return nil, fmt.Errorf("%w: SOP class %q is not 12-lead ECG (%s)", ErrUnsupported, class, TwelveLeadECG)
	}
	group := ds.first(tagWaveformSequence)
	if group == nil {
		return nil, fmt.Errorf("%w: no waveform sequence", ErrCorrupt)
	}
	channels, ok1 := group.unsigned(tagChannels)
	samples, ok2 := group.unsigned(tagSamples)
	rate, ok3 := group.decimal(tagSamplingFrequency)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("%w: the waveform lacks its channel count, sample count or sampling frequency", ErrCorrupt)
	}
	if bits, _ := group.unsigned(tagBitsAllocated); bits != 16 || group.text(tagSampleInterp) != "SS" {
		return nil, fmt.Errorf("%w: samples must be 16-bit signed (SS)", ErrUnsupported)
	}
	var defs []dataset
	if el := group[tagChannelDefinitions]; el != nil {
		defs = el.items
	}
	if uint32(len(defs)) != channels {
		return nil, fmt.Errorf("%w: %d channels but %d channel definitions", ErrCorrupt, channels, len(defs))
	}
	raw := group[tagWaveformData]
	if raw == nil || uint64(len(raw.value)) != uint64(channels)*uint64(samples)*2 {
		return nil, fmt.Errorf("%w: the waveform data is not %d channels of %d 16-bit samples", ErrCorrupt, channels, samples)
	}
	out := &ECG{SOPInstanceUID: ds.text(tagSOPInstanceUID)}
	for ch, def := range defs {
		lead, baseline, err := channel(def, ch, rate)
		if err != nil {
			return nil, err
		}
		lead.Samples = make([]int32, samples)
		for s := range lead.Samples {
			i := (s*int(channels) + ch) * 2
			lead.Samples[s] = int32(int16(binary.LittleEndian.Uint16(raw.value[i:]))) + baseline
		}
		out.Leads = append(out.Leads, lead)
	}
	return out, nil
}

// channel reads one channel definition: the lead from its source code,
// the µV per unit from its sensitivity, unit and correction factor, and
// the baseline in sample units to add to its samples.
func channel(def dataset, ch int, rate float64) (Lead, int32, error) {
	src := def.first(tagChannelSource)
	name, ok := leadName(src.text(tagCodeValue), src.text(tagCodeMeaning))
	if !ok {
		return Lead{}, 0, fmt.Errorf("%w: channel %d is not a standard lead (%q, %q)", ErrUnsupported, ch+1, src.text(tagCodeValue), src.text(tagCodeMeaning))
	}
	sensitivity, ok := def.decimal(tagSensitivity)
	if !ok || sensitivity <= 0 {
		return Lead{}, 0, fmt.Errorf("%w: channel %d has no positive sensitivity", ErrCorrupt, ch+1)
	}
	factor, ok := def.decimal(tagSensitivityFactor)
	if !ok {
		factor = 1
	}
	unit := def.first(tagSensitivityUnits).text(tagCodeValue)
	microvolts, ok := map[string]float64{"uV": 1, "mV": 1000, "V": 1e6}[unit]
	if !ok {
		return Lead{}, 0, fmt.Errorf("%w: channel %d sensitivity unit %q (uV, mV or V)", ErrUnsupported, ch+1, unit)
	}
	perUnit := sensitivity * factor * microvolts
	lead := Lead{Name: name, SampleRateHz: rate, MicrovoltsPerUnit: perUnit}
	baseline, ok := def.decimal(tagBaseline)
	if !ok || baseline == 0 {
		return lead, 0, nil
	}
	units := math.Round(baseline * microvolts / perUnit)
	if math.Abs(units) > math.MaxInt16 {
		return Lead{}, 0, fmt.Errorf("%w: channel %d baseline is out of range", ErrCorrupt, ch+1)
	}
	return lead, int32(units), nil
}

// leadName maps a channel source code to a lead name. Both code schemes
// of the ECG leads context group (CID 3001) are known: the MDC "2:n" codes
// and the SCPECG "5.6.3-9-n" codes; else the code meaning ("Lead V1").
func leadName(code, meaning string) (string, bool) {
	number := ""
	if n, ok := strings.CutPrefix(code, "2:"); ok {
		number = n
	} else if n, ok := strings.CutPrefix(code, "5.6.3-9-"); ok {
		number = n
	}
	byNumber := map[string]string{
		"1": "I", "2": "II", "3": "V1", "4": "V2", "5": "V3", "6": "V4", "7": "V5", "8": "V6",
		"61": "III", "62": "aVR", "63": "aVL", "64": "aVF",
	}
	if name, ok := byNumber[number]; ok {
		return name, true
	}
	m := strings.TrimSpace(meaning)
	m = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(m, "Lead "), "lead "))
	for _, name := range []string{"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"} {
		if strings.EqualFold(m, name) {
			return name, true
		}
	}
	return "", false
}
