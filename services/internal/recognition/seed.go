package recognition

import (
	"fmt"
	"slices"
	"strings"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/ecg"
	"github.com/countymcc/mcc/services/internal/imaging"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/pathology"
)

// seed is catalog version 1 of every community: every test of the lab
// catalog, recognized where the lab marks it so, and every exam type of
// the imaging, ECG and pathology catalogs, with their prices.
type seed struct {
	items []*recognitionv1.Item
}

// rule is the seed's recognition rule of a group of items.
type rule struct {
	recognized bool
	days       int32
	level      typev1.FacilityLevel
}

const (
	county   = typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL
	township = typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER
)

// examRules are the seed's rules of the exam types, by code. Validity
// follows common provincial practice: plain radiographs a month, CT three
// months, MR six, a resting ECG a week, histopathology a year; a frozen
// section answers an operation and is never reused. An exam type not
// listed here is recognized for 30 days from a county hospital.
var examRules = map[string]rule{
	"DX-CHEST":      {true, 30, township},
	"DX-BONE":       {true, 30, township},
	"CT-HEAD":       {true, 90, county},
	"CT-CHEST":      {true, 90, county},
	"CT-ABDOMEN":    {true, 90, county},
	"MR-HEAD":       {true, 180, county},
	"MR-SPINE":      {true, 180, county},
	"ECG-12":        {true, 7, township},
	"PATH-ROUTINE":  {true, 365, county},
	"PATH-CYTOLOGY": {true, 90, county},
	"PATH-FROZEN":   {false, 0, county},
}

// labValidityDays are the validity windows of lab tests that differ from
// the default of 14 days: HbA1c reflects three months.
var labValidityDays = map[string]int32{"4548-4": 90}

func newSeed() (seed, error) {
	var out seed
	tests, err := lab.SeedTests()
	if err != nil {
		return out, fmt.Errorf("recognition: lab seed: %w", err)
	}
	for _, t := range tests {
		days, ok := labValidityDays[t.GetCode().GetCode()]
		if !ok {
			days = 14
		}
		if !t.GetRecognized() {
			days = 0
		}
		out.items = append(out.items, seedItem(t.GetCode(), t.GetDisplayName(), typev1.Center_CENTER_LAB,
			rule{t.GetRecognized(), days, township}, t.GetPriceFen()))
	}
	for _, center := range []struct {
		kind typev1.Center
		load func() ([]*typev1.ExamType, error)
	}{
		{typev1.Center_CENTER_IMAGING, imaging.ExamTypes},
		{typev1.Center_CENTER_ECG, ecg.ExamTypes},
		{typev1.Center_CENTER_PATHOLOGY, pathology.ExamTypes},
	} {
		ets, err := center.load()
		if err != nil {
			return out, fmt.Errorf("recognition: %s seed: %w", center.kind, err)
		}
		for _, et := range ets {
			r, ok := examRules[et.GetCode().GetCode()]
			if !ok {
				r = rule{true, 30, county}
			}
			out.items = append(out.items, seedItem(et.GetCode(), et.GetDisplayName(), center.kind, r, et.GetPriceFen()))
		}
	}
	slices.SortFunc(out.items, func(a, b *recognitionv1.Item) int { return strings.Compare(a.GetName(), b.GetName()) })
	for i := 1; i < len(out.items); i++ {
		if out.items[i].GetName() == out.items[i-1].GetName() {
			return out, fmt.Errorf("recognition: seed: %s twice", out.items[i].GetName())
		}
	}
	return out, nil
}

func seedItem(code *typev1.Code, display string, center typev1.Center, r rule, price int64) *recognitionv1.Item {
	return &recognitionv1.Item{
		Name:             items.Name(code.GetCode()),
		Code:             &typev1.Code{System: code.GetSystem(), Code: code.GetCode(), Display: code.GetDisplay()},
		DisplayName:      display,
		Center:           center,
		Recognized:       r.recognized,
		ValidityDays:     r.days,
		Scope:            recognitionv1.Scope_SCOPE_COMMUNITY,
		MinFacilityLevel: r.level,
		RequiresQc:       true,
		PriceFen:         price,
		CatalogVersion:   1,
	}
}
