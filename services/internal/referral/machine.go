package referral

import (
	"fmt"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
)

type (
	state         = referralv1.Referral_State
	action        = referralv1.Referral_Action
	followUpState = referralv1.FollowUp_State
)

// Machine is the referral state machine. The moves out of UNSPECIFIED are
// the three ways a referral is created: an up-referral waits for triage, a
// green-channel one skips it, a down-referral waits for its arrival. States
// are specific to a direction where the flows differ, so one table serves
// both directions.
var Machine = fsm.Machine[state]{
	Kind: "referral",
	Moves: map[state][]state{
		referralv1.Referral_STATE_UNSPECIFIED:   {referralv1.Referral_STATE_PENDING, referralv1.Referral_STATE_GREEN_CHANNEL, referralv1.Referral_STATE_SENT},
		referralv1.Referral_STATE_PENDING:       {referralv1.Referral_STATE_ACCEPTED, referralv1.Referral_STATE_REJECTED, referralv1.Referral_STATE_RETURNED, referralv1.Referral_STATE_CANCELLED},
		referralv1.Referral_STATE_RETURNED:      {referralv1.Referral_STATE_PENDING, referralv1.Referral_STATE_CANCELLED},
		referralv1.Referral_STATE_ACCEPTED:      {referralv1.Referral_STATE_ARRIVED, referralv1.Referral_STATE_CANCELLED, referralv1.Referral_STATE_EXPIRED},
		referralv1.Referral_STATE_GREEN_CHANNEL: {referralv1.Referral_STATE_ARRIVED, referralv1.Referral_STATE_CANCELLED},
		referralv1.Referral_STATE_SENT:          {referralv1.Referral_STATE_ARRIVED, referralv1.Referral_STATE_CANCELLED},
		referralv1.Referral_STATE_ARRIVED:       {referralv1.Referral_STATE_COMPLETED},
	},
}

// FollowUpMachine is the state machine of follow-up tasks: created
// scheduled when the patient arrives, then done or missed.
var FollowUpMachine = fsm.Machine[followUpState]{
	Kind: "follow-up",
	Moves: map[followUpState][]followUpState{
		referralv1.FollowUp_STATE_UNSPECIFIED: {referralv1.FollowUp_STATE_SCHEDULED},
		referralv1.FollowUp_STATE_SCHEDULED:   {referralv1.FollowUp_STATE_DONE, referralv1.FollowUp_STATE_MISSED},
	},
}

// side is how a caller relates to a referral; a caller may be on several
// sides (a coordinator of the receiving facility).
type side uint8

const (
	sender side = 1 << iota
	receiver
	coordinator
)

// sides returns the caller's sides of a referral. The facility always comes
// from the token.
func sides(c auth.Caller, r *referralv1.Referral) side {
	var s side
	if c.Facility == r.GetSendingFacility() {
		s |= sender
	}
	if c.Facility == r.GetTargetFacility() {
		s |= receiver
	}
	if c.Has(typev1.Role_ROLE_REFERRAL_COORDINATOR) {
		s |= coordinator
	}
	return s
}

// visible reports whether the caller may see the referral at all: its two
// facilities, the community's coordinators, and MCC's services.
func visible(c auth.Caller, r *referralv1.Referral) bool {
	return sides(c, r) != 0 || c.Has(typev1.Role_ROLE_SERVICE)
}

// right is who may take an action and where it moves the referral (no
// state for an action that changes none).
type right struct {
	to    state
	sides side
}

// Rights is the table of actions: the receiver (or a coordinator) triages,
// confirms arrival and closes; the sender resubmits, enters the green
// channel's record and may cancel, as may a coordinator.
var Rights = map[action]right{
	referralv1.Referral_ACTION_ACCEPT:   {referralv1.Referral_STATE_ACCEPTED, receiver | coordinator},
	referralv1.Referral_ACTION_REJECT:   {referralv1.Referral_STATE_REJECTED, receiver | coordinator},
	referralv1.Referral_ACTION_RETURN:   {referralv1.Referral_STATE_RETURNED, receiver | coordinator},
	referralv1.Referral_ACTION_RESUBMIT: {referralv1.Referral_STATE_PENDING, sender},
	referralv1.Referral_ACTION_ARRIVE:   {referralv1.Referral_STATE_ARRIVED, receiver | coordinator},
	referralv1.Referral_ACTION_COMPLETE: {referralv1.Referral_STATE_COMPLETED, receiver},
	referralv1.Referral_ACTION_CANCEL:   {referralv1.Referral_STATE_CANCELLED, sender | coordinator},
	referralv1.Referral_ACTION_BACKFILL: {0, sender},
}

