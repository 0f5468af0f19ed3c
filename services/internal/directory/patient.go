package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/store"
)

// The patient index keeps, per community partition:
//
//	pat/{id}                     the patient record, identifiers sealed
//	pidx/{kind}/{keyed hash}     -> patient ID, one per identifier
//	plink/{facility}/{patient}   a facility's patients, for listing
//	patlink/{patient}/{facility} the facilities linked to a patient, for access checks
//
// Identifiers appear in keys only as keyed hashes, and in values only sealed.
const (
	patientPrefix = "pat/"
	indexPrefix   = "pidx/"
)

// Identifier kinds, used in index keys and as sealing contexts.
const (
	kindResidentID = "resident_id"
	kindHealthCard = "health_card_number"
	kindInsurance  = "insurance_number"
)

// patientRecord is a stored patient. Identifiers and the name are sealed
// with the PII key, bound to the patient and the field.
type patientRecord struct {
	ResidentID          []byte    `json:"rid"`
	Name                []byte    `json:"name"`
	HealthCard          []byte    `json:"hc,omitempty"`
	Insurance           []byte    `json:"ins,omitempty"`
	Sex                 int32     `json:"sex"`
	BirthDate           string    `json:"birth"`
	RegisteringFacility string    `json:"reg"`
	CreateTime          time.Time `json:"created"`
}

const patientCollection = "patients/"

func patientKey(id string) string { return patientPrefix + id }

func indexKey(kind, hash string) string { return indexPrefix + kind + "/" + hash }

func facilityID(name string) string { return strings.TrimPrefix(name, "facilities/") }

func linkKey(facility, patient string) string { return "plink/" + facilityID(facility) + "/" + patient }

func reverseLinkKey(patient, facility string) string {
	return "patlink/" + patient + "/" + facilityID(facility)
}

func sealContext(id, field string) string { return patientCollection + id + "/" + field }

