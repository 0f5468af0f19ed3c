package reading

import (
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
)

// limitFor returns the turnaround limit of an exam type for a priority
// and patient class: the row for that class, else the row for any class.
func limitFor(et *typev1.ExamType, priority typev1.ExamPriority, class typev1.PatientClass) *typev1.TurnaroundLimit {
	var general *typev1.TurnaroundLimit
	for _, row := range et.GetTurnaround() {
		if row.GetPriority() != priority {
			continue
		}
		switch row.GetPatientClass() {
		case class:
			if class != typev1.PatientClass_PATIENT_CLASS_UNSPECIFIED {
				return row
			}
			general = row
		case typev1.PatientClass_PATIENT_CLASS_UNSPECIFIED:
			general = row
		}
	}
	return general
}

// dueTime is when the final report of an exam whose material arrived at
// from is due. busy says another exam of the type is open at the center,
// which applies the row's busy limit (a frozen section while the previous
// one is unfinished).
func (f *Flow) dueTime(et *typev1.ExamType, e *typev1.Exam, from time.Time, busy bool) (time.Time, error) {
	row := limitFor(et, e.GetPriority(), e.GetPatientClass())
	if row == nil {
		return time.Time{}, apierr.Condition(ReasonNoTurnaround, "exam type %s has no turnaround limit for %s", et.GetCode().GetCode(), e.GetPriority())
	}
	limit := row.GetLimit().AsDuration()
	if busy && row.GetBusyLimit().AsDuration() > 0 {
		limit = row.GetBusyLimit().AsDuration()
	}
	switch row.GetBasis() {
	case typev1.TurnaroundBasis_TURNAROUND_BASIS_WORKING_HOURS:
		return f.calendar.addWorkingTime(from, limit)
	case typev1.TurnaroundBasis_TURNAROUND_BASIS_WORKING_DAYS:
		return f.calendar.addWorkingDays(from, int(limit/(24*time.Hour)))
	default:
		return from.Add(limit), nil
	}
}