// Reasons of refused actions that the state machine alone does not explain.
const (
	ReasonNotBackfilled  = "RECORD_NOT_BACKFILLED"
	ReasonFollowUpsOpen  = "FOLLOW_UPS_OPEN"
	ReasonNoBackfill     = "BACKFILL_NOT_ALLOWED"
	ReasonCodeExpired    = "REFERRAL_CODE_EXPIRED"
	ReasonUnknownSending = "SENDING_FACILITY_UNKNOWN"
)

// mayTake returns PermissionDenied unless the caller is on a side that may
// take the action.
func mayTake(c auth.Caller, r *referralv1.Referral, a action) error {
	if Rights[a].sides&sides(c, r) == 0 {
		return fmt.Errorf("%w: your facility and roles may not %s this referral", apierr.ErrPermissionDenied, verb(a))
	}
	return nil
}

// allows returns the refusal of an action in the referral's state: the
// state machine's, then the conditions the table cannot express.
func allows(r *referralv1.Referral, a action) error {
	if to := Rights[a].to; to != 0 {
		if err := Machine.Check(r.GetState(), to); err != nil {
			return err
		}
	}
	switch a {
	case referralv1.Referral_ACTION_COMPLETE:
		if r.GetGreenChannel() && r.GetBackfillTime() == nil {
			return apierr.Condition(ReasonNotBackfilled, "enter the green-channel record (backfill) before completing")
		}
		if r.GetFollowUps().GetScheduled() > 0 {
			return apierr.Condition(ReasonFollowUpsOpen, "%d follow-up tasks are still scheduled", r.GetFollowUps().GetScheduled())
		}
	case referralv1.Referral_ACTION_BACKFILL:
		open := r.GetState() == referralv1.Referral_STATE_GREEN_CHANNEL || r.GetState() == referralv1.Referral_STATE_ARRIVED
		if !r.GetGreenChannel() || r.GetBackfillTime() != nil || !open {
			return apierr.Condition(ReasonNoBackfill, "only an open green-channel referral without its record can be backfilled")
		}
	}
	return nil
}

// allowedActions lists what the caller may do now, in the enum's order.
func allowedActions(c auth.Caller, r *referralv1.Referral) []action {
	var out []action
	for a := referralv1.Referral_ACTION_ACCEPT; a <= referralv1.Referral_ACTION_BACKFILL; a++ {
		if mayTake(c, r, a) == nil && allows(r, a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// verb is an action's name in messages: "accept".
func verb(a action) string { return fsm.EventName(a) }

// followUpRight is who may take an action on a follow-up task and where it
// moves the task.
type followUpRight struct {
	to    followUpState
	sides side
}

// FollowUpRights says who may close a follow-up task: the township that
// received the patient, or a coordinator.
var FollowUpRights = map[referralv1.FollowUp_Action]followUpRight{
	referralv1.FollowUp_ACTION_COMPLETE: {referralv1.FollowUp_STATE_DONE, receiver | coordinator},
	referralv1.FollowUp_ACTION_MISS:     {referralv1.FollowUp_STATE_MISSED, receiver | coordinator},
}

// followUpSides returns the caller's sides of a task: the task's facility is
// the referral's receiver.
func followUpSides(c auth.Caller, f *referralv1.FollowUp) side {
	var s side
	if c.Facility == f.GetFacility() {
		s |= receiver
	}
	if c.Has(typev1.Role_ROLE_REFERRAL_COORDINATOR) {
		s |= coordinator
	}
	return s
}

// followUpActions lists what the caller may do to a task now.
func followUpActions(c auth.Caller, f *referralv1.FollowUp) []referralv1.FollowUp_Action {
	var out []referralv1.FollowUp_Action
	for _, a := range []referralv1.FollowUp_Action{referralv1.FollowUp_ACTION_COMPLETE, referralv1.FollowUp_ACTION_MISS} {
		if r := FollowUpRights[a]; r.sides&followUpSides(c, f) != 0 && FollowUpMachine.Allows(f.GetState(), r.to) {
			out = append(out, a)
		}
	}
	return out
}
