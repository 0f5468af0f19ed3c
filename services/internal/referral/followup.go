package referral

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// followUpName is the name of a referral's n-th task. Numbers are
// zero-padded so tasks list in order.
func followUpName(referral string, n int) string {
	return fmt.Sprintf("%s/followUps/%02d", referral, n)
}

// parentOf is the referral a task belongs to.
func parentOf(task string) string {
	parent, _, _ := strings.Cut(task, "/followUps/")
	return parent
}

// scheduleFollowUps turns a down-referral's care plan into follow-up
// tasks when the patient arrives, each due its number of days after the
// arrival, with a timer that reports it missed after the grace period.
func (s *Service) scheduleFollowUps(tx store.Tx, r *referralv1.Referral, now time.Time) error {
	if r.GetDirection() != referralv1.Direction_DIRECTION_DOWN {
		return nil
	}
	arrived := r.GetArriveTime().AsTime()
	// The tasks are created by whoever confirmed the arrival, the move
	// just applied.
	actor := lastActor(r)
	c := auth.Caller{Subject: actor.GetSubject(), Facility: actor.GetFacility(), Roles: actor.GetRoles()}
	for i, t := range r.GetCarePlan().GetTasks() {
		f := &referralv1.FollowUp{
			Name:         followUpName(r.GetName(), i+1),
			Type:         t.GetType(),
			Description:  t.GetDescription(),
			DueTime:      timestamppb.New(arrived.AddDate(0, 0, int(t.GetDueInDays()))),
			Facility:     r.GetTargetFacility(),
			Practitioner: r.GetReceivingPractitioner(),
		}
		resource.Stamp(f, now, true)
		if err := FollowUpMachine.Apply(f, referralv1.FollowUp_STATE_SCHEDULED, c, now, ""); err != nil {
			return err
		}
		if err := followUps.Create(tx, f); err != nil {
			return err
		}
		if err := tx.Put(followUpIndexKey(f), nil); err != nil {
			return err
		}
		if err := deadline.Set(tx, timerFollowUp, followUps.ID(f.GetName()), f.GetDueTime().AsTime().Add(s.cfg.FollowUpGrace), nil); err != nil {
			return err
		}
	}
	r.FollowUps = &referralv1.FollowUpSummary{Scheduled: int32(len(r.GetCarePlan().GetTasks()))}
	return nil
}

// ListFollowUps lists one referral's tasks, or the caller's facility's
// tasks in one state by due time (`referrals/-`): with STATE_MISSED, the
// report of missed follow-ups.
func (s *Service) ListFollowUps(ctx context.Context, req *referralv1.ListFollowUpsRequest) (*referralv1.ListFollowUpsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	var prefix string
	var recordKey func(string) string
	if req.GetParent() == "referrals/-" {
		if req.GetState() == 0 {
			return nil, apierr.Invalid("state", "is required with referrals/-")
		}
		prefix = followUpIndexPrefix(c.Facility, req.GetState())
		// The index key ends with the task's ID, "{referral}/followUps/{nn}",
		// after the due time.
		recordKey = func(key string) string {
			_, id, _ := strings.Cut(strings.TrimPrefix(key, prefix), "/")
			return followUpPrefix + id
		}
	} else {
		if _, err := s.load(ctx, c, req.GetParent()); err != nil {
			return nil, err
		}
		prefix = followUps.Key(req.GetParent() + "/followUps/")
	}
	list, next, err := listByIndex(ctx, s.store, c, followUps, prefix, fmt.Sprint(req.GetState()), req.GetPageToken(), req.GetPageSize(), recordKey, func(f *referralv1.FollowUp) bool {
		if req.GetState() != 0 && f.GetState() != req.GetState() {
			return false
		}
		f.AllowedActions = followUpActions(c, f)
		return true
	})
	if err != nil {
		return nil, err
	}
	return &referralv1.ListFollowUpsResponse{FollowUps: list, NextPageToken: next}, nil
}