// RegisterPatient registers a patient or matches the existing registration
// of the same resident ID number, and links the caller's facility to it.
func (s *Service) RegisterPatient(ctx context.Context, req *directoryv1.RegisterPatientRequest) (*directoryv1.RegisterPatientResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	rid, err := parseResidentID("resident_id", req.GetResidentId(), now)
	if err != nil {
		return nil, err
	}
	ridHash := s.pii.Index(kindResidentID, rid.number)
	// The ID is chosen outside the transaction, so a retried transaction
	// keeps the same one. UUIDv7 sorts by time, so listings come out in
	// registration order.
	newID, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	extra := map[string]string{kindHealthCard: req.GetHealthCardNumber(), kindInsurance: req.GetInsuranceNumber()}

	resp := &directoryv1.RegisterPatientResponse{}
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		resp.Created = false
		var id string
		var rec *patientRecord
		var version uint64
		idx, err := tx.Get(indexKey(kindResidentID, ridHash))
		switch {
		case err == nil:
			id = string(idx.Value)
			if rec, version, err = getPatient(tx, id); err != nil {
				return err
			}
		case errors.Is(err, store.ErrNotFound):
			id = newID.String()
			if rec, err = s.newPatientRecord(id, rid, req.GetDisplayName(), c, now); err != nil {
				return err
			}
			if err := tx.Create(indexKey(kindResidentID, ridHash), []byte(id)); err != nil {
				return err
			}
			resp.Created = true
		default:
			return err
		}
		changed, err := s.addIdentifiers(tx, id, rec, extra)
		if err != nil {
			return err
		}
		if resp.Created || changed {
			if err := putPatient(tx, id, rec, version); err != nil {
				return err
			}
			version++
		}
		linked, err := link(tx, id, c.Facility)
		if err != nil {
			return err
		}
		if resp.Patient, err = s.view(id, rec, version); err != nil {
			return err
		}
		switch {
		case resp.Created:
			return events.Append(tx, c, now, patientChange("patient.registered", resp.Patient, version, c))
		case linked || changed:
			return events.Append(tx, c, now, patientChange("patient.linked", resp.Patient, version, c))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// MatchPatient finds a patient by one identifier and links the caller's
// facility to it.
func (s *Service) MatchPatient(ctx context.Context, req *directoryv1.MatchPatientRequest) (*directoryv1.MatchPatientResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	var kind, value string
	switch id := req.GetIdentifier().(type) {
	case *directoryv1.MatchPatientRequest_ResidentId:
		rid, err := parseResidentID("resident_id", id.ResidentId, now)
		if err != nil {
			return nil, err
		}
		kind, value = kindResidentID, rid.number
	case *directoryv1.MatchPatientRequest_HealthCardNumber:
		kind, value = kindHealthCard, id.HealthCardNumber
	case *directoryv1.MatchPatientRequest_InsuranceNumber:
		kind, value = kindInsurance, id.InsuranceNumber
	}
	hash := s.pii.Index(kind, value)
	resp := &directoryv1.MatchPatientResponse{}
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		idx, err := tx.Get(indexKey(kind, hash))
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no patient matches this %s: %w", kind, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		id := string(idx.Value)
		rec, version, err := getPatient(tx, id)
		if err != nil {
			return err
		}
		linked, err := link(tx, id, c.Facility)
		if err != nil {
			return err
		}
		if resp.Patient, err = s.view(id, rec, version); err != nil {
			return err
		}
		if linked {
			return events.Append(tx, c, now, patientChange("patient.linked", resp.Patient, version, c))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// GetPatient returns a patient linked to the caller's facility. For any
// other patient it answers NOT_FOUND, exactly as for a patient that does not
// exist, so existence does not leak across facilities.
func (s *Service) GetPatient(ctx context.Context, req *directoryv1.GetPatientRequest) (*directoryv1.GetPatientResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id := strings.TrimPrefix(req.GetName(), patientCollection)
	notFound := fmt.Errorf("%s: %w", req.GetName(), store.ErrNotFound)
	if !c.SeesCommunity() {
		if _, err := s.store.Get(ctx, p, reverseLinkKey(id, c.Facility)); errors.Is(err, store.ErrNotFound) {
			return nil, notFound
		} else if err != nil {
			return nil, err
		}
	}
	raw, err := s.store.Get(ctx, p, patientKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	view, err := s.decodeView(id, raw)
	if err != nil {
		return nil, err
	}
	return &directoryv1.GetPatientResponse{Patient: view}, nil
}

// ListPatients lists the patients linked to the caller's facility; the whole
// community for administrators and services.
func (s *Service) ListPatients(ctx context.Context, req *directoryv1.ListPatientsRequest) (*directoryv1.ListPatientsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	prefix := patientPrefix
	if !c.SeesCommunity() {
		prefix = linkKey(c.Facility, "")
	}
	filter := "patients|" + prefix
	after, err := paging.Decode(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	resp := &directoryv1.ListPatientsResponse{}
	last, err := paging.Scan(ctx, s.store, p, prefix, after, paging.Size(req.GetPageSize()), func(rec store.Record) (bool, error) {
		id := strings.TrimPrefix(rec.Key, prefix)
		if prefix != patientPrefix {
			var err error
			if rec, err = s.store.Get(ctx, p, patientKey(id)); err != nil {
				return false, err
			}
		}
		view, err := s.decodeView(id, rec)
		if err != nil {
			return false, err
		}
		resp.Patients = append(resp.Patients, view)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if last != "" {
		resp.NextPageToken = paging.Encode(last, filter)
	}
	return resp, nil
}

func (s *Service) newPatientRecord(id string, rid residentID, name string, c auth.Caller, now time.Time) (*patientRecord, error) {
	sealedID, err := s.pii.Seal(rid.number, sealContext(id, kindResidentID))
	if err != nil {
		return nil, err
	}
	sealedName, err := s.pii.Seal(name, sealContext(id, "name"))
	if err != nil {
		return nil, err
	}
	return &patientRecord{
		ResidentID:          sealedID,
		Name:                sealedName,
		Sex:                 int32(rid.sex),
		BirthDate:           rid.birthDate.Format(time.DateOnly),
		RegisteringFacility: c.Facility,
		CreateTime:          now.UTC(),
	}, nil
}

// addIdentifiers indexes the health card and insurance numbers given at
// registration. A number already indexed to another patient is refused.
func (s *Service) addIdentifiers(tx store.Tx, id string, rec *patientRecord, ids map[string]string) (changed bool, err error) {
	for _, kind := range []string{kindHealthCard, kindInsurance} {
		value := ids[kind]
		if value == "" {
			continue
		}
		key := indexKey(kind, s.pii.Index(kind, value))
		idx, err := tx.Get(key)
		switch {
		case err == nil && string(idx.Value) == id:
			continue
		case err == nil:
			return false, apierr.Invalid(kind, "is registered to another patient")
		case !errors.Is(err, store.ErrNotFound):
			return false, err
		}
		if err := tx.Create(key, []byte(id)); err != nil {
			return false, err
		}
		sealed, err := s.pii.Seal(value, sealContext(id, kind))
		if err != nil {
			return false, err
		}
		if kind == kindHealthCard {
			rec.HealthCard = sealed
		} else {
			rec.Insurance = sealed
		}
		changed = true
	}
	return changed, nil
}

// link links a facility to a patient and reports whether the link is new.
func link(tx store.Tx, patient, facility string) (bool, error) {
	if _, err := tx.Get(reverseLinkKey(patient, facility)); err == nil {
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if err := tx.Put(reverseLinkKey(patient, facility), nil); err != nil {
		return false, err
	}
	return true, tx.Put(linkKey(facility, patient), nil)
}

func getPatient(tx store.Tx, id string) (*patientRecord, uint64, error) {
	raw, err := tx.Get(patientKey(id))
	if err != nil {
		return nil, 0, fmt.Errorf("%s%s: %w", patientCollection, id, err)
	}
	rec := &patientRecord{}
	if err := json.Unmarshal(raw.Value, rec); err != nil {
		return nil, 0, fmt.Errorf("decode patient: %w", err)
	}
	return rec, raw.Version, nil
}

// putPatient creates the record (version 0) or updates it.
func putPatient(tx store.Tx, id string, rec *patientRecord, version uint64) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if version == 0 {
		return tx.Create(patientKey(id), data)
	}
	return tx.Update(patientKey(id), data, version)
}

func (s *Service) decodeView(id string, raw store.Record) (*directoryv1.Patient, error) {
	rec := &patientRecord{}
	if err := json.Unmarshal(raw.Value, rec); err != nil {
		return nil, fmt.Errorf("decode patient: %w", err)
	}
	return s.view(id, rec, raw.Version)
}

// view is the API form of a record: the name opened, the ID number masked.
func (s *Service) view(id string, rec *patientRecord, version uint64) (*directoryv1.Patient, error) {
	number, err := s.pii.Open(rec.ResidentID, sealContext(id, kindResidentID))
	if err != nil {
		return nil, fmt.Errorf("open patient %s: %w", id, err)
	}
	name, err := s.pii.Open(rec.Name, sealContext(id, "name"))
	if err != nil {
		return nil, fmt.Errorf("open patient %s: %w", id, err)
	}
	return &directoryv1.Patient{
		Name:                patientCollection + id,
		DisplayName:         name,
		ResidentIdMasked:    maskResidentID(number),
		Sex:                 typev1.Sex(rec.Sex),
		BirthDate:           rec.BirthDate,
		RegisteringFacility: rec.RegisteringFacility,
		CreateTime:          timestamppb.New(rec.CreateTime),
		Etag:                events.Etag(version),
	}, nil
}

// patientChange is the event of a registration or link. The snapshot leaves
// out the name: feeds travel to many systems, and the patient's name is not
// needed to follow the index.
func patientChange(typ string, p *directoryv1.Patient, version uint64, c auth.Caller) events.Change {
	snap := proto.CloneOf(p)
	snap.DisplayName = ""
	return events.Change{Type: typ, Resource: p.GetName(), Version: version, Facilities: []string{c.Facility, p.GetRegisteringFacility()}, Snapshot: snap}
}
