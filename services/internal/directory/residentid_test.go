package directory

import (
	"errors"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

func TestParseResidentID(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		wantSex typev1.Sex
		wantErr string
	}{
		// The GB 11643 standard's own example number.
		{name: "standard example", in: "11010519491231002X", wantSex: typev1.Sex_SEX_FEMALE},
		{name: "lower-case x", in: "11010519491231002x", wantSex: typev1.Sex_SEX_FEMALE},
		{name: "male", in: WithCheckDigit("15082419800101001"), wantSex: typev1.Sex_SEX_MALE},
		{name: "wrong check digit", in: "110105194912310021", wantErr: "check digit"},
		{name: "short", in: "11010519491231002", wantErr: "18 characters"},
		{name: "letter inside", in: "1101051949123100AX", wantErr: "digits"},
		{name: "impossible date", in: WithCheckDigit("11010519490231002"), wantErr: "birth date"},
		{name: "future birth", in: WithCheckDigit("11010520300101002"), wantErr: "birth date"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseResidentID("resident_id", tt.in, now)
			if tt.wantErr != "" {
				var inv *apierr.InvalidError
				if !errors.As(err, &inv) || inv.Violations[0].Field != "resident_id" || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want invalid resident_id: %s", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.in[:14]) {
					t.Errorf("error repeats the number: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.sex != tt.wantSex || got.number != strings.ToUpper(tt.in) {
				t.Errorf("got %+v", got)
			}
		})
	}
}

func TestMask(t *testing.T) {
	if got := maskResidentID("11010519491231002X"); got != "110105********002X" {
		t.Errorf("mask = %q", got)
	}
}
