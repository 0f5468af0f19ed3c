package reading

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// A community's exam catalog is the center's built-in one until an
// administrator first changes it. That change copies the built-in catalog
// into the partition, and from then on the stored exam types are the
// catalog:
//
//	catalog/materialized        present once the catalog is stored
//	etype/{code}                an exam type
const materializedKey = "catalog/materialized"

// ExamTypeSystem is the code system of exam type codes. No national code
// table is available, so the codes are local (DICOM modality abbreviations
// and body regions).
const ExamTypeSystem = "urn:mcc:exam-type"

var examTypes = resource.Table[*typev1.ExamType]{
	Collection: "examTypes",
	Prefix:     "etype/",
	New:        func() *typev1.ExamType { return &typev1.ExamType{} },
	Event:      "examType",
	Mutable: []string{"display_name", "turnaround", "expedite_limit", "template", "results", "critical_findings",
		"rejection_reasons", "delay_reasons", "modalities", "fresh_specimen", "price_fen", "active"},
}

// catalog is the built-in exam catalog of a center.
type catalog struct {
	kind  typev1.Center
	seed  map[string]*typev1.ExamType
	codes []string
}

// newCatalog parses the built-in catalog and checks every entry as an
// administrator's change would be. The catalog is a JSON object:
// "examTypes" is an array of ExamType in protojson form, and "shared" is
// an ExamType whose fields every entry that lacks them takes (the coded
// results, critical findings and rejection reasons a center uses for all
// its exam types).
func newCatalog(kind typev1.Center, data []byte) (catalog, error) {
	cat := catalog{kind: kind, seed: map[string]*typev1.ExamType{}}
	var raw struct {
		Shared    json.RawMessage   `json:"shared"`
		ExamTypes []json.RawMessage `json:"examTypes"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return cat, err
	}
	shared := &typev1.ExamType{}
	if len(raw.Shared) > 0 {
		if err := protojson.Unmarshal(raw.Shared, shared); err != nil {
			return cat, fmt.Errorf("shared: %w", err)
		}
	}
	for i, r := range raw.ExamTypes {
		et := &typev1.ExamType{}
		if err := protojson.Unmarshal(r, et); err != nil {
			return cat, fmt.Errorf("entry %d: %w", i, err)
		}
		m := et.ProtoReflect()
		proto.CloneOf(shared).ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if !m.Has(fd) {
				m.Set(fd, v)
			}
			return true
		})
		et.Active = true
		if err := cat.complete(et); err != nil {
			return cat, fmt.Errorf("entry %d: %w", i, err)
		}
		if _, dup := cat.seed[et.GetCode().GetCode()]; dup {
			return cat, fmt.Errorf("entry %d: %s twice", i, et.GetCode().GetCode())
		}
		cat.seed[et.GetCode().GetCode()] = et
		cat.codes = append(cat.codes, et.GetCode().GetCode())
	}
	slices.Sort(cat.codes)
	return cat, nil
}

// complete fills in what follows from an exam type's code and checks the
// rules a catalog entry must keep: a limit for every priority, limits in
// whole days where they count working days, value sets without repeats.
func (cat catalog) complete(et *typev1.ExamType) error {
	code := et.GetCode().GetCode()
	et.Name = examTypes.Name(code)
	et.Center = cat.kind
	et.Code = &typev1.Code{System: ExamTypeSystem, Code: code, Display: et.GetDisplayName()}
	covered := map[typev1.ExamPriority]bool{}
	for i, row := range et.GetTurnaround() {
		field := fmt.Sprintf("exam_type.turnaround[%d]", i)
		if row.GetBasis() == typev1.TurnaroundBasis_TURNAROUND_BASIS_WORKING_DAYS {
			for _, d := range []time.Duration{row.GetLimit().AsDuration(), row.GetBusyLimit().AsDuration()} {
				if d%(24*time.Hour) != 0 {
					return apierr.Invalid(field, "limits counted in working days must be whole days (multiples of 24h)")
				}
			}
		}
		if row.GetPatientClass() == typev1.PatientClass_PATIENT_CLASS_UNSPECIFIED {
			covered[row.GetPriority()] = true
		}
	}
	for _, p := range []typev1.ExamPriority{typev1.ExamPriority_EXAM_PRIORITY_EMERGENCY, typev1.ExamPriority_EXAM_PRIORITY_URGENT, typev1.ExamPriority_EXAM_PRIORITY_ROUTINE} {
		if !covered[p] {
			return apierr.Invalid("exam_type.turnaround", "needs a limit for %s that applies to any patient class", p)
		}
	}
	if len(et.GetResults()) == 0 {
		return apierr.Invalid("exam_type.results", "at least one coded result is required")
	}
	for field, set := range map[string][]*typev1.Code{
		"exam_type.results": et.GetResults(), "exam_type.critical_findings": et.GetCriticalFindings(),
		"exam_type.rejection_reasons": et.GetRejectionReasons(), "exam_type.delay_reasons": et.GetDelayReasons(),
	} {
		seen := map[string]bool{}
		for _, c := range set {
			if c.GetCode() == "" || c.GetDisplay() == "" || seen[c.GetCode()] {
				return apierr.Invalid(field, "every code needs a code and a display, once")
			}
			seen[c.GetCode()] = true
		}
	}
	return nil
}

// getter reads a key, in a transaction or outside one.
type getter func(key string) (store.Record, error)

func (cat catalog) inside(tx store.Tx) getter { return tx.Get }

func (cat catalog) outside(ctx context.Context, s store.Store, p store.Partition) getter {
	return func(key string) (store.Record, error) { return s.Get(ctx, p, key) }
}

// find returns the exam type of a code: the stored one, or the built-in
// one while the community's catalog is not materialized.
func (cat catalog) find(get getter, code string) (*typev1.ExamType, bool, error) {
	rec, err := get(examTypes.Key(examTypes.Name(code)))
	if err == nil {
		et, err := examTypes.Decode(rec)
		return et, err == nil, err
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	if _, err := get(materializedKey); err == nil || !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	et, ok := cat.seed[code]
	if !ok {
		return nil, false, nil
	}
	return proto.CloneOf(et), true, nil
}

// activeType returns the active exam type of a code, or an InvalidArgument
// on field.
func (f *Flow) activeType(get getter, code, field string) (*typev1.ExamType, error) {
	et, ok, err := f.catalog.find(get, code)
	if err != nil {
		return nil, err
	}
	if !ok || !et.GetActive() {
		return nil, apierr.Invalid(field, "%q is not an active exam type of the %s center", code, f.center.Service)
	}
	return et, nil
}

// typeOf returns the exam type of an exam, inside a transaction. An exam
// keeps its type even if the type was later deactivated.
func (f *Flow) typeOf(tx store.Tx, e *typev1.Exam) (*typev1.ExamType, error) {
	et, ok, err := f.catalog.find(f.catalog.inside(tx), e.GetExamType().GetCode())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s: exam type %s is gone from the catalog", e.GetName(), e.GetExamType().GetCode())
	}
	return et, nil
}

// materialize copies the built-in catalog into the partition, once, inside
// tx.
func (cat catalog) materialize(tx store.Tx) error {
	if _, err := tx.Get(materializedKey); err == nil || !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for _, code := range cat.codes {
		if err := examTypes.Create(tx, proto.CloneOf(cat.seed[code])); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
			return err
		}
	}
	return tx.Put(materializedKey, []byte("1"))
}

// listTypes lists the catalog in code order.
func (f *Flow) listTypes(ctx context.Context, c auth.Caller, token string, size int32) ([]*typev1.ExamType, string, error) {
	p := c.Partition()
	if _, err := f.store.Get(ctx, p, materializedKey); err == nil {
		return examTypes.StandardList(ctx, f.store, c, token, size, "", func(*typev1.ExamType) bool { return true })
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, "", err
	}
	const filter = "builtin-exam-types"
	after, err := paging.Decode(token, filter)
	if err != nil {
		return nil, "", err
	}
	var out []*typev1.ExamType
	n := paging.Size(size)
	for _, code := range f.catalog.codes {
		if code <= after {
			continue
		}
		if len(out) == n {
			return out, paging.Encode(out[n-1].GetCode().GetCode(), filter), nil
		}
		out = append(out, proto.CloneOf(f.catalog.seed[code]))
	}
	return out, "", nil
}

// getType returns an exam type, active or not.
func (f *Flow) getType(ctx context.Context, c auth.Caller, name string) (*typev1.ExamType, error) {
	et, ok, err := f.catalog.find(f.catalog.outside(ctx, f.store, c.Partition()), examTypes.ID(name))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, notFound(name)
	}
	return et, nil
}

// createType adds an exam type to the community's catalog.
func (f *Flow) createType(ctx context.Context, c auth.Caller, in *typev1.ExamType, requestID string) (*typev1.ExamType, error) {
	et := proto.CloneOf(in)
	et.Active = true
	if err := f.catalog.complete(et); err != nil {
		return nil, err
	}
	return examTypes.StandardCreate(ctx, f.store, c, requestID, et, f.clock.Now(), func(tx store.Tx, _ *typev1.ExamType) error {
		return f.catalog.materialize(tx)
	})
}

// updateType changes an exam type of the community's catalog.
func (f *Flow) updateType(ctx context.Context, c auth.Caller, in *typev1.ExamType, mask *fieldmaskpb.FieldMask) (*typev1.ExamType, error) {
	if err := f.store.Txn(ctx, c.Partition(), f.catalog.materialize); err != nil {
		return nil, err
	}
	return examTypes.StandardUpdate(ctx, f.store, c, in, mask, f.clock.Now(), func(_ store.Tx, et *typev1.ExamType) error {
		return f.catalog.complete(et)
	})
}

// SeedExamTypes returns the built-in exam types of a center's catalog
// data, in code order. The recognition catalog is seeded from them.
func SeedExamTypes(kind typev1.Center, data []byte) ([]*typev1.ExamType, error) {
	cat, err := newCatalog(kind, data)
	if err != nil {
		return nil, err
	}
	out := make([]*typev1.ExamType, 0, len(cat.codes))
	for _, code := range cat.codes {
		out = append(out, cat.seed[code])
	}
	return out, nil
}
