package lab

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// loincExamples is the list of LOINC codes used in the HL7 FHIR R4
// examples, with example units and ranges. LOINC content © Regenstrief
// Institute, used under the LOINC licence (see catalogdata/NOTICE).
//
//go:embed catalogdata/loinc-codes-used-in-fhir-r4-examples.csv
var loincExamples []byte

// loincSystem is the code system of LOINC codes.
const loincSystem = "http://loinc.org"

// Specimen types and their default containers and transport limits.
type specimenKind struct {
	specimenType, container string
	minVolumeMl             float64
	transport               *labv1.TransportLimits
}

// specimenKinds are the specimen kinds of the seed. Transport limits are
// common county practice for unseparated tubes sent from a township:
// chemistry within 6 hours at 2-25 °C, blood counts within 24 hours,
// citrate tubes within 4 hours at room temperature, urine within 2 hours.
type specimenKinds struct {
	serum, edtaBlood, citrate, urine, arterial, fluoride specimenKind
}

func newSpecimenKinds() specimenKinds {
	return specimenKinds{
		serum:     specimenKind{"serum", "黄帽促凝管 SST", 3, &labv1.TransportLimits{MaxHours: 6, MinCelsius: 2, MaxCelsius: 25}},
		edtaBlood: specimenKind{"whole_blood_edta", "紫帽 EDTA-K2 管", 2, &labv1.TransportLimits{MaxHours: 24, MinCelsius: 2, MaxCelsius: 25}},
		citrate:   specimenKind{"plasma_citrate", "蓝帽 3.2% 枸橼酸钠管 1:9", 2.7, &labv1.TransportLimits{MaxHours: 4, MinCelsius: 15, MaxCelsius: 25}},
		urine:     specimenKind{"urine", "尿杯 urine cup", 10, &labv1.TransportLimits{MaxHours: 2, MinCelsius: 2, MaxCelsius: 25}},
		arterial:  specimenKind{"arterial_blood", "肝素锂血气针 heparin syringe", 1, &labv1.TransportLimits{MaxHours: 0.5, MinCelsius: 2, MaxCelsius: 25}},
		fluoride:  specimenKind{"plasma_fluoride", "灰帽 氟化钠管 NaF", 2, &labv1.TransportLimits{MaxHours: 24, MinCelsius: 2, MaxCelsius: 25}},
	}
}

// kindOf finds the specimen kind a LOINC display names.
func (k specimenKinds) kindOf(display string) (specimenKind, bool) {
	for _, s := range []struct {
		phrase string
		kind   specimenKind
	}{
		{"in Serum or Plasma", k.serum}, {"in Serum", k.serum}, {"in Plasma", k.serum},
		{"in Arterial blood", k.arterial}, {"in Blood", k.edtaBlood}, {"of Blood", k.edtaBlood},
		{"in Urine", k.urine},
	} {
		if strings.Contains(display, s.phrase) {
			return s.kind, true
		}
	}
	return specimenKind{}, false
}

// Age bands, in days.
const (
	day  = 1
	year = 365
)

// interval builds a reference interval; sex 0 is both, maxAge 0 is no
// upper bound.
func interval(sex typev1.Sex, minAge, maxAge int32, low, high *float64) *labv1.ReferenceInterval {
	return &labv1.ReferenceInterval{Sex: sex, MinAgeDays: minAge, MaxAgeDays: maxAge, Low: low, High: high}
}

func both(low, high float64) *labv1.ReferenceInterval { return interval(0, 0, 0, &low, &high) }
func upTo(high float64) *labv1.ReferenceInterval      { return interval(0, 0, 0, nil, &high) }
func atLeast(low float64) *labv1.ReferenceInterval    { return interval(0, 0, 0, &low, nil) }
func male(low, high float64) *labv1.ReferenceInterval {
	return interval(typev1.Sex_SEX_MALE, 0, 0, &low, &high)
}
func female(low, high float64) *labv1.ReferenceInterval {
	return interval(typev1.Sex_SEX_FEMALE, 0, 0, &low, &high)
}
func ages(minAge, maxAge int32, low, high float64) *labv1.ReferenceInterval {
	return interval(0, minAge, maxAge, &low, &high)
}

// countyTest is one test of the county set.
type countyTest struct {
	code, name string
	kind       specimenKind
	unit       string
	alternates []*labv1.UnitConversion
	intervals  []*labv1.ReferenceInterval
	critLow    *float64
	critHigh   *float64
	priceFen   int64
	recognized bool
}

