package referral

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/platform/timeid"
	"github.com/countymcc/mcc/services/internal/store"
)

// CreateReferral sends a referral from the caller's facility.
func (s *Service) CreateReferral(ctx context.Context, req *referralv1.CreateReferralRequest) (*referralv1.CreateReferralResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	in := proto.CloneOf(req.GetReferral())
	if err := checkShape(in); err != nil {
		return nil, err
	}
	if err := s.checkParties(ctx, c, in); err != nil {
		return nil, err
	}
	if err := s.checkAttachments(ctx, c, in); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	// The ID is chosen outside the transaction, so a retried transaction
	// keeps it.
	id, err := timeid.New(now)
	if err != nil {
		return nil, err
	}
	draft := newReferral(in, c, referrals.Name(id))
	initial, typ := referralv1.Referral_STATE_PENDING, "referral.created"
	switch {
	case draft.GetGreenChannel():
		// The green-channel event is the notification of the target's
		// duty department.
		initial, typ = referralv1.Referral_STATE_GREEN_CHANNEL, "referral.green_channel"
	case draft.GetDirection() == referralv1.Direction_DIRECTION_DOWN:
		initial = referralv1.Referral_STATE_SENT
	}
	var out *referralv1.Referral
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		if name, found, err := idem.Lookup(tx, c, req.GetRequestId()); err != nil || found {
			if err == nil {
				out, _, err = referrals.Get(tx, name)
			}
			return err
		}
		r := proto.CloneOf(draft)
		resource.Stamp(r, now, true)
		if err := Machine.Apply(r, initial, c, now, ""); err != nil {
			return err
		}
		if initial == referralv1.Referral_STATE_PENDING {
			if err := s.startTriageClock(tx, r, now); err != nil {
				return err
			}
		}
		if err := referrals.Create(tx, r); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, req.GetRequestId(), r.GetName()); err != nil {
			return err
		}
		if err := reindex(tx, nil, r); err != nil {
			return err
		}
		out = r
		return events.Append(tx, c, now, referrals.Change(typ, r, 1))
	})
	if err != nil {
		return nil, err
	}
	return &referralv1.CreateReferralResponse{Referral: view(c, out)}, nil
}

// newReferral is the stored form of a referral sent by c: only the fields a
// sender may set, and the sender from the token.
func newReferral(in *referralv1.Referral, c auth.Caller, name string) *referralv1.Referral {
	return &referralv1.Referral{
		Name:                  name,
		Direction:             in.GetDirection(),
		GreenChannel:          in.GetGreenChannel(),
		Patient:               in.GetPatient(),
		SendingFacility:       c.Facility,
		TargetFacility:        in.GetTargetFacility(),
		TargetDepartment:      in.GetTargetDepartment(),
		Reason:                in.GetReason(),
		Diagnosis:             in.GetDiagnosis(),
		Urgency:               in.GetUrgency(),
		ClinicalSummary:       in.GetClinicalSummary(),
		Attachments:           in.GetAttachments(),
		FamilyDoctorContract:  in.GetFamilyDoctorContract(),
		DischargeSummary:      in.GetDischargeSummary(),
		CarePlan:              in.GetCarePlan(),
		ReceivingPractitioner: in.GetReceivingPractitioner(),
	}
}

// startTriageClock starts (or restarts, on resubmission) the time the
// receiver has to triage.
func (s *Service) startTriageClock(tx store.Tx, r *referralv1.Referral, now time.Time) error {
	limit := s.cfg.TriageTimeout
	if r.GetUrgency() == referralv1.Urgency_URGENCY_EMERGENCY {
		limit = s.cfg.EmergencyTriageTimeout
	}
	due := now.Add(limit)
	r.SubmitTime, r.TriageDueTime = timestamppb.New(now), timestamppb.New(due)
	r.Escalated, r.EscalateTime = false, nil
	return deadline.Set(tx, timerTriage, referrals.ID(r.GetName()), due, nil)
}

// view is a referral as the caller receives it, with its allowed actions.
func view(c auth.Caller, r *referralv1.Referral) *referralv1.Referral {
	r.AllowedActions = allowedActions(c, r)
	return r
}

// notFound is the answer for a referral that does not exist and for one the
// caller may not see alike.
func notFound(name string) error { return fmt.Errorf("%s: %w", name, store.ErrNotFound) }

// GetReferral returns one referral the caller may see.
func (s *Service) GetReferral(ctx context.Context, req *referralv1.GetReferralRequest) (*referralv1.GetReferralResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.load(ctx, c, req.GetName())
	if err != nil {
		return nil, err
	}
	return &referralv1.GetReferralResponse{Referral: view(c, r)}, nil
}

// load reads a referral the caller may see.
func (s *Service) load(ctx context.Context, c auth.Caller, name string) (*referralv1.Referral, error) {
	r, err := referrals.Load(ctx, s.store, c.Partition(), name)
	if err != nil {
		return nil, err
	}
	if !visible(c, r) {
		return nil, notFound(name)
	}
	return r, nil
}

