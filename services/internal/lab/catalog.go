package lab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The catalog of a community is the built-in seed (catalog version 1)
// until an administrator first changes it. That change copies the seed
// into the community's partition, and from then on the stored tests are the
// catalog:
//
//	catalog/version             the current catalog version
//	test/{code}                 the current definition of a test
//	testrev/{code}/{version}    every definition a test has had
const catalogVersionKey = "catalog/version"

var tests = resource.Table[*labv1.Test]{
	Collection: "tests",
	Prefix:     "test/",
	New:        func() *labv1.Test { return &labv1.Test{} },
	Event:      "test",
	Mutable: []string{"display_name", "specimen_type", "container", "min_volume_ml", "transport", "unit",
		"alternate_units", "reference_intervals", "critical_low", "critical_high", "price_fen", "recognized", "active"},
}

func revisionPrefix(code string) string { return "testrev/" + code + "/" }

func revisionKey(code string, version int64) string {
	return fmt.Sprintf("%s%020d", revisionPrefix(code), version)
}

// catalog is the built-in seed.
type catalog struct {
	seed  map[string]*labv1.Test
	codes []string
}

func newCatalog() (catalog, error) {
	seed, err := seedCatalog()
	if err != nil {
		return catalog{}, err
	}
	return catalog{seed: seed, codes: sortedCodes(seed)}, nil
}

// getter reads a key, in a transaction or outside.
type getter func(key string) (store.Record, error)

// lookup returns a function that finds a test by code through get, in the
// seed while the community has not changed its catalog. It reports false
// for an unknown code.
func (cat catalog) lookup(get getter) func(code string) (*labv1.Test, bool, error) {
	checked, stored := false, false
	return func(code string) (*labv1.Test, bool, error) {
		if !checked {
			_, err := get(catalogVersionKey)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, false, err
			}
			checked, stored = true, err == nil
		}
		if !stored {
			t, ok := cat.seed[code]
			if !ok {
				return nil, false, nil
			}
			return proto.CloneOf(t), true, nil
		}
		rec, err := get(tests.Key(tests.Name(code)))
		if errors.Is(err, store.ErrNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		t, err := tests.Decode(rec)
		return t, err == nil, err
	}
}

func (s *Service) testsIn(tx store.Tx) func(string) (*labv1.Test, bool, error) {
	return s.catalog.lookup(tx.Get)
}

func (s *Service) testsOutside(ctx context.Context, p store.Partition) func(string) (*labv1.Test, bool, error) {
	return s.catalog.lookup(func(key string) (store.Record, error) { return s.store.Get(ctx, p, key) })
}

// materialize copies the seed into the partition, once.
func (s *Service) materialize(ctx context.Context, p store.Partition) error {
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		if _, err := tx.Get(catalogVersionKey); err == nil || !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err := tx.Put(catalogVersionKey, []byte("1")); err != nil {
			return err
		}
		for _, code := range s.catalog.codes {
			t := proto.CloneOf(s.catalog.seed[code])
			if err := tests.Create(tx, t); err != nil {
				return err
			}
			if err := putRevision(tx, t); err != nil {
				return err
			}
		}
		return nil
	})
}

func putRevision(tx store.Tx, t *labv1.Test) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(t)
	if err != nil {
		return err
	}
	return tx.Put(revisionKey(t.GetCode().GetCode(), t.GetCatalogVersion()), data)
}

// nextVersion checks a test definition and gives it the next catalog
// version, keeping the definition as that version's revision.
func nextVersion(tx store.Tx, t *labv1.Test) error {
	if err := checkTest(t); err != nil {
		return err
	}
	rec, err := tx.Get(catalogVersionKey)
	if err != nil {
		return err
	}
	v, err := strconv.ParseInt(string(rec.Value), 10, 64)
	if err != nil {
		return fmt.Errorf("catalog version %q: %w", rec.Value, err)
	}
	t.CatalogVersion = v + 1
	if err := tx.Put(catalogVersionKey, []byte(strconv.FormatInt(v+1, 10))); err != nil {
		return err
	}
	return putRevision(tx, t)
}