func alt(unit string, factor float64) *labv1.UnitConversion {
	return &labv1.UnitConversion{Unit: unit, Factor: factor}
}

// countySet is the test menu of a county lab center: blood count, basic
// metabolic panel, liver, lipids, glucose, HbA1c, troponin and
// coagulation. The reference intervals are typical adult textbook values
// (close to the Chinese WS/T 404 and WS/T 405 intervals), with a children's
// band where it matters most; critical limits follow common Chinese
// hospital critical-value lists; prices are typical county prices in fen.
// A community replaces any of them with its own through UpdateTest.
func countySet(k specimenKinds) []countyTest {
	p := proto.Float64
	edtaBlood, serum, citrate, fluoride := k.edtaBlood, k.serum, k.citrate, k.fluoride
	lt := func(days int32, low, high float64) []*labv1.ReferenceInterval {
		return []*labv1.ReferenceInterval{ages(28*day, days, low, high)}
	}
	return []countyTest{
		// Complete blood count (血常规).
		{code: "6690-2", name: "白细胞计数 WBC", kind: edtaBlood, unit: "10*9/L", alternates: []*labv1.UnitConversion{alt("10^9/L", 1), alt("x10*9/L", 1)},
			intervals: append(lt(6*year, 4.3, 11.3), both(3.5, 9.5)), critLow: p(1.5), critHigh: p(30), priceFen: 300, recognized: true},
		{code: "789-8", name: "红细胞计数 RBC", kind: edtaBlood, unit: "10*12/L", alternates: []*labv1.UnitConversion{alt("10^12/L", 1)},
			intervals: []*labv1.ReferenceInterval{male(4.3, 5.8), female(3.8, 5.1)}, priceFen: 300, recognized: true},
		{code: "718-7", name: "血红蛋白 Hb", kind: edtaBlood, unit: "g/L", alternates: []*labv1.UnitConversion{alt("g/dL", 10)},
			intervals: append(lt(6*year, 112, 149), male(130, 175), female(115, 150)), critLow: p(50), critHigh: p(200), priceFen: 300, recognized: true},
		{code: "4544-3", name: "红细胞压积 HCT", kind: edtaBlood, unit: "%",
			intervals: []*labv1.ReferenceInterval{male(40, 50), female(35, 45)}, priceFen: 300, recognized: true},
		{code: "787-2", name: "平均红细胞体积 MCV", kind: edtaBlood, unit: "fL", intervals: []*labv1.ReferenceInterval{both(82, 100)}, priceFen: 300, recognized: true},
		{code: "777-3", name: "血小板计数 PLT", kind: edtaBlood, unit: "10*9/L", alternates: []*labv1.UnitConversion{alt("10^9/L", 1), alt("x10*9/L", 1)},
			intervals: []*labv1.ReferenceInterval{both(125, 350)}, critLow: p(30), critHigh: p(1000), priceFen: 300, recognized: true},
		// Basic metabolic panel (电解质、肾功能).
		{code: "2823-3", name: "钾 K", kind: serum, unit: "mmol/L", intervals: []*labv1.ReferenceInterval{both(3.5, 5.3)}, critLow: p(2.8), critHigh: p(6.2), priceFen: 500, recognized: true},
		{code: "2951-2", name: "钠 Na", kind: serum, unit: "mmol/L", intervals: []*labv1.ReferenceInterval{both(137, 147)}, critLow: p(120), critHigh: p(160), priceFen: 500, recognized: true},
		{code: "2075-0", name: "氯 Cl", kind: serum, unit: "mmol/L", intervals: []*labv1.ReferenceInterval{both(99, 110)}, priceFen: 500, recognized: true},
		{code: "2028-9", name: "总二氧化碳 TCO2", kind: serum, unit: "mmol/L", intervals: []*labv1.ReferenceInterval{both(22, 29)}, critLow: p(10), critHigh: p(40), priceFen: 500, recognized: true},
		{code: "2000-8", name: "钙 Ca", kind: serum, unit: "mmol/L", intervals: []*labv1.ReferenceInterval{both(2.11, 2.52)}, critLow: p(1.75), critHigh: p(3.5), priceFen: 500, recognized: true},
		{code: "22664-7", name: "尿素 Urea", kind: serum, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.357)},
			intervals: []*labv1.ReferenceInterval{male(3.1, 8.0), female(2.6, 7.5)}, critHigh: p(36), priceFen: 600, recognized: true},
		{code: "14682-9", name: "肌酐 Cr", kind: serum, unit: "umol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 88.4), alt("mmol/L", 1000), alt("µmol/L", 1)},
			intervals: []*labv1.ReferenceInterval{male(57, 97), female(41, 73)}, critHigh: p(707), priceFen: 800, recognized: true},
		// Glucose and HbA1c.
		{code: "2345-7", name: "葡萄糖 GLU", kind: serum, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.0555)},
			intervals: []*labv1.ReferenceInterval{both(3.9, 6.1)}, critLow: p(2.8), critHigh: p(22.2), priceFen: 500, recognized: true},
		{code: "15074-8", name: "葡萄糖(氟化钠血浆) GLU", kind: fluoride, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.0555)},
			intervals: []*labv1.ReferenceInterval{both(3.9, 6.1)}, critLow: p(2.8), critHigh: p(22.2), priceFen: 500, recognized: true},
		{code: "4548-4", name: "糖化血红蛋白 HbA1c", kind: edtaBlood, unit: "%", intervals: []*labv1.ReferenceInterval{both(4.0, 6.0)}, priceFen: 6000, recognized: true},
		// Liver function (肝功能).
		{code: "1742-6", name: "丙氨酸氨基转移酶 ALT", kind: serum, unit: "U/L", intervals: []*labv1.ReferenceInterval{male(9, 50), female(7, 40)}, priceFen: 500, recognized: true},
		{code: "1920-8", name: "天门冬氨酸氨基转移酶 AST", kind: serum, unit: "U/L", intervals: []*labv1.ReferenceInterval{male(15, 40), female(13, 35)}, priceFen: 500, recognized: true},
		{code: "6768-6", name: "碱性磷酸酶 ALP", kind: serum, unit: "U/L", intervals: []*labv1.ReferenceInterval{male(45, 125), female(35, 100)}, priceFen: 500, recognized: true},
		{code: "2324-2", name: "γ-谷氨酰转移酶 GGT", kind: serum, unit: "U/L", intervals: []*labv1.ReferenceInterval{male(10, 60), female(7, 45)}, priceFen: 500, recognized: true},
		{code: "14631-6", name: "总胆红素 TBIL", kind: serum, unit: "umol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 17.1), alt("µmol/L", 1)},
			intervals: []*labv1.ReferenceInterval{male(0, 26), female(0, 21)}, critHigh: p(342), priceFen: 500, recognized: true},
		{code: "2885-2", name: "总蛋白 TP", kind: serum, unit: "g/L", intervals: []*labv1.ReferenceInterval{both(65, 85)}, priceFen: 500, recognized: true},
		{code: "1751-7", name: "白蛋白 ALB", kind: serum, unit: "g/L", intervals: []*labv1.ReferenceInterval{both(40, 55)}, priceFen: 500, recognized: true},
		// Lipids (血脂).
		{code: "14647-2", name: "总胆固醇 TC", kind: serum, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.02586)}, intervals: []*labv1.ReferenceInterval{upTo(5.2)}, priceFen: 600, recognized: true},
		{code: "14927-8", name: "甘油三酯 TG", kind: serum, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.01129)}, intervals: []*labv1.ReferenceInterval{upTo(1.7)}, priceFen: 600, recognized: true},
		{code: "14646-4", name: "高密度脂蛋白胆固醇 HDL-C", kind: serum, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.02586)}, intervals: []*labv1.ReferenceInterval{atLeast(1.04)}, priceFen: 800, recognized: true},
		{code: "22748-8", name: "低密度脂蛋白胆固醇 LDL-C", kind: serum, unit: "mmol/L", alternates: []*labv1.UnitConversion{alt("mg/dL", 0.02586)}, intervals: []*labv1.ReferenceInterval{upTo(3.4)}, priceFen: 800, recognized: true},
		// Cardiac troponin; the 99th percentiles differ by sex. Troponin is
		// not recognized between facilities: it is repeated by design.
		{code: "89579-7", name: "高敏肌钙蛋白I hs-cTnI", kind: serum, unit: "ng/L", alternates: []*labv1.UnitConversion{alt("pg/mL", 1), alt("ug/L", 1000)},
			intervals: []*labv1.ReferenceInterval{interval(typev1.Sex_SEX_MALE, 0, 0, nil, p(34)), interval(typev1.Sex_SEX_FEMALE, 0, 0, nil, p(16))}, critHigh: p(1000), priceFen: 8000},
		// Coagulation (凝血).
		{code: "5902-2", name: "凝血酶原时间 PT", kind: citrate, unit: "s", intervals: []*labv1.ReferenceInterval{both(9.4, 12.5)}, critHigh: p(30), priceFen: 1000, recognized: true},
		{code: "6301-6", name: "国际标准化比值 INR", kind: citrate, unit: "{INR}", alternates: []*labv1.UnitConversion{alt("INR", 1), alt("1", 1)},
			intervals: []*labv1.ReferenceInterval{both(0.8, 1.2)}, critHigh: p(4.0), priceFen: 500, recognized: true},
		{code: "14979-9", name: "活化部分凝血活酶时间 APTT", kind: citrate, unit: "s", intervals: []*labv1.ReferenceInterval{both(25, 35)}, critHigh: p(80), priceFen: 1000, recognized: true},
		{code: "3255-7", name: "纤维蛋白原 FIB", kind: citrate, unit: "g/L", intervals: []*labv1.ReferenceInterval{both(2.0, 4.0)}, critLow: p(1.0), priceFen: 1200, recognized: true},
		{code: "48065-7", name: "D-二聚体 D-Dimer", kind: citrate, unit: "mg/L", alternates: []*labv1.UnitConversion{alt("ug/mL", 1)}, intervals: []*labv1.ReferenceInterval{upTo(0.5)}, priceFen: 5000},
	}
}

