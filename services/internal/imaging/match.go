package imaging

import (
	"strings"
	"unicode"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
)

// mismatch says how a study's patient differs from the exam's directory
// patient, or "" when they match. The answer names what differs, never a
// value: it goes back to the caller and may be logged.
//
// A township's PACS names the patient by its own patient ID and name. The
// name must be the directory's (in any of the DICOM name's groups, so
// `BATEER^=巴特尔` is 巴特尔); where both have them, the birth date and
// sex must agree. A patient ID that is a resident ID number (as many
// township systems use) must be the patient's: its region, birth date,
// sex and last four characters are checked against the directory's masked
// number, which with the check character fixes the whole number.
func mismatch(p *directoryv1.Patient, s study) string {
	if rid := s.patientID; isResidentID(rid) {
		masked := p.GetResidentIdMasked()
		if len(masked) != 18 || rid[:6] != masked[:6] || rid[14:] != masked[14:] || rid[6:14] != compactDate(p.GetBirthDate()) {
			return "the PACS patient ID is another resident ID number"
		}
	}
	if s.patientName == "" {
		return "the study names no patient"
	}
	if !sameName(s.patientName, p.GetDisplayName()) {
		return "the names differ"
	}
	if s.birthDate != "" && p.GetBirthDate() != "" && s.birthDate != compactDate(p.GetBirthDate()) {
		return "the birth dates differ"
	}
	if sex := dicomSex(p.GetSex()); s.sex != "" && sex != "" && !strings.EqualFold(s.sex, sex) {
		return "the sexes differ"
	}
	return ""
}

// isResidentID reports whether id is an 18-character resident ID number
// with a valid check character.
func isResidentID(id string) bool {
	if len(id) != 18 {
		return false
	}
	for _, c := range id[:17] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return directory.WithCheckDigit(id[:17]) == strings.ToUpper(id)
}

// compactDate turns YYYY-MM-DD into the DICOM form YYYYMMDD.
func compactDate(d string) string { return strings.ReplaceAll(d, "-", "") }

func dicomSex(s typev1.Sex) string {
	switch s {
	case typev1.Sex_SEX_MALE:
		return "M"
	case typev1.Sex_SEX_FEMALE:
		return "F"
	}
	return ""
}

// sameName reports whether a DICOM person name names the directory's
// patient: any of its groups, without the component separators, spaces
// and dots (巴特尔·孟和), and ignoring case.
func sameName(pn, name string) bool {
	want := normalizeName(name)
	if want == "" {
		return false
	}
	for _, group := range strings.Split(pn, "=") {
		if normalizeName(group) == want {
			return true
		}
	}
	return false
}

func normalizeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '^' || r == '·' || r == '.' || r == '-' || unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, s)
}

// maskID hides the middle of a PACS patient ID for display, as the
// directory shows resident ID numbers.
func maskID(id string) string {
	n := len(id)
	switch {
	case n == 18:
		return id[:6] + strings.Repeat("*", 8) + id[14:]
	case n > 4:
		return id[:2] + strings.Repeat("*", n-4) + id[n-2:]
	default:
		return strings.Repeat("*", n)
	}
}