// checkTest checks the parts of a definition that protovalidate cannot.
func checkTest(t *labv1.Test) error {
	for i, r := range t.GetReferenceIntervals() {
		field := fmt.Sprintf("test.reference_intervals[%d]", i)
		if r.Low != nil && r.High != nil && r.GetLow() > r.GetHigh() {
			return apierr.Invalid(field, "low is above high")
		}
		if r.GetMaxAgeDays() != 0 && r.GetMaxAgeDays() <= r.GetMinAgeDays() {
			return apierr.Invalid(field, "max_age_days must be above min_age_days")
		}
	}
	if t.CriticalLow != nil && t.CriticalHigh != nil && t.GetCriticalLow() >= t.GetCriticalHigh() {
		return apierr.Invalid("test.critical_low", "must be below critical_high")
	}
	if tr := t.GetTransport(); tr.GetMinCelsius() > tr.GetMaxCelsius() {
		return apierr.Invalid("test.transport", "min_celsius is above max_celsius")
	}
	if t.GetUnit() == "" && (len(t.GetAlternateUnits()) > 0 || t.CriticalLow != nil || t.CriticalHigh != nil) {
		return apierr.Invalid("test.unit", "a test with alternate units or critical limits needs a unit")
	}
	return nil
}

// ListTests lists the catalog in code order.
func (s *Service) ListTests(ctx context.Context, req *labv1.ListTestsRequest) (*labv1.ListTestsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	version, stored, err := s.catalogVersion(ctx, p)
	if err != nil {
		return nil, err
	}
	resp := &labv1.ListTestsResponse{CatalogVersion: version}
	if stored {
		resp.Tests, resp.NextPageToken, err = tests.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), "", func(*labv1.Test) bool { return true })
		return resp, err
	}
	// The seed pages like the stored catalog, so a token stays valid when
	// the catalog is copied between two pages.
	const filter = "tests|"
	after, err := paging.Decode(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	size := paging.Size(req.GetPageSize())
	start, _ := slices.BinarySearch(s.catalog.codes, strings.TrimPrefix(after, tests.Prefix))
	if after != "" && start < len(s.catalog.codes) && tests.Prefix+s.catalog.codes[start] == after {
		start++
	}
	for _, code := range s.catalog.codes[start:] {
		if len(resp.Tests) == size {
			resp.NextPageToken = paging.Encode(tests.Key(tests.Name(resp.Tests[size-1].GetCode().GetCode())), filter)
			break
		}
		resp.Tests = append(resp.Tests, proto.CloneOf(s.catalog.seed[code]))
	}
	return resp, nil
}

