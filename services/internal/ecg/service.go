// Package ecg is the county's remote ECG diagnosis center (心电诊断中心) on
// the shared reading workflow (package reading). What is its own: a
// township uploads a 12-lead resting ECG as sampled data or as a DICOM
// 12-lead ECG waveform file (read by this package's own reader), which is
// checked, stored once in the sampled form and served back in it; a
// machine pre-read (R peaks, heart rate, RR intervals, rate flags) comes
// with it and stays machine-read until a cardiologist confirms it; and a
// suspected STEMI, flagged by the requester or a reader, moves the exam to
// the top of the worklist with a 10-minute target.
package ecg

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ecgv1 "github.com/countymcc/mcc/proto/mcc/ecg/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/ecg/dicom"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/reading"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "ecg"

// catalog is the built-in exam catalog: the resting 12-lead ECG, due in
// 10 minutes for emergencies and expedited exams.
//
//go:embed examtypes.json
var catalog []byte

// Config is the ECG center's part of mcc's configuration.
type Config struct {
	// Reading is the shared workflow's configuration.
	Reading reading.Config
}

// RegisterFlags registers the ECG flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) { c.Reading.RegisterFlags(fs, Name+".") }

// Service implements ecgv1.EcgServiceServer: the shared methods are the
// flow's, the recording methods its own.
type Service struct {
	ecgv1.UnimplementedEcgServiceServer
	*reading.Flow
}

// New returns the ECG service on s. Peers reach the directory.
func New(s store.Store, clk clock.Clock, peers *peer.Peers, logger *slog.Logger, cfg Config) (*Service, error) {
	svc := &Service{}
	var err error
	if svc.Flow, err = reading.New(reading.Center{
		Service: Name,
		Desc:    &ecgv1.EcgService_ServiceDesc,
		Kind:    typev1.Center_CENTER_ECG,
		Reader:  typev1.Role_ROLE_CARDIOLOGIST,
		Catalog: catalog,
	}, svc, s, clk, peers, logger, cfg.Reading); err != nil {
		return nil, err
	}
	return svc, nil
}

// Policy says which roles may call each method: cardiologists read,
// clinicians request and upload; either may flag a suspected STEMI.
func Policy() auth.Policy {
	var (
		clinician    = typev1.Role_ROLE_CLINICIAN
		cardiologist = typev1.Role_ROLE_CARDIOLOGIST
	)
	return reading.Policy(&ecgv1.EcgService_ServiceDesc, cardiologist, map[string][]typev1.Role{
		"UploadRecording":    {clinician, cardiologist},
		"GetWaveform":        {clinician, cardiologist, typev1.Role_ROLE_ADMIN},
		"FlagSuspectedStemi": {clinician, cardiologist},
		"ConfirmPreRead":     {cardiologist},
	})
}

// waveformKey is where an exam's recording is stored, once, as sampled
// data (an EcgWaveform).
func waveformKey(exam string) string { return "waveform/" + exam }

// UploadRecording checks and stores an exam's recording, with its
// machine pre-read: the material has arrived. The parsing, checking and
// pre-read run before the transaction.
func (s *Service) UploadRecording(ctx context.Context, req *ecgv1.UploadRecordingRequest) (*ecgv1.UploadRecordingResponse, error) {
	rec := &typev1.EcgRecording{}
	var w *typev1.EcgWaveform
	var err error
	switch in := req.GetRecording().(type) {
	case *ecgv1.UploadRecordingRequest_Sampled:
		rec.Source = typev1.EcgSource_ECG_SOURCE_SAMPLED
		w, err = checkWaveform(in.Sampled, sampledField)
	case *ecgv1.UploadRecordingRequest_Dicom:
		rec.Source = typev1.EcgSource_ECG_SOURCE_DICOM
		var file *dicom.ECG
		if file, err = dicom.ReadECG(in.Dicom); err != nil {
			return nil, apierr.Invalid("dicom", "%s", dicomProblem(err))
		}
		rec.SopInstanceUid = file.SOPInstanceUID
		w, err = checkWaveform(sampled(file), dicomField)
	}
	if err != nil {
		return nil, err
	}
	first := w.GetLeads()[0]
	rec.SampleRateHz, rec.SamplesPerLead = first.GetSampleRateHz(), int32(len(first.GetSamples()))
	rec.DurationSeconds = float64(rec.GetSamplesPerLead()) / rec.GetSampleRateHz()
	for _, l := range w.GetLeads() {
		rec.Leads = append(rec.Leads, l.GetName())
	}
	rec.PreRead = PreRead(w)
	data, err := proto.Marshal(w)
	if err != nil {
		return nil, err
	}
	e, err := s.Flow.Arrive(ctx, req.GetName(), req.GetEtag(), reading.ByEither, func(ed *reading.Edit) ([]string, error) {
		stored := proto.CloneOf(rec)
		stored.UploadTime = timestamppb.New(ed.Now)
		ed.Exam.Material = &typev1.Exam_Recording{Recording: stored}
		return nil, ed.Tx.Put(waveformKey(ed.Exam.GetName()), data)
	})
	if err != nil {
		return nil, err
	}
	return &ecgv1.UploadRecordingResponse{Exam: e}, nil
}