// CompleteFollowUp records that a task was done.
func (s *Service) CompleteFollowUp(ctx context.Context, req *referralv1.CompleteFollowUpRequest) (*referralv1.CompleteFollowUpResponse, error) {
	f, err := s.closeFollowUp(ctx, req.GetName(), req.GetEtag(), referralv1.FollowUp_ACTION_COMPLETE, req.GetOutcome())
	if err != nil {
		return nil, err
	}
	return &referralv1.CompleteFollowUpResponse{FollowUp: f}, nil
}

// MissFollowUp records that a task cannot be done.
func (s *Service) MissFollowUp(ctx context.Context, req *referralv1.MissFollowUpRequest) (*referralv1.MissFollowUpResponse, error) {
	f, err := s.closeFollowUp(ctx, req.GetName(), req.GetEtag(), referralv1.FollowUp_ACTION_MISS, req.GetReason())
	if err != nil {
		return nil, err
	}
	return &referralv1.MissFollowUpResponse{FollowUp: f}, nil
}

// closeFollowUp moves a task to done or missed through its state machine,
// with the same order of checks as a referral's actions.
func (s *Service) closeFollowUp(ctx context.Context, name, etag string, a referralv1.FollowUp_Action, outcome string) (*referralv1.FollowUp, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	right := FollowUpRights[a]
	var before *referralv1.FollowUp
	out, err := fsm.Transition(ctx, s.store, followUps, FollowUpMachine, c, now, fsm.Step[*referralv1.FollowUp, followUpState]{
		Name:   name,
		To:     right.to,
		Reason: outcome,
		Before: func(tx store.Tx, f *referralv1.FollowUp) error {
			r, _, err := referrals.Get(tx, parentOf(name))
			if err != nil {
				return err
			}
			if !visible(c, r) {
				return notFound(name)
			}
			if right.sides&followUpSides(c, f) == 0 {
				return fmt.Errorf("%w: only the township that received the patient or a coordinator closes follow-up tasks", apierr.ErrPermissionDenied)
			}
			if etag != "" && etag != f.GetEtag() {
				return fmt.Errorf("%s was changed by someone else (etag %s, now %s): %w", name, etag, f.GetEtag(), store.ErrConflict)
			}
			before = proto.CloneOf(f)
			return nil
		},
		After: func(tx store.Tx, f *referralv1.FollowUp) error {
			f.Outcome = outcome
			return followUpClosed(tx, c, now, before, f)
		},
	})
	if err != nil {
		return nil, err
	}
	out.AllowedActions = followUpActions(c, out)
	return out, nil
}

// followUpClosed does what else closing a task changes, in its
// transaction: the task's index key, its timer, and the counts on its
// referral, whose event reports a missed task to both facilities.
func followUpClosed(tx store.Tx, c auth.Caller, now time.Time, before, f *referralv1.FollowUp) error {
	if err := moveKeys(tx, []string{followUpIndexKey(before)}, []string{followUpIndexKey(f)}); err != nil {
		return err
	}
	if err := deadline.Clear(tx, timerFollowUp, followUps.ID(f.GetName())); err != nil {
		return err
	}
	r, version, err := referrals.Get(tx, parentOf(f.GetName()))
	if err != nil {
		return err
	}
	sum := r.GetFollowUps()
	if sum == nil {
		sum = &referralv1.FollowUpSummary{}
		r.FollowUps = sum
	}
	sum.Scheduled--
	typ := "referral.follow_up_done"
	if f.GetState() == referralv1.FollowUp_STATE_MISSED {
		sum.Missed++
		typ = "referral.follow_up_missed"
	} else {
		sum.Done++
	}
	resource.Stamp(r, now, false)
	if err := referrals.Update(tx, r, version); err != nil {
		return err
	}
	return events.Append(tx, c, now, referrals.Change(typ, r, version+1))
}