// ListReferrals lists the caller's sent or received referrals, or the
// community's for coordinators.
func (s *Service) ListReferrals(ctx context.Context, req *referralv1.ListReferralsRequest) (*referralv1.ListReferralsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	var prefix string
	switch req.GetBox() {
	case referralv1.Box_BOX_SENT:
		prefix = "sent/" + facilityID(c.Facility) + "/"
	case referralv1.Box_BOX_RECEIVED:
		prefix = "recv/" + facilityID(c.Facility) + "/"
	default:
		if !c.Has(typev1.Role_ROLE_REFERRAL_COORDINATOR) && !c.Has(typev1.Role_ROLE_SERVICE) {
			return nil, fmt.Errorf("%w: only referral coordinators list the whole community", apierr.ErrPermissionDenied)
		}
		prefix = referralPrefix
	}
	keep := func(r *referralv1.Referral) bool { return req.GetState() == 0 || r.GetState() == req.GetState() }
	list, next, err := s.listIndex(ctx, c, prefix, fmt.Sprintf("list|%d", req.GetState()), req.GetPageToken(), req.GetPageSize(), keep)
	if err != nil {
		return nil, err
	}
	return &referralv1.ListReferralsResponse{Referrals: list, NextPageToken: next}, nil
}

// ListWorklist lists a receiver's open referrals of one stage in priority
// order, reading only that stage's index keys.
func (s *Service) ListWorklist(ctx context.Context, req *referralv1.ListWorklistRequest) (*referralv1.ListWorklistResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	facility := req.GetFacility()
	if facility == "" {
		facility = c.Facility
	}
	if facility != c.Facility && !c.Has(typev1.Role_ROLE_REFERRAL_COORDINATOR) {
		return nil, fmt.Errorf("%w: only referral coordinators see another facility's worklist", apierr.ErrPermissionDenied)
	}
	list, next, err := s.listIndex(ctx, c, worklistPrefix(facility, req.GetStage()), "worklist", req.GetPageToken(), req.GetPageSize(), nil)
	if err != nil {
		return nil, err
	}
	return &referralv1.ListWorklistResponse{Referrals: list, NextPageToken: next}, nil
}

// listIndex pages through the keys under prefix, each ending in a referral
// ID (or being the referral itself), and returns the referrals keep
// accepts that the caller may see.
func (s *Service) listIndex(ctx context.Context, c auth.Caller, prefix, filter, token string, size int32, keep func(*referralv1.Referral) bool) ([]*referralv1.Referral, string, error) {
	recordKey := func(key string) string { return referralPrefix + key[strings.LastIndexByte(key, '/')+1:] }
	if prefix == referralPrefix {
		recordKey = nil
	}
	return listByIndex(ctx, s.store, c, referrals, prefix, filter, token, size, recordKey, func(r *referralv1.Referral) bool {
		if !visible(c, r) || keep != nil && !keep(r) {
			return false
		}
		view(c, r)
		return true
	})
}

// listByIndex returns one page of the records of table listed under prefix
// that keep accepts (keep may also fill in the caller's view). Each key
// under prefix names a record, whose key recordKey returns; without
// recordKey the keys are the records themselves. An index key whose record
// is gone is skipped. The page token only works with the same prefix and
// filter.
func listByIndex[T proto.Message](ctx context.Context, st store.Store, c auth.Caller, table resource.Table[T], prefix, filter, token string, size int32, recordKey func(string) string, keep func(T) bool) ([]T, string, error) {
	filter = prefix + "|" + filter
	after, err := paging.Decode(token, filter)
	if err != nil {
		return nil, "", err
	}
	p := c.Partition()
	var out []T
	last, err := paging.Scan(ctx, st, p, prefix, after, paging.Size(size), func(rec store.Record) (bool, error) {
		if recordKey != nil {
			var err error
			if rec, err = st.Get(ctx, p, recordKey(rec.Key)); errors.Is(err, store.ErrNotFound) {
				return false, nil
			} else if err != nil {
				return false, err
			}
		}
		msg, err := table.Decode(rec)
		if err != nil || !keep(msg) {
			return false, err
		}
		out = append(out, msg)
		return true, nil
	})
	if err != nil || last == "" {
		return out, "", err
	}
	return out, paging.Encode(last, filter), nil
}

// transition runs one action on a referral through the state machine: the
// caller must see the referral (else NOT_FOUND, whatever the etag), be on a
// side that may take the action (else PERMISSION_DENIED), send the current
// etag (else ABORTED), and find the referral in a state that allows it
// (else FAILED_PRECONDITION). check refuses the action for reasons of the
// request; apply changes what else the action changes. The referral's
// index keys follow its new state in the same transaction.
func (s *Service) transition(ctx context.Context, name, etag string, a action, reason string, check func(r *referralv1.Referral, now time.Time) error, apply func(tx store.Tx, r *referralv1.Referral, now time.Time) error) (*referralv1.Referral, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	var before *referralv1.Referral
	out, err := fsm.Transition(ctx, s.store, referrals, Machine, c, now, fsm.Step[*referralv1.Referral, state]{
		Name:   name,
		To:     Rights[a].to,
		Reason: reason,
		Before: func(_ store.Tx, r *referralv1.Referral) error {
			if err := mayAct(c, r, name, etag, a); err != nil {
				return err
			}
			before = proto.CloneOf(r)
			if check != nil {
				return check(r, now)
			}
			return nil
		},
		After: func(tx store.Tx, r *referralv1.Referral) error {
			if apply != nil {
				if err := apply(tx, r, now); err != nil {
					return err
				}
			}
			return reindex(tx, before, r)
		},
	})
	if err != nil {
		return nil, err
	}
	return view(c, out), nil
}

// mayAct runs the checks of an action in the order that leaks nothing:
// visibility first, then the caller's side, the etag, and the state.
func mayAct(c auth.Caller, r *referralv1.Referral, name, etag string, a action) error {
	if !visible(c, r) {
		return notFound(name)
	}
	if err := mayTake(c, r, a); err != nil {
		return err
	}
	if etag != "" && etag != r.GetEtag() {
		return fmt.Errorf("%s was changed by someone else (etag %s, now %s): %w", name, etag, r.GetEtag(), store.ErrConflict)
	}
	return allows(r, a)
}
