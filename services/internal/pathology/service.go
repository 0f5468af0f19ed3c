// Package pathology is the county's remote pathology center (病理诊断中心)
// on the shared reading workflow (package reading). What is its own: the
// center receives (核收) a case's specimens with their excision and
// fixation start times, and more than the fixation limit between them (60
// minutes) raises an alert; it records the gross description and every
// block, slide and special stain under a barcode unique in the community;
// a frozen section is due in 30 minutes, 45 while the previous one is
// unfinished (the catalog's busy limit); and a late report must give the
// reason of its delay before it is released.
package pathology

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/reading"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "pathology"

// catalog is the built-in exam catalog: routine histopathology (5 working
// days), frozen sections (30 minutes, 45 when busy) and cytology.
//
//go:embed examtypes.json
var catalog []byte

// Config is the pathology center's part of mcc's configuration.
type Config struct {
	// FixationLimit is the longest time from excision to fixation without
	// an alert.
	FixationLimit time.Duration
	// Reading is the shared workflow's configuration.
	Reading reading.Config
}

// RegisterFlags registers the pathology flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.FixationLimit, "pathology.fixation-limit", time.Hour, "longest time from excision to fixation before a received specimen raises an alert")
	c.Reading.RegisterFlags(fs, Name+".")
}

// Service implements pathologyv1.PathologyServiceServer: the shared
// methods are the flow's, the specimen, gross and slide methods its own.
type Service struct {
	pathologyv1.UnimplementedPathologyServiceServer
	*reading.Flow

	cfg Config
}

// New returns the pathology service on s. Peers reach the directory.
func New(s store.Store, clk clock.Clock, peers *peer.Peers, logger *slog.Logger, cfg Config) (*Service, error) {
	if cfg.FixationLimit <= 0 {
		return nil, errors.New("-pathology.fixation-limit: must be positive")
	}
	svc := &Service{cfg: cfg}
	var err error
	if svc.Flow, err = reading.New(reading.Center{
		Service:            Name,
		Desc:               &pathologyv1.PathologyService_ServiceDesc,
		Kind:               typev1.Center_CENTER_PATHOLOGY,
		Reader:             typev1.Role_ROLE_PATHOLOGIST,
		Catalog:            catalog,
		RequireDelayReason: true,
	}, svc, s, clk, peers, logger, cfg.Reading); err != nil {
		return nil, err
	}
	return svc, nil
}

// Policy says which roles may call each method: pathologists run the
// center, clinicians request.
func Policy() auth.Policy {
	pathologist := []typev1.Role{typev1.Role_ROLE_PATHOLOGIST}
	return reading.Policy(&pathologyv1.PathologyService_ServiceDesc, typev1.Role_ROLE_PATHOLOGIST, map[string][]typev1.Role{
		"ReceiveSpecimens": pathologist,
		"RecordGross":      pathologist,
		"AddSlides":        pathologist,
	})
}

// barcodeKey reserves a specimen, block or slide barcode in the community
// for the exam that uses it.
func barcodeKey(barcode string) string { return "barcode/" + barcode }

// claimBarcode reserves a barcode, or refuses one already used.
func claimBarcode(tx store.Tx, barcode, exam, field string) error {
	err := tx.Create(barcodeKey(barcode), []byte(exam))
	if errors.Is(err, store.ErrAlreadyExists) {
		return apierr.Invalid(field, "barcode %s is already used in this community", barcode)
	}
	return err
}

// pathologyCase returns the exam's case, creating it.
func pathologyCase(e *typev1.Exam) *typev1.PathologyCase {
	if e.GetPathologyCase() == nil {
		e.Material = &typev1.Exam_PathologyCase{PathologyCase: &typev1.PathologyCase{}}
	}
	return e.GetPathologyCase()
}