// catalogVersion returns the current catalog version, and whether the
// catalog is stored (not the seed).
func (s *Service) catalogVersion(ctx context.Context, p store.Partition) (int64, bool, error) {
	rec, err := s.store.Get(ctx, p, catalogVersionKey)
	if errors.Is(err, store.ErrNotFound) {
		return 1, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	v, err := strconv.ParseInt(string(rec.Value), 10, 64)
	return v, true, err
}

// GetTest returns a test, now or at an earlier catalog version.
func (s *Service) GetTest(ctx context.Context, req *labv1.GetTestRequest) (*labv1.GetTestResponse, error) {
	_, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	code := tests.ID(req.GetName())
	want := req.GetCatalogVersion()
	if want == 0 {
		t, ok, err := s.testsOutside(ctx, p)(code)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, notFound(req.GetName())
		}
		return &labv1.GetTestResponse{Test: t}, nil
	}
	_, stored, err := s.catalogVersion(ctx, p)
	if err != nil {
		return nil, err
	}
	if !stored {
		if t, ok := s.catalog.seed[code]; ok {
			return &labv1.GetTestResponse{Test: proto.CloneOf(t)}, nil
		}
		return nil, notFound(req.GetName())
	}
	// A test has few revisions; the last one at or before the version
	// asked for is the definition then.
	recs, _, err := s.store.List(ctx, p, revisionPrefix(code), "", paging.Max)
	if err != nil {
		return nil, err
	}
	var found *labv1.Test
	for _, rec := range recs {
		t := &labv1.Test{}
		if err := proto.Unmarshal(rec.Value, t); err != nil {
			return nil, fmt.Errorf("decode %s: %w", rec.Key, err)
		}
		if t.GetCatalogVersion() <= want {
			found = t
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%s at catalog version %d: %w", req.GetName(), want, store.ErrNotFound)
	}
	return &labv1.GetTestResponse{Test: found}, nil
}

// CreateTest adds a test to the catalog as a new catalog version.
func (s *Service) CreateTest(ctx context.Context, req *labv1.CreateTestRequest) (*labv1.CreateTestResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.materialize(ctx, p); err != nil {
		return nil, err
	}
	t := proto.CloneOf(req.GetTest())
	t.Name = tests.Name(t.GetCode().GetCode())
	if t.GetCode().GetSystem() == "" {
		t.Code.System = "urn:mcc:lab:local"
	}
	t.Active = true
	out, err := tests.StandardCreate(ctx, s.store, c, req.GetRequestId(), t, s.clock.Now(), nextVersion)
	if err != nil {
		return nil, err
	}
	return &labv1.CreateTestResponse{Test: out}, nil
}

// UpdateTest changes a test as a new catalog version.
func (s *Service) UpdateTest(ctx context.Context, req *labv1.UpdateTestRequest) (*labv1.UpdateTestResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.materialize(ctx, p); err != nil {
		return nil, err
	}
	out, err := tests.StandardUpdate(ctx, s.store, c, req.GetTest(), req.GetUpdateMask(), s.clock.Now(), nextVersion)
	if err != nil {
		return nil, err
	}
	return &labv1.UpdateTestResponse{Test: out}, nil
}

// evaluate turns an entered value into a result: it converts the value to
// the test's unit, finds the reference interval of the patient's sex and
// age, and computes the flag. A unit the test does not accept is bad input
// on field.
func evaluate(field string, t *labv1.Test, in *labv1.ResultInput, sex typev1.Sex, ageDays int) (*labv1.Result, error) {
	factor, ok := conversion(t, in.GetUnit())
	if !ok {
		accepted := []string{t.GetUnit()}
		for _, a := range t.GetAlternateUnits() {
			accepted = append(accepted, a.GetUnit())
		}
		return nil, apierr.Invalid(field+".unit", "%q is not a unit of %s; accepted: %s", in.GetUnit(), t.GetCode().GetCode(), strings.Join(accepted, ", "))
	}
	v := math.Round(in.GetValue()*factor*1e6) / 1e6
	r := &labv1.Result{
		Code:           t.GetCode().GetCode(),
		Display:        t.GetDisplayName(),
		Value:          v,
		Unit:           t.GetUnit(),
		Entered:        &typev1.Quantity{Value: in.GetValue(), Unit: in.GetUnit()},
		CatalogVersion: t.GetCatalogVersion(),
	}
	ref := applicable(t, sex, ageDays)
	if ref != nil {
		r.ReferenceRange = rangeText(ref)
	}
	r.Flag = computeFlag(t, ref, v)
	return r, nil
}

// conversion returns the factor from unit to the test's unit. Units match
// case-insensitively: senders write both mmol/L and mmol/l.
func conversion(t *labv1.Test, unit string) (float64, bool) {
	if strings.EqualFold(unit, t.GetUnit()) {
		return 1, true
	}
	for _, a := range t.GetAlternateUnits() {
		if strings.EqualFold(unit, a.GetUnit()) {
			return a.GetFactor(), true
		}
	}
	return 0, false
}

// applicable returns the first reference interval for the sex and age.
func applicable(t *labv1.Test, sex typev1.Sex, ageDays int) *labv1.ReferenceInterval {
	for _, r := range t.GetReferenceIntervals() {
		if r.GetSex() != typev1.Sex_SEX_UNSPECIFIED && r.GetSex() != sex {
			continue
		}
		if ageDays < int(r.GetMinAgeDays()) || r.GetMaxAgeDays() != 0 && ageDays >= int(r.GetMaxAgeDays()) {
			continue
		}
		return r
	}
	return nil
}

// computeFlag compares v with the critical limits first, then with the interval.
func computeFlag(t *labv1.Test, ref *labv1.ReferenceInterval, v float64) labv1.Flag {
	switch {
	case t.CriticalLow != nil && v < t.GetCriticalLow():
		return labv1.Flag_FLAG_LL
	case t.CriticalHigh != nil && v > t.GetCriticalHigh():
		return labv1.Flag_FLAG_HH
	case ref == nil:
		return labv1.Flag_FLAG_UNSPECIFIED
	case ref.Low != nil && v < ref.GetLow():
		return labv1.Flag_FLAG_L
	case ref.High != nil && v > ref.GetHigh():
		return labv1.Flag_FLAG_H
	}
	return labv1.Flag_FLAG_N
}

func rangeText(r *labv1.ReferenceInterval) string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	switch {
	case r.Low != nil && r.High != nil:
		return f(r.GetLow()) + "-" + f(r.GetHigh())
	case r.High != nil:
		return "<=" + f(r.GetHigh())
	case r.Low != nil:
		return ">=" + f(r.GetLow())
	}
	return ""
}

// isCritical reports whether a flag is a critical value.
func isCritical(f labv1.Flag) bool { return f == labv1.Flag_FLAG_LL || f == labv1.Flag_FLAG_HH }

// flagCode is the short code of a flag, as on a printed report.
func flagCode(f labv1.Flag) string { return strings.TrimPrefix(f.String(), "FLAG_") }
