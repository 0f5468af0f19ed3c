// Package imaging is the county's remote imaging center (医学影像中心) on
// the shared reading workflow (package reading). What is its own: an exam
// names a study already in the township's PACS, which is checked with
// DICOMweb QIDO-RS before anything is written (the study must exist, be of
// the exam's patient and of a modality of the exam type); the PACS's
// patient ID and name are kept only sealed; and a report's key images
// must be instances of the study.
package imaging

import (
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	imagingv1 "github.com/countymcc/mcc/proto/mcc/imaging/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/reading"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "imaging"

// catalog is the built-in exam catalog: plain films, CT and MR, with the
// turnaround limits of DOMAIN.md (emergency X-ray 30 minutes, emergency
// CT/MR 60 minutes, routine X-ray 2 hours, outpatient CT/MR 4 working
// hours, inpatient 6 hours).
//
//go:embed examtypes.json
var catalog []byte

// Config is the imaging center's part of mcc's configuration.
type Config struct {
	// DICOMwebURL is the PACS's DICOMweb root.
	DICOMwebURL string
	// PACSTimeout bounds one QIDO-RS call.
	PACSTimeout time.Duration
	// Reading is the shared workflow's configuration.
	Reading reading.Config
}

// RegisterFlags registers the imaging flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DICOMwebURL, "imaging.dicomweb-url", "http://127.0.0.1:8042/dicom-web", "DICOMweb root of the PACS the townships upload studies to (QIDO-RS is used to check each requested study)")
	fs.DurationVar(&c.PACSTimeout, "imaging.pacs-timeout", 5*time.Second, "longest wait for one QIDO-RS answer of the PACS")
	c.Reading.RegisterFlags(fs, Name+".")
}

// Reasons of refused exams.
const (
	// ReasonStudyNotFound is a StudyInstanceUID the PACS does not have.
	ReasonStudyNotFound = "STUDY_NOT_FOUND"
	// ReasonPatientMismatch is a study of another patient.
	ReasonPatientMismatch = "PATIENT_MISMATCH"
	// ReasonModalityMismatch is a study without a modality of the exam
	// type.
	ReasonModalityMismatch = "MODALITY_MISMATCH"
)

// Service implements imagingv1.ImagingServiceServer: the shared methods
// are the flow's, bound to this service's proto.
type Service struct {
	imagingv1.UnimplementedImagingServiceServer
	*reading.Flow

	pacs *PACS
	pii  *pii.Protector
}

// New returns the imaging service on s. Peers reach the directory;
// protector seals the PACS's patient identifiers.
func New(s store.Store, clk clock.Clock, peers *peer.Peers, protector *pii.Protector, logger *slog.Logger, cfg Config) (*Service, error) {
	pacs, err := NewPACS(cfg.DICOMwebURL, cfg.PACSTimeout)
	if err != nil {
		return nil, err
	}
	svc := &Service{pacs: pacs, pii: protector}
	if svc.Flow, err = reading.New(reading.Center{
		Service:     Name,
		Desc:        &imagingv1.ImagingService_ServiceDesc,
		Kind:        typev1.Center_CENTER_IMAGING,
		Reader:      typev1.Role_ROLE_RADIOLOGIST,
		Catalog:     catalog,
		Prepare:     svc.checkStudy,
		CheckReport: svc.checkKeyImages,
	}, svc, s, clk, peers, logger, cfg.Reading); err != nil {
		return nil, err
	}
	return svc, nil
}

// Policy says which roles may call each method: radiologists read,
// clinicians request.
func Policy() auth.Policy {
	return reading.Policy(&imagingv1.ImagingService_ServiceDesc, typev1.Role_ROLE_RADIOLOGIST, nil)
}

// pacsPatientKey is where the PACS's patient ID and name of an exam are
// kept, sealed: they were needed to check the match, and are never
// returned, logged or put in events.
func pacsPatientKey(exam string) string { return "pacspatient/" + exam }

