package directory

import (
	"strings"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

// residentID is a checked 18-character resident ID number (GB 11643-1999):
// six digits of region, eight of birth date, three of sequence (odd for men,
// even for women) and a check character.
type residentID struct {
	number    string
	birthDate time.Time
	sex       typev1.Sex
}

// checkWeights and checkChars implement ISO 7064 MOD 11-2, as GB 11643
// specifies: the weighted sum of the first 17 digits, modulo 11, selects the
// check character.
var (
	checkWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	checkChars   = "10X98765432"
)

// parseResidentID checks a resident ID number. The error names the field
// and the reason but never repeats the number.
func parseResidentID(field, s string, now time.Time) (residentID, error) {
	s = strings.ToUpper(s)
	if len(s) != 18 {
		return residentID{}, apierr.Invalid(field, "must be 18 characters")
	}
	sum := 0
	for i := 0; i < 17; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return residentID{}, apierr.Invalid(field, "the first 17 characters must be digits")
		}
		sum += int(c-'0') * checkWeights[i]
	}
	if s[17] != checkChars[sum%11] {
		return residentID{}, apierr.Invalid(field, "check digit does not match (GB 11643)")
	}
	birth, err := time.Parse("20060102", s[6:14])
	if err != nil || birth.After(now) || birth.Year() < 1880 {
		return residentID{}, apierr.Invalid(field, "does not contain a valid birth date")
	}
	sex := typev1.Sex_SEX_FEMALE
	if (s[16]-'0')%2 == 1 {
		sex = typev1.Sex_SEX_MALE
	}
	return residentID{number: s, birthDate: birth, sex: sex}, nil
}

// masked shows the region and the last four characters only, as Chinese
// systems display ID numbers.
func (r residentID) masked() string { return maskResidentID(r.number) }

func maskResidentID(n string) string {
	if len(n) != 18 {
		return strings.Repeat("*", len(n))
	}
	return n[:6] + strings.Repeat("*", 8) + n[14:]
}

// WithCheckDigit completes 17 digits with their GB 11643 check character. The
// demo seed and tests use it to make valid numbers.
func WithCheckDigit(first17 string) string {
	sum := 0
	for i := 0; i < 17 && i < len(first17); i++ {
		sum += int(first17[i]-'0') * checkWeights[i]
	}
	return first17 + string(checkChars[sum%11])
}
