package reading

import (
	"context"
	"errors"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// fromDirectory reads, as the service itself, the exam's patient (who must
// be in the community's patient index) and the facility that hosts this
// center for the caller's facility. It runs before any transaction.
func (f *Flow) fromDirectory(ctx context.Context, c auth.Caller, patient string) (*directoryv1.Patient, string, error) {
	found, err := f.dir.Patient(ctx, c, patient)
	if errors.Is(err, directory.ErrNoPatient) {
		return nil, "", apierr.Invalid("exam.patient", "is not a patient of the community's patient index")
	}
	if err != nil {
		return nil, "", err
	}
	center, err := f.dir.Center(ctx, c, f.center.Kind)
	switch {
	case errors.Is(err, directory.ErrFacilityUnknown):
		return nil, "", apierr.Condition(ReasonFacilityUnknown, "the caller's facility %s is not in the directory", c.Facility)
	case errors.Is(err, directory.ErrNoCenter):
		return nil, "", apierr.Condition(ReasonNoCenter, "the directory names no %s for %s", f.center.Kind, c.Facility)
	}
	return found, center, err
}