// dicomProblem says what is wrong with a DICOM file without quoting its
// content beyond the reader's own message.
func dicomProblem(err error) string {
	switch {
	case errors.Is(err, dicom.ErrNotDICOM):
		return "is not a DICOM Part 10 file (no DICM prefix)"
	case errors.Is(err, dicom.ErrUnsupported), errors.Is(err, dicom.ErrCorrupt):
		return err.Error()
	}
	return "cannot be read: " + err.Error()
}

// sampled is a DICOM file's waveform in the sampled-data form.
func sampled(file *dicom.ECG) *typev1.EcgWaveform {
	w := &typev1.EcgWaveform{}
	for _, l := range file.Leads {
		w.Leads = append(w.Leads, &typev1.EcgLead{Name: l.Name, SampleRateHz: l.SampleRateHz, MicrovoltsPerUnit: l.MicrovoltsPerUnit, Samples: l.Samples})
	}
	return w
}

// GetWaveform returns an exam's recording as sampled data.
func (s *Service) GetWaveform(ctx context.Context, req *ecgv1.GetWaveformRequest) (*ecgv1.GetWaveformResponse, error) {
	name := strings.TrimSuffix(req.GetName(), "/waveform")
	e, err := s.Flow.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	c, _ := auth.CallerFrom(ctx)
	rec, err := s.Flow.Store().Get(ctx, c.Partition(), waveformKey(e.GetName()))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s: no recording was uploaded: %w", req.GetName(), store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	w := &typev1.EcgWaveform{}
	if err := proto.Unmarshal(rec.Value, w); err != nil {
		return nil, fmt.Errorf("decode %s: %w", rec.Key, err)
	}
	return &ecgv1.GetWaveformResponse{Waveform: w}, nil
}

// suspectedSTEMI is the flag of a suspected ST-elevation myocardial
// infarction.
func suspectedSTEMI() *typev1.Code {
	return &typev1.Code{System: "urn:mcc:ecg-flag", Code: "SUSPECTED_STEMI", Display: "疑似急性ST段抬高型心肌梗死 suspected STEMI"}
}

// FlagSuspectedStemi moves an exam to the top of its center's worklist,
// due 10 minutes after its recording arrived.
func (s *Service) FlagSuspectedStemi(ctx context.Context, req *ecgv1.FlagSuspectedStemiRequest) (*ecgv1.FlagSuspectedStemiResponse, error) {
	e, err := s.Flow.Expedite(ctx, req.GetName(), req.GetEtag(), reading.ByEither, suspectedSTEMI())
	if err != nil {
		return nil, err
	}
	return &ecgv1.FlagSuspectedStemiResponse{Exam: e}, nil
}

// ReasonNoRecording refuses to confirm the pre-read of an exam without a
// recording.
const ReasonNoRecording = "NO_RECORDING"

// ConfirmPreRead records a cardiologist's confirmation of the machine
// pre-read, with the heart rate they confirm (the machine's when none is
// given).
func (s *Service) ConfirmPreRead(ctx context.Context, req *ecgv1.ConfirmPreReadRequest) (*ecgv1.ConfirmPreReadResponse, error) {
	e, err := s.Flow.Update(ctx, req.GetName(), req.GetEtag(), reading.ByCenter, "pre_read_confirmed", func(ed *reading.Edit) error {
		pre := ed.Exam.GetRecording().GetPreRead()
		if pre == nil {
			return apierr.Condition(ReasonNoRecording, "%s has no recording to confirm", ed.Exam.GetName())
		}
		pre.Status = typev1.EcgPreRead_STATUS_CONFIRMED
		pre.ConfirmedBy, pre.ConfirmTime = ed.Caller.Subject, timestamppb.New(ed.Now)
		pre.ConfirmedHeartRateBpm = pre.GetHeartRateBpm()
		if req.GetHeartRateBpm() > 0 {
			pre.ConfirmedHeartRateBpm = req.GetHeartRateBpm()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &ecgv1.ConfirmPreReadResponse{Exam: e}, nil
}

// ExamTypes returns the built-in exam types in code order; the recognition
// catalog is seeded from them.
func ExamTypes() ([]*typev1.ExamType, error) {
	return reading.SeedExamTypes(typev1.Center_CENTER_ECG, catalog)
}
