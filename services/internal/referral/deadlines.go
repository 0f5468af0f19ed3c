package referral

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The kinds of referral timers. Each is keyed by the referral's ID (a
// task's ID for follow-ups) and set in the transaction that starts its
// clock.
const (
	// timerTriage escalates a referral not triaged in time.
	timerTriage = "referral-triage"
	// timerCode expires an accepted referral whose patient did not arrive
	// before the code expired.
	timerCode = "referral-code"
	// timerFollowUp reports a follow-up task not done by its due time plus
	// the grace period.
	timerFollowUp = "referral-follow-up"
)

// systemCaller is the actor of what the service does by itself when a
// deadline passes.
func systemCaller(community string) auth.Caller {
	return auth.Caller{Subject: "mcc-" + Name, Community: community, Facility: peer.ServiceFacility, Roles: []typev1.Role{typev1.Role_ROLE_SERVICE}}
}

// triageOverdue escalates a referral still pending triage when its clock
// runs out: the worklist flag, and an event to both facilities and the
// coordinators. The time recorded is when triage was due, not when the
// timer was noticed.
func (s *Service) triageOverdue(tx store.Tx, t deadline.Timer) error {
	r, version, err := referrals.Get(tx, referrals.Name(t.ID))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil || r.GetState() != referralv1.Referral_STATE_PENDING || r.GetEscalated() {
		return err
	}
	r.Escalated, r.EscalateTime = true, timestamppb.New(t.At)
	resource.Stamp(r, t.At, false)
	if err := referrals.Update(tx, r, version); err != nil {
		return err
	}
	return events.Append(tx, systemCaller(string(t.Partition)), t.At, referrals.Change("referral.escalated", r, version+1))
}

// codeExpired expires an accepted referral whose patient did not arrive in
// time.
func (s *Service) codeExpired(tx store.Tx, t deadline.Timer) error {
	var before *referralv1.Referral
	return applyDue(tx, t, referrals, Machine, referrals.Name(t.ID), referralv1.Referral_STATE_ACCEPTED, referralv1.Referral_STATE_EXPIRED, "the referral code expired",
		func(r *referralv1.Referral) { before = proto.CloneOf(r) },
		func(r *referralv1.Referral) error { return reindex(tx, before, r) })
}

// followUpOverdue reports a follow-up task missed when it was not done by
// its due time plus the grace period.
func (s *Service) followUpOverdue(tx store.Tx, t deadline.Timer) error {
	var before *referralv1.FollowUp
	c := systemCaller(string(t.Partition))
	return applyDue(tx, t, followUps, FollowUpMachine, followUps.Name(t.ID), referralv1.FollowUp_STATE_SCHEDULED, referralv1.FollowUp_STATE_MISSED, "not done by its due time",
		func(f *referralv1.FollowUp) { before = proto.CloneOf(f) },
		func(f *referralv1.FollowUp) error {
			f.Outcome = "not done by its due time"
			return followUpClosed(tx, c, t.At, before, f)
		})
}

// applyDue moves a resource from one state to another when its timer
// fires, inside the timer's transaction: fsm.Transition opens a
// transaction of its own, so this is its body for handlers. A resource
// that is gone or has left the state is left alone: the timer is stale.
func applyDue[T proto.Message, S fsm.State](tx store.Tx, t deadline.Timer, table resource.Table[T], m fsm.Machine[S], name string, from, to S, reason string, seen func(T), after func(T) error) error {
	msg, version, err := table.Get(tx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if S(msg.ProtoReflect().Get(msg.ProtoReflect().Descriptor().Fields().ByName("state")).Enum()) != from {
		return nil
	}
	seen(msg)
	c := systemCaller(string(t.Partition))
	if err := m.Apply(msg, to, c, t.At, reason); err != nil {
		return err
	}
	if err := after(msg); err != nil {
		return fmt.Errorf("%s %s: %w", name, fsm.EventName(to), err)
	}
	if err := table.Update(tx, msg, version); err != nil {
		return err
	}
	return events.Append(tx, c, t.At, table.Change(table.Event+"."+fsm.EventName(to), msg, version+1))
}

// timeOf is a timestamp's time, the zero time for none.
func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}
