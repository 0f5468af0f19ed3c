package imaging

import (
	"testing"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
)

func TestMismatch(t *testing.T) {
	id := directory.WithCheckDigit("15082419580314201")
	batu := &directoryv1.Patient{
		DisplayName: "巴特尔", ResidentIdMasked: id[:6] + "********" + id[14:],
		Sex: typev1.Sex_SEX_MALE, BirthDate: "1958-03-14",
	}
	mongolian := &directoryv1.Patient{DisplayName: "巴特尔·孟和", BirthDate: "1990-01-02"}
	for _, tc := range []struct {
		name    string
		patient *directoryv1.Patient
		study   study
		want    string
	}{
		{"ideographic group", batu, study{patientID: id, patientName: "BATEER^=巴特尔", birthDate: "19580314", sex: "M"}, ""},
		{"name alone, local ID", batu, study{patientID: "DLS-00042", patientName: "巴特尔"}, ""},
		{"name with a middle dot and components", mongolian, study{patientName: "巴特尔^孟和"}, ""},
		{"another name", batu, study{patientName: "=其其格"}, "the names differ"},
		{"no name", batu, study{patientID: "DLS-00042"}, "the study names no patient"},
		{"another ID number", batu, study{patientID: directory.WithCheckDigit("15082419580314205"), patientName: "巴特尔"}, "the PACS patient ID is another resident ID number"},
		{"another birth date", batu, study{patientName: "巴特尔", birthDate: "19580315"}, "the birth dates differ"},
		{"another sex", batu, study{patientName: "巴特尔", sex: "F"}, "the sexes differ"},
		{"an ID number without a valid check is a local ID", batu, study{patientID: id[:17] + "0", patientName: "巴特尔"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mismatch(tc.patient, tc.study); got != tc.want {
				t.Errorf("mismatch = %q, want %q", got, tc.want)
			}
		})
	}
}
