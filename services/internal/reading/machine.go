package reading

import (
	"slices"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
)

// State is an exam's state.
type State = typev1.Exam_State

// The states, for readability.
const (
	Requested   = typev1.Exam_STATE_REQUESTED
	Arrived     = typev1.Exam_STATE_ARRIVED
	Assigned    = typev1.Exam_STATE_ASSIGNED
	Preliminary = typev1.Exam_STATE_PRELIMINARY
	Reviewed    = typev1.Exam_STATE_REVIEWED
	Final       = typev1.Exam_STATE_FINAL
	Amended     = typev1.Exam_STATE_AMENDED
	Rejected    = typev1.Exam_STATE_REJECTED
	Cancelled   = typev1.Exam_STATE_CANCELLED
)

// Machine is the exam's state machine, the one table every center runs.
// The moves that stay in a state are a reassignment (assigned ->
// assigned), a rewritten preliminary report, and an amendment or addendum
// of a released report. A preliminary report goes back to assigned when
// its reviewer returns it or it is reassigned. Only the material can be
// rejected and only an unread exam cancelled.
func Machine() fsm.Machine[State] {
	return fsm.Machine[State]{
		Kind: "exam",
		Moves: map[State][]State{
			typev1.Exam_STATE_UNSPECIFIED: {Requested},
			Requested:                     {Arrived, Rejected, Cancelled},
			Arrived:                       {Assigned, Rejected, Cancelled},
			Assigned:                      {Assigned, Preliminary, Rejected, Cancelled},
			Preliminary:                   {Preliminary, Reviewed, Assigned},
			Reviewed:                      {Final},
			Final:                         {Final, Amended},
			Amended:                       {Amended},
		},
	}
}

// open reports whether an exam is being worked on at the center: its
// material arrived and its report is not released. Open exams make a
// center "busy" for a frozen section, count in a reader's load, and run a
// turnaround clock.
func open(s State) bool { return slices.Contains([]State{Arrived, Assigned, Preliminary, Reviewed}, s) }

// pending reports whether an exam is on the center's worklist: requested
// or open.
func pending(s State) bool { return s == Requested || open(s) }

// released reports whether an exam's report is released.
func released(s State) bool { return s == Final || s == Amended }

// Reasons of refused operations that the state machine alone does not
// explain. Clients switch on them (ErrorInfo.reason).
const (
	// ReasonSamePerson: the reviewer wrote (or reads) the report.
	ReasonSamePerson = "SAME_PERSON"
	// ReasonReportNotFinal: an addendum before the report is released.
	ReasonReportNotFinal = "REPORT_NOT_FINAL"
	// ReasonDelayReasonRequired: a late report released without the
	// reason of its delay, where the center requires one.
	ReasonDelayReasonRequired = "DELAY_REASON_REQUIRED"
	// ReasonExamClosed: a change to an exam that is no longer being read.
	ReasonExamClosed = "EXAM_CLOSED"
	// ReasonNoCenter: the directory assigns no center of this kind to the
	// requesting facility.
	ReasonNoCenter = "NO_CENTER"
	// ReasonNoTurnaround: the exam type has no limit for the priority.
	ReasonNoTurnaround = "NO_TURNAROUND_LIMIT"
	// ReasonFacilityUnknown: the caller's facility is not in the directory.
	ReasonFacilityUnknown = "FACILITY_UNKNOWN"
)

// stateName is the enum value name of a state, as the timeline records it.
func stateName(s State) string { return s.String() }
