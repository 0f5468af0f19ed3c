// Package hl7 reads and writes HL7 version 2 messages (ER7, the "pipe and
// hat" encoding) as analyzers and LIS systems send them: segments, fields,
// repetitions, components, subcomponents and escape sequences, with
// segments ended by CR, LF or CRLF.
//
// Values are unescaped when parsed and escaped when encoded, so a Message
// holds the text a human would read.
package hl7

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrMalformed reports a message that cannot be parsed. Errors of Parse
// wrap it.
var ErrMalformed = errors.New("malformed HL7 message")

// Delimiters are the message's encoding characters, from MSH-1 and MSH-2.
type Delimiters struct {
	Field, Component, Repetition, Escape, Subcomponent byte
}

// Standard are the delimiters almost every sender uses: | ^ ~ \ &.
var Standard = Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}

// encoding is MSH-2 for d.
func (d Delimiters) encoding() string {
	return string([]byte{d.Component, d.Repetition, d.Escape, d.Subcomponent})
}

// Component is one component: its subcomponents.
type Component []string

// Repetition is one repetition of a field: its components.
type Repetition []Component

// Field is one field: its repetitions. An empty field has none.
type Field []Repetition

// Segment is one segment: its name and its fields, Fields[0] being field 1.
// In MSH, field 1 is the field separator and field 2 the encoding
// characters, both kept verbatim.
type Segment struct {
	Name   string
	Fields []Field
}

// Message is a parsed message.
type Message struct {
	Delimiters Delimiters
	Segments   []*Segment
}

// maxSegments bounds the work one message can cause.
const maxSegments = 10000

// Parse parses a message. It must start with an MSH segment; segments end
// with CR, LF or CRLF, and empty lines are ignored.
func Parse(raw []byte) (*Message, error) {
	raw = bytes.TrimLeft(raw, "\r\n")
	if len(raw) < 8 || string(raw[:3]) != "MSH" {
		return nil, fmt.Errorf("%w: it does not start with an MSH segment and its encoding characters", ErrMalformed)
	}
	d := Delimiters{Field: raw[3], Component: raw[4], Repetition: raw[5], Escape: raw[6], Subcomponent: raw[7]}
	if err := d.check(); err != nil {
		return nil, err
	}
	m := &Message{Delimiters: d}
	for line := range bytes.FieldsFuncSeq(raw, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if len(m.Segments) == maxSegments {
			return nil, fmt.Errorf("%w: more than %d segments", ErrMalformed, maxSegments)
		}
		seg, err := d.parseSegment(string(line), len(m.Segments) == 0)
		if err != nil {
			return nil, err
		}
		m.Segments = append(m.Segments, seg)
	}
	return m, nil
}

func (d Delimiters) check() error {
	chars := []byte{d.Field, d.Component, d.Repetition, d.Escape, d.Subcomponent}
	for i, c := range chars {
		isAlnum := c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
		if isAlnum || c == '\r' || c == '\n' || c == ' ' || c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: invalid encoding character %q", ErrMalformed, c)
		}
		if bytes.IndexByte(chars[i+1:], c) >= 0 {
			return fmt.Errorf("%w: encoding character %q is used twice", ErrMalformed, c)
		}
	}
	return nil
}

func (d Delimiters) parseSegment(line string, first bool) (*Segment, error) {
	name, rest, _ := strings.Cut(line, string(d.Field))
	if !validName(name) {
		return nil, fmt.Errorf("%w: invalid segment name %q", ErrMalformed, truncate(name))
	}
	if first != (name == "MSH") {
		return nil, fmt.Errorf("%w: MSH must be the first segment and only the first", ErrMalformed)
	}
	seg := &Segment{Name: name}
	if name == "MSH" {
		enc, after, _ := strings.Cut(rest, string(d.Field))
		if len(enc) < 4 || enc[:4] != d.encoding() {
			return nil, fmt.Errorf("%w: MSH-2 is not the encoding characters", ErrMalformed)
		}
		seg.Fields = append(seg.Fields, literal(string(d.Field)), literal(enc))
		if !strings.Contains(rest, string(d.Field)) {
			return seg, nil
		}
		rest = after
	} else if !strings.Contains(line, string(d.Field)) {
		return seg, nil
	}
	for raw := range strings.SplitSeq(rest, string(d.Field)) {
		f, err := d.parseField(raw)
		if err != nil {
			return nil, fmt.Errorf("%s-%d: %w", name, len(seg.Fields)+1, err)
		}
		seg.Fields = append(seg.Fields, f)
	}
	return seg, nil
}

func literal(s string) Field { return Field{{{s}}} }

