package recognition

import (
	"bytes"
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
	pid := patientID(req.GetPatient())
	buckets := map[string][][]byte{}
	for i, it := range catalog {
		item := req.GetItems()[i]
		raw, ok := buckets[bucketOf(item)]
		if !ok {
			pr := &patientRecord{id: pid, bucket: bucketOf(item)}
			if raw, err = readEntries(get, pr.key()); err != nil {
				return nil, err
			}
			buckets[pr.bucket] = raw
		}
		entries, err := entriesAt(raw, pid, item, it.GetValidityDays(), at)
		if err != nil {
			return nil, err
		}
		resp.Items = append(resp.Items, r.answer(it, entries, at))
	}
	if err := s.recordCheck(ctx, c, p, now, record, "check.recorded"); err != nil {
		return nil, err
	}
	return resp, nil
}

// entriesAt decodes, newest first, the entries of item that a check at
// time at judges: those reported by then and still valid then, and the
// newest one that had expired by then, whose verdict explains the answer
// when no valid entry does. Older entries cannot change the answer, so they
// are not decoded: a check costs about the same however long the
// patient's history of the item.
func entriesAt(raw [][]byte, id, item string, validityDays int32, at time.Time) ([]*recognitionv1.Result, error) {
	var judged []stored
	var expired stored
	for _, v := range raw {
		name, code, reported, err := peekEntry(v)
		if err != nil {
			return nil, err
		}
		e := stored{v: v, name: name, reported: reported}
		switch {
		case string(code) != item || reported.After(at):
		case at.Before(reported.AddDate(0, 0, int(validityDays))):
			judged = append(judged, e)
		case expired.v == nil || newestFirst(e, expired) < 0:
			expired = e
		}
	}
	if expired.v != nil {
		judged = append(judged, expired)
	}
	slices.SortFunc(judged, newestFirst)
	out := make([]*recognitionv1.Result, len(judged))
	for i, e := range judged {
		var err error
		if out[i], err = decodeEntry(id, e.v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// stored is an entry as stored, with what peekEntry read of it.
type stored struct {
	v, name  []byte
	reported time.Time
}

// newestFirst orders entries newest first, and entries reported at the
// same instant by name, so that a check's answer does not depend on the
// order they are stored in.
func newestFirst(a, b stored) int {
	if c := b.reported.Compare(a.reported); c != 0 {
		return c
	}
	return bytes.Compare(a.name, b.name)
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
