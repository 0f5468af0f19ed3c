package recognition

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/platform/timeid"
	"github.com/countymcc/mcc/services/internal/store"
)

// Decisions are stored at dec/{id} and never change. The statistics read
// them by month from decm/{YYYY-MM}/{id}; a correction is marked at
// corr/{corrected id}, which is how a decision shows who corrected it. IDs
// are time-ordered (timeid), so the corrections of the decisions of some
// months are one range of corr/.
var decisions = resource.Table[*recognitionv1.Decision]{
	Collection: "decisions",
	Prefix:     "dec/",
	New:        func() *recognitionv1.Decision { return &recognitionv1.Decision{} },
	Event:      "decision",
	Facilities: func(d *recognitionv1.Decision) []string { return []string{d.GetFacility()} },
	// Events carry no reason text: it is free text.
	Snapshot: func(d *recognitionv1.Decision) proto.Message {
		out := proto.CloneOf(d)
		out.ReasonText = ""
		return out
	},
}

// Reasons of refused decisions.
const (
	ReasonNotRecognizable  = "NOT_RECOGNIZABLE"
	ReasonAlreadyCorrected = "ALREADY_CORRECTED"
)

// cst is China Standard Time, in which months are counted.
var cst = time.FixedZone("CST", 8*3600)

func monthOf(t time.Time) string { return t.In(cst).Format("2006-01") }

func correctionKey(name string) string { return "corr/" + decisions.ID(name) }

// checkReason checks the reason rules: one of the coded reasons for not
// recognized, and text with 08; none for recognized.
func checkReason(d *recognitionv1.Decision) error {
	switch d.GetOutcome() {
	case recognitionv1.Outcome_OUTCOME_RECOGNIZED:
		if d.GetReason() != recognitionv1.Reason_REASON_UNSPECIFIED || d.GetReasonText() != "" {
			return apierr.Invalid("decision.reason", "a recognized result takes no reason")
		}
	case recognitionv1.Outcome_OUTCOME_NOT_RECOGNIZED:
		if d.GetReason() == recognitionv1.Reason_REASON_UNSPECIFIED {
			return apierr.Invalid("decision.reason", "not recognizing a result needs a coded reason (01-05, 07, 08, 98)")
		}
		if d.GetReason() == recognitionv1.Reason_REASON_OTHER && d.GetReasonText() == "" {
			return apierr.Invalid("decision.reason_text", "reason 08 (other) needs the reason as text")
		}
	}
	return nil
}