func validName(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func (d Delimiters) parseField(raw string) (Field, error) {
	if raw == "" {
		return nil, nil
	}
	var f Field
	for rep := range strings.SplitSeq(raw, string(d.Repetition)) {
		var r Repetition
		for comp := range strings.SplitSeq(rep, string(d.Component)) {
			var c Component
			for sub := range strings.SplitSeq(comp, string(d.Subcomponent)) {
				v, err := d.UnescapeValue(sub)
				if err != nil {
					return nil, err
				}
				c = append(c, v)
			}
			r = append(r, c)
		}
		f = append(f, r)
	}
	return f, nil
}

// UnescapeValue replaces the escape sequences of s: \F\ \S\ \T\ \R\ \E\ for the
// delimiters, \Xhh..\ for bytes, and \.br\ for a line break. Other
// sequences (formatting, character sets) are kept as they are.
func (d Delimiters) UnescapeValue(s string) (string, error) {
	esc := string(d.Escape)
	if !strings.Contains(s, esc) {
		return s, nil
	}
	var b strings.Builder
	for {
		before, after, found := strings.Cut(s, esc)
		b.WriteString(before)
		if !found {
			return b.String(), nil
		}
		seq, rest, closed := strings.Cut(after, esc)
		if !closed {
			return "", fmt.Errorf("%w: unterminated escape sequence", ErrMalformed)
		}
		switch {
		case seq == "F":
			b.WriteByte(d.Field)
		case seq == "S":
			b.WriteByte(d.Component)
		case seq == "T":
			b.WriteByte(d.Subcomponent)
		case seq == "R":
			b.WriteByte(d.Repetition)
		case seq == "E":
			b.WriteByte(d.Escape)
		case seq == ".br":
			b.WriteByte('\n')
		case strings.HasPrefix(seq, "X") && len(seq) > 1 && len(seq)%2 == 1:
			for i := 1; i < len(seq); i += 2 {
				v, err := strconv.ParseUint(seq[i:i+2], 16, 8)
				if err != nil {
					return "", fmt.Errorf("%w: bad hexadecimal escape %q", ErrMalformed, truncate(seq))
				}
				b.WriteByte(byte(v))
			}
		default:
			b.WriteString(esc + seq + esc)
		}
		s = rest
	}
}

// EscapeValue escapes the delimiters and line breaks in s, so that UnescapeValue
// returns s.
func (d Delimiters) EscapeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case d.Field:
			b.WriteString(string(d.Escape) + "F" + string(d.Escape))
		case d.Component:
			b.WriteString(string(d.Escape) + "S" + string(d.Escape))
		case d.Subcomponent:
			b.WriteString(string(d.Escape) + "T" + string(d.Escape))
		case d.Repetition:
			b.WriteString(string(d.Escape) + "R" + string(d.Escape))
		case d.Escape:
			b.WriteString(string(d.Escape) + "E" + string(d.Escape))
		case '\r', '\n':
			fmt.Fprintf(&b, "%cX%02X%c", d.Escape, c, d.Escape)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Encode writes the message with its delimiters, segments ended by CR.
func (m *Message) Encode() []byte {
	d := m.Delimiters
	var b bytes.Buffer
	for _, seg := range m.Segments {
		b.WriteString(seg.Name)
		fields := seg.Fields
		if seg.Name == "MSH" {
			enc := d.encoding()
			if len(fields) > 1 {
				enc = fields[1].Value()
			}
			b.WriteByte(d.Field)
			b.WriteString(enc)
			fields = fields[min(2, len(fields)):]
		}
		for _, f := range fields {
			b.WriteByte(d.Field)
			d.encodeField(&b, f)
		}
		b.WriteByte('\r')
	}
	return b.Bytes()
}

func (d Delimiters) encodeField(b *bytes.Buffer, f Field) {
	for i, r := range f {
		if i > 0 {
			b.WriteByte(d.Repetition)
		}
		for j, c := range r {
			if j > 0 {
				b.WriteByte(d.Component)
			}
			for k, sub := range c {
				if k > 0 {
					b.WriteByte(d.Subcomponent)
				}
				b.WriteString(d.EscapeValue(sub))
			}
		}
	}
}

// Get returns the first subcomponent of a component of the first
// repetition of a field, all 1-based as in HL7 (OBX-6.1 is Get(6, 1)), or ""
// when it is absent.
func (s *Segment) Get(field, component int) string {
	return s.Field(field).Component(1, component)
}

// Field returns field n (1-based), or an empty field.
func (s *Segment) Field(n int) Field {
	if s == nil || n < 1 || n > len(s.Fields) {
		return nil
	}
	return s.Fields[n-1]
}

// Component returns the first subcomponent of component c of repetition r,
// both 1-based, or "".
func (f Field) Component(r, c int) string {
	if r < 1 || r > len(f) || c < 1 || c > len(f[r-1]) || len(f[r-1][c-1]) == 0 {
		return ""
	}
	return f[r-1][c-1][0]
}

// Value is the field's first component, the whole value of a simple field.
func (f Field) Value() string { return f.Component(1, 1) }

// Text returns the first repetition with its components joined by the
// component separator of d, as an HL7 reader would show it ("ORU^R01").
func (f Field) Text(d Delimiters) string {
	if len(f) == 0 {
		return ""
	}
	parts := make([]string, len(f[0]))
	for i, c := range f[0] {
		parts[i] = strings.Join(c, string(d.Subcomponent))
	}
	return strings.TrimRight(strings.Join(parts, string(d.Component)), string(d.Component))
}

// Segment returns the first segment named name, or nil.
func (m *Message) Segment(name string) *Segment {
	for _, s := range m.Segments {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// NewField returns a field of one repetition with the given components.
func NewField(components ...string) Field {
	r := make(Repetition, len(components))
	for i, c := range components {
		r[i] = Component{c}
	}
	return Field{r}
}

func truncate(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}
