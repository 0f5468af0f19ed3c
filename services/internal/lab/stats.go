package lab

import (
	"context"
	"slices"
	"time"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/facts"
	"github.com/countymcc/mcc/services/internal/store"
)

// Statistics come from one fact per finished specimen, written in the
// transaction that finishes it (verification or rejection):
//
//	stat/{day}/{barcode}
//
// keyed by the day it finished in China Standard Time, so a range of days
// is a range of key prefixes. TAT needs no separate logging: the times are
// the specimen's and order's own hand-offs.
type fact struct {
	Facility string            `json:"facility"`
	Lab      string            `json:"lab"`
	Tests    []string          `json:"tests"`
	Order    time.Time         `json:"order"`
	Collect  time.Time         `json:"collect"`
	Receive  time.Time         `json:"receive,omitzero"`
	Verify   time.Time         `json:"verify,omitzero"`
	Rejected int32             `json:"rejected,omitempty"`
	Critical map[string]string `json:"critical,omitempty"`
	day      string
	barcode  string
}

// cst is China Standard Time, the day boundary of the statistics. A fixed
// zone needs no time zone database on the host.
func cst() *time.Location { return time.FixedZone("CST", 8*60*60) }

func dayOf(t time.Time) string { return t.In(cst()).Format(time.DateOnly) }

func doneFact(o *labv1.Order, sp *labv1.Specimen, r *labv1.Report, crits map[string]string, now time.Time) fact {
	return fact{
		Facility: o.GetRequestingFacility(), Lab: o.GetLabFacility(), Tests: sp.GetTests(),
		Order: o.GetCreateTime().AsTime(), Collect: sp.GetCollectTime().AsTime(), Receive: sp.GetReceiveTime().AsTime(),
		Verify: now, Critical: crits, day: dayOf(now), barcode: specimens.ID(sp.GetName()),
	}
}

func rejectedFact(o *labv1.Order, sp *labv1.Specimen, now time.Time) fact {
	return fact{
		Facility: o.GetRequestingFacility(), Lab: o.GetLabFacility(), Tests: sp.GetTests(),
		Order: o.GetCreateTime().AsTime(), Collect: sp.GetCollectTime().AsTime(),
		Rejected: int32(sp.GetRejection().GetReason()), day: dayOf(now), barcode: specimens.ID(sp.GetName()),
	}
}

func putFact(tx store.Tx, f fact) error { return facts.Put(tx, f.day, f.barcode, f) }

// GetStatistics aggregates the facts of a range of days per requesting
// facility, test and day.
func (s *Service) GetStatistics(ctx context.Context, req *labv1.GetStatisticsRequest) (*labv1.GetStatisticsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	start, end, err := facts.Days(req.GetStartDay(), req.GetEndDay(), cst())
	if err != nil {
		return nil, err
	}
	agg := newAggregate()
	err = facts.Scan(ctx, s.store, p, start, end, "specimens", func(day string, f fact) error {
		f.day = day
		seesAll := c.SeesCommunity() || c.Has(typev1.Role_ROLE_AUDITOR) || c.Facility == f.Lab
		if (!seesAll && c.Facility != f.Facility) || (req.GetFacility() != "" && req.GetFacility() != f.Facility) {
			return nil
		}
		return agg.add(ctx, s, p, f)
	})
	if err != nil {
		return nil, err
	}
	return &labv1.GetStatisticsResponse{Rows: agg.rows()}, nil
}

// aggregate collects the figures of each (facility, test, day).
type aggregate struct {
	byKey  map[[3]string]*bucket
	timely map[string]bool
}

type bucket struct {
	row               *labv1.StatisticsRow
	pre, inLab, total []float64
	rejections        map[labv1.RejectionReason]int32
}

func newAggregate() *aggregate {
	return &aggregate{byKey: map[[3]string]*bucket{}, timely: map[string]bool{}}
}

func (a *aggregate) add(ctx context.Context, s *Service, p store.Partition, f fact) error {
	for _, test := range f.Tests {
		key := [3]string{f.Facility, test, f.day}
		b, ok := a.byKey[key]
		if !ok {
			b = &bucket{row: &labv1.StatisticsRow{Facility: f.Facility, Test: test, Day: f.day}, rejections: map[labv1.RejectionReason]int32{}}
			a.byKey[key] = b
		}
		if f.Rejected != 0 {
			b.row.Rejected++
			b.rejections[labv1.RejectionReason(f.Rejected)]++
			continue
		}
		b.row.Count++
		b.pre = append(b.pre, f.Receive.Sub(f.Collect).Minutes())
		b.inLab = append(b.inLab, f.Verify.Sub(f.Receive).Minutes())
		b.total = append(b.total, f.Verify.Sub(f.Order).Minutes())
		for name, code := range f.Critical {
			if code != test {
				continue
			}
			b.row.CriticalResults++
			b.row.CriticalNotified++
			timely, seen := a.timely[name]
			if !seen {
				n, err := s.critical.Load(ctx, s.store, p, name)
				if err != nil {
					return err
				}
				timely = n.GetTimely()
				a.timely[name] = timely
			}
			if timely {
				b.row.CriticalTimely++
			}
		}
	}
	return nil
}

func (a *aggregate) rows() []*labv1.StatisticsRow {
	keys := make([][3]string, 0, len(a.byKey))
	for k := range a.byKey {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y [3]string) int {
		for i := range x {
			if x[i] != y[i] {
				if x[i] < y[i] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
	out := make([]*labv1.StatisticsRow, 0, len(keys))
	for _, k := range keys {
		b := a.byKey[k]
		r := b.row
		r.PreAnalytic, r.InLab, r.Total = turnaround(b.pre), turnaround(b.inLab), turnaround(b.total)
		r.RejectionRate = ratio(r.GetRejected(), r.GetCount()+r.GetRejected())
		r.CriticalNotificationRate = ratio(r.GetCriticalNotified(), r.GetCriticalResults())
		r.CriticalTimelyRate = ratio(r.GetCriticalTimely(), r.GetCriticalNotified())
		for reason := range labv1.RejectionReason_name {
			if n := b.rejections[labv1.RejectionReason(reason)]; n > 0 {
				r.Rejections = append(r.Rejections, &labv1.RejectionCount{Reason: labv1.RejectionReason(reason), Count: n})
			}
		}
		slices.SortFunc(r.Rejections, func(x, y *labv1.RejectionCount) int { return int(x.GetReason() - y.GetReason()) })
		out = append(out, r)
	}
	return out
}

func ratio(n, d int32) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// turnaround is the median and the 90th percentile (nearest rank) of
// durations in minutes.
func turnaround(minutes []float64) *labv1.Turnaround {
	if len(minutes) == 0 {
		return nil
	}
	slices.Sort(minutes)
	return &labv1.Turnaround{MedianMinutes: facts.NearestRank(minutes, 0.5), P90Minutes: facts.NearestRank(minutes, 0.9)}
}