// seedCatalog is version 1 of every community's catalog: the LOINC example
// codes that name a specimen and a unit, overlaid by the county set.
func seedCatalog() (map[string]*labv1.Test, error) {
	out := map[string]*labv1.Test{}
	kinds := newSpecimenKinds()
	rows, err := csv.NewReader(bytes.NewReader(loincExamples)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("lab: read the LOINC seed: %w", err)
	}
	for _, row := range rows[1:] {
		if len(row) < 7 || row[2] != "Observation" {
			continue
		}
		code, display := row[0], strings.ReplaceAll(row[1], "\u200b", "")
		unit := row[4]
		if unit == "" {
			unit = row[3]
		}
		kind, ok := kinds.kindOf(display)
		if !ok || unit == "" {
			continue // vital signs, panels and qualitative tests are not lab tests here
		}
		t := newTest(code, display, kind, unit)
		low, lowErr := strconv.ParseFloat(row[5], 64)
		high, highErr := strconv.ParseFloat(row[6], 64)
		switch {
		case lowErr == nil && highErr == nil:
			t.ReferenceIntervals = []*labv1.ReferenceInterval{both(low, high)}
		case highErr == nil:
			t.ReferenceIntervals = []*labv1.ReferenceInterval{upTo(high)}
		case lowErr == nil:
			t.ReferenceIntervals = []*labv1.ReferenceInterval{atLeast(low)}
		}
		out[code] = t
	}
	for _, c := range countySet(kinds) {
		t := newTest(c.code, c.name, c.kind, c.unit)
		t.AlternateUnits = c.alternates
		t.ReferenceIntervals = c.intervals
		t.CriticalLow, t.CriticalHigh = c.critLow, c.critHigh
		t.PriceFen = c.priceFen
		t.Recognized = c.recognized
		if prev, ok := out[c.code]; ok {
			t.Code.Display = prev.GetCode().GetDisplay()
		}
		out[c.code] = t
	}
	return out, nil
}

func newTest(code, display string, kind specimenKind, unit string) *labv1.Test {
	return &labv1.Test{
		Name:           "tests/" + code,
		Code:           &typev1.Code{System: loincSystem, Code: code, Display: display},
		DisplayName:    display,
		SpecimenType:   kind.specimenType,
		Container:      kind.container,
		MinVolumeMl:    kind.minVolumeMl,
		Transport:      proto.CloneOf(kind.transport),
		Unit:           unit,
		CatalogVersion: 1,
		Active:         true,
	}
}

// sortedCodes returns the codes of a seed in order.
func sortedCodes(seed map[string]*labv1.Test) []string {
	codes := make([]string, 0, len(seed))
	for c := range seed {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes
}

// SeedTests returns the built-in catalog (catalog version 1) in code
// order. The recognition catalog is seeded from its recognition flags and
// prices.
func SeedTests() ([]*labv1.Test, error) {
	seed, err := seedCatalog()
	if err != nil {
		return nil, err
	}
	out := make([]*labv1.Test, 0, len(seed))
	for _, code := range sortedCodes(seed) {
		out = append(out, seed[code])
	}
	return out, nil
}