// sealed is the stored form of the PACS's patient identifiers.
type sealed struct {
	ID   []byte `json:"id"`
	Name []byte `json:"name"`
}

// checkStudy is the imaging center's Prepare: it asks the PACS for the
// requested study, before any transaction, and refuses a study that is
// unknown, of another patient or of the wrong modality. The study has then
// arrived with the request.
func (s *Service) checkStudy(ctx context.Context, _ auth.Caller, e *typev1.Exam, patient *directoryv1.Patient, et *typev1.ExamType) (reading.Prepared, error) {
	uid := e.GetStudy().GetStudyInstanceUid()
	found, ok, err := s.pacs.Study(ctx, uid)
	if err != nil {
		return reading.Prepared{}, err
	}
	if !ok {
		return reading.Prepared{}, apierr.Condition(ReasonStudyNotFound, "the PACS has no study %s: upload it before requesting its reading", uid)
	}
	if why := mismatch(patient, found); why != "" {
		return reading.Prepared{}, apierr.Condition(ReasonPatientMismatch, "study %s is not of the exam's patient %s: %s", uid, e.GetPatient(), why)
	}
	if want := et.GetModalities(); len(want) > 0 && !slices.ContainsFunc(found.modalities, func(m string) bool { return slices.Contains(want, m) }) {
		return reading.Prepared{}, apierr.Condition(ReasonModalityMismatch, "study %s is %v; %s needs one of %v", uid, found.modalities, et.GetCode().GetCode(), want)
	}
	e.Material = &typev1.Exam_Study{Study: &typev1.ImagingStudy{
		StudyInstanceUid: uid, Modalities: found.modalities, BodyParts: found.bodyParts,
		StudyDate: isoDate(found.studyDate), SeriesCount: int32(found.seriesCount), InstanceCount: int32(found.imagesCount),
		PatientIdMasked: maskID(found.patientID), CheckTime: timestamppb.New(s.Flow.Clock().Now()),
	}}
	where := e.GetName() + "/pacs_patient"
	id, err := s.pii.Seal(found.patientID, where+"/id")
	if err != nil {
		return reading.Prepared{}, err
	}
	name, err := s.pii.Seal(found.patientName, where+"/name")
	if err != nil {
		return reading.Prepared{}, err
	}
	data, err := json.Marshal(sealed{ID: id, Name: name})
	if err != nil {
		return reading.Prepared{}, err
	}
	return reading.Prepared{Arrived: true, Write: func(tx store.Tx, e *typev1.Exam) error {
		return tx.Put(pacsPatientKey(e.GetName()), data)
	}}, nil
}

// checkKeyImages checks that a report's key images are instances of the
// exam's study.
func (s *Service) checkKeyImages(ctx context.Context, e *typev1.Exam, content *typev1.ReportContent) error {
	if len(content.GetKeyImages()) == 0 {
		return nil
	}
	instances, err := s.pacs.Instances(ctx, e.GetStudy().GetStudyInstanceUid())
	if err != nil {
		return err
	}
	for i, uid := range content.GetKeyImages() {
		if !instances[uid] {
			return apierr.Invalid(fmt.Sprintf("content.key_images[%d]", i), "%s is not an instance of study %s", uid, e.GetStudy().GetStudyInstanceUid())
		}
	}
	return nil
}

// isoDate turns a DICOM date YYYYMMDD into YYYY-MM-DD; anything else is
// kept as it is.
func isoDate(d string) string {
	if t, err := time.Parse("20060102", d); err == nil {
		return t.Format(time.DateOnly)
	}
	return d
}

// ExamTypes returns the built-in exam types in code order; the recognition
// catalog is seeded from them.
func ExamTypes() ([]*typev1.ExamType, error) {
	return reading.SeedExamTypes(typev1.Center_CENTER_IMAGING, catalog)
}
