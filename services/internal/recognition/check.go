package recognition

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/store"
)

// Checks are kept at chk/{id}. Each is an access to a patient's results,
// so each is also an event (`check.recorded`, or `check.refused` when the
// facility is not treating the patient) that the audit log reads.
const checkPrefix = "chk/"

// CheckRecognition answers, per item, which of the patient's results the
// caller's facility may recognize.
func (s *Service) CheckRecognition(ctx context.Context, req *recognitionv1.CheckRecognitionRequest) (*recognitionv1.CheckRecognitionResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	at := now
	if req.GetAtTime() != nil {
		at = req.GetAtTime().AsTime()
		if at.After(now.Add(time.Minute)) {
			return nil, apierr.Invalid("at_time", "is in the future")
		}
	}
	r, err := s.rulesOf(ctx, p)
	if err != nil {
		return nil, err
	}
	catalog := make([]*recognitionv1.Item, len(req.GetItems()))
	for i, code := range req.GetItems() {
		if catalog[i], err = r.item(fmt.Sprintf("items[%d]", i), code); err != nil {
			return nil, err
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	record := &recognitionv1.Check{
		Name: "checks/" + id.String(), Patient: req.GetPatient(), Items: req.GetItems(),
		Facility: c.Facility, Subject: c.Subject, Purpose: req.GetPurpose(),
		AtTime: timestamppb.New(at), CreateTime: timestamppb.New(now),
	}
	if err := s.treating(ctx, c, "patient", req.GetPatient()); err != nil {
		if rerr := s.recordCheck(ctx, c, p, now, record, "check.refused"); rerr != nil {
			s.logger.ErrorContext(ctx, "recognition: could not record a refused check", "error", rerr.Error())
		}
		return nil, err
	}
	resp := &recognitionv1.CheckRecognitionResponse{Check: record.GetName()}
	get := func(k string) (store.Record, error) { return s.store.Get(ctx, p, k) }
	buckets := map[string]*patientRecord{}
	for i, it := range catalog {
		item := req.GetItems()[i]
		pr := buckets[bucketOf(item)]
		if pr == nil {
			if pr, err = readPatient(get, patientID(req.GetPatient()), bucketOf(item)); err != nil {
				return nil, err
			}
			buckets[pr.bucket] = pr
		}
		resp.Items = append(resp.Items, r.answer(it, entriesOf(pr, item), at))
	}
	if err := s.recordCheck(ctx, c, p, now, record, "check.recorded"); err != nil {
		return nil, err
	}
	return resp, nil
}

// entriesOf returns the entries of item in a bucket of the patient's
// record, newest first.
func entriesOf(pr *patientRecord, item string) []*recognitionv1.Result {
	var out []*recognitionv1.Result
	for _, e := range pr.entries {
		if e.GetItem() == item {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *recognitionv1.Result) int {
		return b.GetReportTime().AsTime().Compare(a.GetReportTime().AsTime())
	})
	return out
}

// answer judges the entries of one item, newest first, at time at.
func (r *rules) answer(it *recognitionv1.Item, entries []*recognitionv1.Result, at time.Time) *recognitionv1.ItemCheck {
	out := &recognitionv1.ItemCheck{
		Item: it.GetCode().GetCode(), Display: it.GetDisplayName(),
		CatalogVersion: r.catalogVersion, PriceFen: it.GetPriceFen(),
	}
	var first *verdict
	for _, e := range entries {
		if e.GetReportTime().AsTime().After(at) {
			continue // not reported yet at the time asked about
		}
		v := r.judge(it, e, at)
		if v.why != recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED {
			if first == nil {
				first = &v
			}
			continue
		}
		out.Recognizable = append(out.Recognizable, &recognitionv1.Match{
			Result: e.GetName(), IssuingFacility: e.GetIssuingFacility(),
			ReportTime: e.GetReportTime(), ExpireTime: timestamppb.New(v.expire),
			Summary: e.GetSummary(), Source: e.GetSource(), Report: e.GetReport(), State: e.GetState(),
		})
	}
	switch {
	case len(out.Recognizable) > 0:
	case first != nil:
		out.Unrecognizable, out.Detail = first.why, first.detail
	case !it.GetRecognized():
		out.Unrecognizable, out.Detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_NOT_IN_CATALOG, fmt.Sprintf("%s is not in the mutual recognition catalog", it.GetCode().GetCode())
	default:
		out.Unrecognizable, out.Detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_NO_PRIOR_RESULT, "no result of the patient in the registry"
	}
	return out
}

// CheckResults answers about results attached to a referral.
func (s *Service) CheckResults(ctx context.Context, req *recognitionv1.CheckResultsRequest) (*recognitionv1.CheckResultsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.treating(ctx, c, "patient", req.GetPatient()); err != nil {
		return nil, err
	}
	r, err := s.rulesOf(ctx, p)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	resp := &recognitionv1.CheckResultsResponse{}
	for _, name := range req.GetResults() {
		ch := &recognitionv1.ResultCheck{Result: name}
		resp.Checks = append(resp.Checks, ch)
		e, err := s.loadResult(ctx, p, name)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if e.GetPatient() != req.GetPatient() {
			continue
		}
		ch.OfPatient = true
		it, ok := r.items[e.GetItem()]
		if !ok {
			ch.Unrecognizable, ch.Detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_NOT_IN_CATALOG, fmt.Sprintf("%s is not in the catalog", e.GetItem())
			continue
		}
		v := r.judge(it, e, now)
		ch.Unrecognizable, ch.Detail = v.why, v.detail
		ch.Recognizable = v.why == recognitionv1.Unrecognizable_UNRECOGNIZABLE_UNSPECIFIED
	}
	return resp, nil
}