// ReceiveSpecimens records the reception (核收) of an exam's specimens:
// the material has arrived. A specimen fixed later than the fixation
// limit after its excision raises `exam.fixation_delayed`.
func (s *Service) ReceiveSpecimens(ctx context.Context, req *pathologyv1.ReceiveSpecimensRequest) (*pathologyv1.ReceiveSpecimensResponse, error) {
	e, err := s.Flow.Arrive(ctx, req.GetName(), req.GetEtag(), reading.ByCenter, func(ed *reading.Edit) ([]string, error) {
		delayed := false
		pc := pathologyCase(ed.Exam)
		for i, in := range req.GetSpecimens() {
			field := fmt.Sprintf("specimens[%d]", i)
			sp, err := s.received(in, ed.Type, ed.Now, field)
			if err != nil {
				return nil, err
			}
			if err := claimBarcode(ed.Tx, sp.GetBarcode(), ed.Exam.GetName(), field+".barcode"); err != nil {
				return nil, err
			}
			delayed = delayed || sp.GetFixationDelayed()
			pc.Specimens = append(pc.Specimens, sp)
		}
		if delayed {
			return []string{"fixation_delayed"}, nil
		}
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return &pathologyv1.ReceiveSpecimensResponse{Exam: e}, nil
}

// received checks one received specimen's times and computes its
// fixation delay.
func (s *Service) received(in *typev1.PathologySpecimen, et *typev1.ExamType, now time.Time, field string) (*typev1.PathologySpecimen, error) {
	sp := proto.CloneOf(in)
	excision := sp.GetExcisionTime().AsTime()
	if excision.After(now) {
		return nil, apierr.Invalid(field+".excision_time", "is in the future")
	}
	sp.ReceiveTime = timestamppb.New(now)
	sp.FixationDelayMinutes, sp.FixationDelayed = 0, false
	if sp.GetFixationStartTime() == nil {
		if !et.GetFreshSpecimen() {
			return nil, apierr.Invalid(field+".fixation_start_time", "is required: %s specimens arrive fixed", et.GetCode().GetCode())
		}
		return sp, nil
	}
	fixation := sp.GetFixationStartTime().AsTime()
	if fixation.Before(excision) || fixation.After(now) {
		return nil, apierr.Invalid(field+".fixation_start_time", "must be between the excision and now")
	}
	delay := fixation.Sub(excision)
	sp.FixationDelayMinutes = delay.Minutes()
	sp.FixationDelayed = delay > s.cfg.FixationLimit
	return sp, nil
}

// RecordGross records the gross description and the blocks cut from the
// case's specimens.
func (s *Service) RecordGross(ctx context.Context, req *pathologyv1.RecordGrossRequest) (*pathologyv1.RecordGrossResponse, error) {
	e, err := s.Flow.Update(ctx, req.GetName(), req.GetEtag(), reading.ByCenter, "gross_recorded", func(ed *reading.Edit) error {
		pc := pathologyCase(ed.Exam)
		for i, in := range req.GetBlocks() {
			field := fmt.Sprintf("blocks[%d]", i)
			if !slices.ContainsFunc(pc.GetSpecimens(), func(sp *typev1.PathologySpecimen) bool { return sp.GetBarcode() == in.GetSpecimen() }) {
				return apierr.Invalid(field+".specimen", "%s is not a specimen of %s", in.GetSpecimen(), ed.Exam.GetName())
			}
			if err := claimBarcode(ed.Tx, in.GetBarcode(), ed.Exam.GetName(), field+".barcode"); err != nil {
				return err
			}
			b := proto.CloneOf(in)
			b.CreateTime = timestamppb.New(ed.Now)
			pc.Blocks = append(pc.Blocks, b)
		}
		pc.GrossDescription, pc.GrossedBy, pc.GrossTime = req.GetDescription(), ed.Caller.Subject, timestamppb.New(ed.Now)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pathologyv1.RecordGrossResponse{Exam: e}, nil
}

// routineStain is the code of the routine stain; every other stain is a
// special stain or immunostain.
const routineStain = "HE"

// AddSlides records slides cut from the case's blocks, routine or special.
func (s *Service) AddSlides(ctx context.Context, req *pathologyv1.AddSlidesRequest) (*pathologyv1.AddSlidesResponse, error) {
	e, err := s.Flow.Update(ctx, req.GetName(), req.GetEtag(), reading.ByCenter, "slides_added", func(ed *reading.Edit) error {
		pc := pathologyCase(ed.Exam)
		for i, in := range req.GetSlides() {
			field := fmt.Sprintf("slides[%d]", i)
			if !slices.ContainsFunc(pc.GetBlocks(), func(b *typev1.PathologyBlock) bool { return b.GetBarcode() == in.GetBlock() }) {
				return apierr.Invalid(field+".block", "%s is not a block of %s", in.GetBlock(), ed.Exam.GetName())
			}
			if in.GetStain().GetCode() == "" {
				return apierr.Invalid(field+".stain", "a stain code is required (%s, or a special stain)", routineStain)
			}
			if err := claimBarcode(ed.Tx, in.GetBarcode(), ed.Exam.GetName(), field+".barcode"); err != nil {
				return err
			}
			sl := proto.CloneOf(in)
			sl.Special = !strings.EqualFold(sl.GetStain().GetCode(), routineStain)
			sl.CreatedBy, sl.CreateTime = ed.Caller.Subject, timestamppb.New(ed.Now)
			pc.Slides = append(pc.Slides, sl)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pathologyv1.AddSlidesResponse{Exam: e}, nil
}

// ExamTypes returns the built-in exam types in code order; the recognition
// catalog is seeded from them.
func ExamTypes() ([]*typev1.ExamType, error) {
	return reading.SeedExamTypes(typev1.Center_CENTER_PATHOLOGY, catalog)
}
