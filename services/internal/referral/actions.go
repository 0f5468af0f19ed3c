package referral

import (
	"context"
	"crypto/rand"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// codeAlphabet leaves out characters read aloud or written by hand
// ambiguously (0/O, 1/I/L).
const codeAlphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

// newCode returns a referral code of 8 characters (about 40 bits). Bytes
// past the largest multiple of the alphabet's size are drawn again, so every
// character is equally likely.
func newCode() string {
	const n, limit = 8, 256 / len(codeAlphabet) * len(codeAlphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 16)
	for len(out) < n {
		rand.Read(buf)
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, codeAlphabet[int(b)%len(codeAlphabet)])
			}
		}
	}
	return string(out)
}

// AcceptReferral accepts a pending up-referral and issues its referral
// code, valid for the configured time. The appointment must fall within
// that time.
func (s *Service) AcceptReferral(ctx context.Context, req *referralv1.AcceptReferralRequest) (*referralv1.AcceptReferralResponse, error) {
	code := newCode()
	appointment := req.GetAppointmentTime().AsTime()
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_ACCEPT, "",
		func(_ *referralv1.Referral, now time.Time) error {
			if appointment.Before(now.Add(-time.Minute)) {
				return apierr.Invalid("appointment_time", "is in the past")
			}
			if appointment.After(now.Add(s.cfg.CodeTTL)) {
				return apierr.Invalid("appointment_time", "is after the referral code expires (%s after acceptance)", s.cfg.CodeTTL)
			}
			return nil
		},
		func(tx store.Tx, r *referralv1.Referral, now time.Time) error {
			expires := now.Add(s.cfg.CodeTTL)
			r.Triage = &referralv1.Triage{
				Mode:            req.GetMode(),
				Department:      req.GetDepartment(),
				AppointmentTime: req.GetAppointmentTime(),
				ReferralCode:    code,
				CodeExpireTime:  timestamppb.New(expires),
				TriageTime:      timestamppb.New(now),
				TriagedBy:       lastActor(r),
			}
			id := referrals.ID(r.GetName())
			if err := deadline.Clear(tx, timerTriage, id); err != nil {
				return err
			}
			return deadline.Set(tx, timerCode, id, expires, nil)
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.AcceptReferralResponse{Referral: out}, nil
}

// RejectReferral rejects a pending up-referral with a coded reason.
func (s *Service) RejectReferral(ctx context.Context, req *referralv1.RejectReferralRequest) (*referralv1.RejectReferralResponse, error) {
	if req.GetReason() == referralv1.RejectReason_REJECT_REASON_OTHER && req.GetNote() == "" {
		return nil, apierr.Invalid("note", "REJECT_REASON_OTHER needs a note")
	}
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_REJECT, req.GetReason().String(), nil,
		func(tx store.Tx, r *referralv1.Referral, now time.Time) error {
			r.Triage = &referralv1.Triage{RejectReason: req.GetReason(), Note: req.GetNote(), TriageTime: timestamppb.New(now), TriagedBy: lastActor(r)}
			return deadline.Clear(tx, timerTriage, referrals.ID(r.GetName()))
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.RejectReferralResponse{Referral: out}, nil
}

// ReturnReferral returns a pending up-referral to its sender with advice.
func (s *Service) ReturnReferral(ctx context.Context, req *referralv1.ReturnReferralRequest) (*referralv1.ReturnReferralResponse, error) {
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_RETURN, req.GetAdvice(), nil,
		func(tx store.Tx, r *referralv1.Referral, now time.Time) error {
			r.Triage = &referralv1.Triage{Note: req.GetAdvice(), TriageTime: timestamppb.New(now), TriagedBy: lastActor(r)}
			return deadline.Clear(tx, timerTriage, referrals.ID(r.GetName()))
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.ReturnReferralResponse{Referral: out}, nil
}

// ResubmitReferral puts a returned referral back into triage, with its
// triage clock restarted.
func (s *Service) ResubmitReferral(ctx context.Context, req *referralv1.ResubmitReferralRequest) (*referralv1.ResubmitReferralResponse, error) {
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_RESUBMIT, "", nil,
		func(tx store.Tx, r *referralv1.Referral, now time.Time) error {
			if req.GetClinicalSummary() != "" {
				r.ClinicalSummary = req.GetClinicalSummary()
			}
			// The return's advice stays in the timeline; the next decision
			// is a new triage, timed from now.
			r.Triage = nil
			return s.startTriageClock(tx, r, now)
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.ResubmitReferralResponse{Referral: out}, nil
}

// ArriveReferral records the patient's arrival. An accepted up-referral
// needs its referral code, before it expires; a down-referral's care plan
// becomes follow-up tasks.
func (s *Service) ArriveReferral(ctx context.Context, req *referralv1.ArriveReferralRequest) (*referralv1.ArriveReferralResponse, error) {
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_ARRIVE, "",
		func(r *referralv1.Referral, now time.Time) error {
			if req.GetArriveTime() != nil && req.GetArriveTime().AsTime().After(now) {
				return apierr.Invalid("arrive_time", "is in the future")
			}
			if r.GetState() != referralv1.Referral_STATE_ACCEPTED {
				return nil
			}
			if !now.Before(r.GetTriage().GetCodeExpireTime().AsTime()) {
				return apierr.Condition(ReasonCodeExpired, "the referral code expired at %s", r.GetTriage().GetCodeExpireTime().AsTime().Format(time.RFC3339))
			}
			if req.GetReferralCode() != r.GetTriage().GetReferralCode() {
				return apierr.Invalid("referral_code", "does not match the referral")
			}
			return nil
		},
		func(tx store.Tx, r *referralv1.Referral, now time.Time) error {
			r.ArriveTime = timestamppb.New(now)
			if req.GetArriveTime() != nil {
				r.ArriveTime = req.GetArriveTime()
			}
			if err := deadline.Clear(tx, timerCode, referrals.ID(r.GetName())); err != nil {
				return err
			}
			return s.scheduleFollowUps(tx, r, now)
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.ArriveReferralResponse{Referral: out}, nil
}

// CompleteReferral closes a referral whose patient arrived.
func (s *Service) CompleteReferral(ctx context.Context, req *referralv1.CompleteReferralRequest) (*referralv1.CompleteReferralResponse, error) {
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_COMPLETE, "", nil,
		func(_ store.Tx, r *referralv1.Referral, now time.Time) error {
			r.CompleteTime, r.Outcome = timestamppb.New(now), req.GetOutcome()
			return nil
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.CompleteReferralResponse{Referral: out}, nil
}

// CancelReferral cancels a referral before the patient arrived, and stops
// its clocks.
func (s *Service) CancelReferral(ctx context.Context, req *referralv1.CancelReferralRequest) (*referralv1.CancelReferralResponse, error) {
	out, err := s.transition(ctx, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_CANCEL, req.GetReason(), nil,
		func(tx store.Tx, r *referralv1.Referral, _ time.Time) error {
			id := referrals.ID(r.GetName())
			if err := deadline.Clear(tx, timerTriage, id); err != nil {
				return err
			}
			return deadline.Clear(tx, timerCode, id)
		})
	if err != nil {
		return nil, err
	}
	return &referralv1.CancelReferralResponse{Referral: out}, nil
}

// BackfillReferral enters a green-channel referral's record afterwards
// (补录). It changes no state, so it is not a transition, but it keeps the
// same order of checks.
func (s *Service) BackfillReferral(ctx context.Context, req *referralv1.BackfillReferralRequest) (*referralv1.BackfillReferralResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	diagnosis := req.GetDiagnosis()
	if err := checkDiagnosis("diagnosis", diagnosis, true); err != nil {
		return nil, err
	}
	departure := req.GetDepartureTime().AsTime()
	now := s.clock.Now()
	if departure.After(now) {
		return nil, apierr.Invalid("departure_time", "is in the future")
	}
	var out *referralv1.Referral
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		r, version, err := referrals.Get(tx, req.GetName())
		if err != nil {
			return err
		}
		if err := mayAct(c, r, req.GetName(), req.GetEtag(), referralv1.Referral_ACTION_BACKFILL); err != nil {
			return err
		}
		if r.GetArriveTime() != nil && departure.After(r.GetArriveTime().AsTime()) {
			return apierr.Invalid("departure_time", "is after the patient's arrival")
		}
		r.Diagnosis, r.ClinicalSummary = diagnosis, req.GetClinicalSummary()
		r.DepartureTime, r.BackfillTime = req.GetDepartureTime(), timestamppb.New(now)
		resource.Stamp(r, now, false)
		if err := referrals.Update(tx, r, version); err != nil {
			return err
		}
		out = r
		return events.Append(tx, c, now, referrals.Change("referral.backfilled", r, version+1))
	})
	if err != nil {
		return nil, err
	}
	return &referralv1.BackfillReferralResponse{Referral: view(c, out)}, nil
}

// lastActor is who made the referral's latest state change.
func lastActor(r *referralv1.Referral) *typev1.Actor {
	tl := r.GetTimeline()
	return tl[len(tl)-1].GetActor()
}