// CreateDecision records a clinician's decision on a recognizable result.
func (s *Service) CreateDecision(ctx context.Context, req *recognitionv1.CreateDecisionRequest) (*recognitionv1.CreateDecisionResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	d := proto.CloneOf(req.GetDecision())
	if err := checkReason(d); err != nil {
		return nil, err
	}
	e, err := s.loadResult(ctx, p, d.GetResult())
	if err != nil {
		return nil, err
	}
	if err := s.treating(ctx, c, "decision.result", e.GetPatient()); err != nil {
		return nil, notFound(d.GetResult())
	}
	r, err := s.rulesOf(ctx, p)
	if err != nil {
		return nil, err
	}
	it, err := r.item("decision.result", e.GetItem())
	if err != nil {
		return nil, err
	}
	if name := d.GetCheck(); name != "" {
		rec, err := s.store.Get(ctx, p, checkPrefix+name[len("checks/"):])
		if err != nil {
			return nil, notFoundOr(name, err)
		}
		chk := &recognitionv1.Check{}
		if err := proto.Unmarshal(rec.Value, chk); err != nil {
			return nil, err
		}
		if chk.GetFacility() != c.Facility {
			return nil, notFound(name)
		}
		if chk.GetPatient() != e.GetPatient() {
			return nil, apierr.Invalid("decision.check", "%s was a check of another patient", name)
		}
	}
	now := s.clock.Now()
	// A correction may follow after the result expired; a first decision
	// needs a result that is recognizable now.
	if d.GetCorrects() == "" {
		if v := r.judge(it, e, now); v.why != recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED {
			return nil, apierr.Condition(ReasonNotRecognizable, "%s is not recognizable (%s): %s", e.GetName(), v.why, v.detail)
		}
	}
	id, err := timeid.New(now)
	if err != nil {
		return nil, err
	}
	d.Name = decisions.Name(id)
	d.Patient, d.Item = e.GetPatient(), e.GetItem()
	d.Facility, d.Clinician = c.Facility, c.Subject
	d.PriceFen, d.CatalogVersion = it.GetPriceFen(), r.catalogVersion
	d.CorrectedBy = ""
	d.CreateTime = timestamppb.New(now)
	var out *recognitionv1.Decision
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		if name, found, err := idem.Lookup(tx, c, req.GetRequestId()); err != nil || found {
			if err == nil {
				out, _, err = decisions.Get(tx, name)
			}
			return err
		}
		if old := d.GetCorrects(); old != "" {
			prev, _, err := decisions.Get(tx, old)
			if err != nil {
				return err
			}
			if prev.GetFacility() != c.Facility {
				return notFound(old)
			}
			if prev.GetResult() != d.GetResult() {
				return apierr.Invalid("decision.corrects", "%s is a decision on %s, not on %s", old, prev.GetResult(), d.GetResult())
			}
			if err := tx.Create(correctionKey(old), []byte(d.GetName())); err != nil {
				if isAlreadyExists(err) {
					return apierr.Condition(ReasonAlreadyCorrected, "%s was already corrected; correct the latest decision", old)
				}
				return err
			}
		}
		if err := decisions.Create(tx, d); err != nil {
			return err
		}
		if err := tx.Put("decm/"+monthOf(now)+"/"+id, mustMarshal(d)); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, req.GetRequestId(), d.GetName()); err != nil {
			return err
		}
		out = d
		return events.Append(tx, c, now, decisions.Change(decisions.Event+".created", d, 1))
	})
	if err != nil {
		return nil, err
	}
	return &recognitionv1.CreateDecisionResponse{Decision: out}, nil
}

// withCorrection fills CorrectedBy from the correction mark.
func (s *Service) withCorrection(ctx context.Context, p store.Partition, d *recognitionv1.Decision) (*recognitionv1.Decision, error) {
	rec, err := s.store.Get(ctx, p, correctionKey(d.GetName()))
	if isNotFound(err) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	d.CorrectedBy = string(rec.Value)
	return d, nil
}

// GetDecision returns a decision to its facility, administrators and
// auditors.
func (s *Service) GetDecision(ctx context.Context, req *recognitionv1.GetDecisionRequest) (*recognitionv1.GetDecisionResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	d, err := decisions.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	if !seesAll(c) && d.GetFacility() != c.Facility {
		return nil, notFound(req.GetName())
	}
	if d, err = s.withCorrection(ctx, p, d); err != nil {
		return nil, err
	}
	return &recognitionv1.GetDecisionResponse{Decision: d}, nil
}

// ListDecisions lists the caller's facility's decisions, oldest first.
func (s *Service) ListDecisions(ctx context.Context, req *recognitionv1.ListDecisionsRequest) (*recognitionv1.ListDecisionsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	all := seesAll(c)
	filter := fmt.Sprintf("%s|%s|%v", c.Facility, req.GetPatient(), all)
	out, next, err := decisions.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), filter, func(d *recognitionv1.Decision) bool {
		return (all || d.GetFacility() == c.Facility) && (req.GetPatient() == "" || d.GetPatient() == req.GetPatient())
	})
	if err != nil {
		return nil, err
	}
	for i, d := range out {
		if out[i], err = s.withCorrection(ctx, p, d); err != nil {
			return nil, err
		}
	}
	return &recognitionv1.ListDecisionsResponse{Decisions: out, NextPageToken: next}, nil
}
