package reading

import (
	"cmp"
	"context"
	"slices"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/facts"
	"github.com/countymcc/mcc/services/internal/store"
)

// Statistics come from one fact per released report, written in the
// transaction that first releases it:
//
//	stat/{day}/{id}
//
// keyed by the release day in the community's zone, so a range of days is
// a range of key prefixes. The times are the exam's own hand-offs: TAT
// needs no separate logging.
type fact struct {
	Center   string    `json:"center"`
	Facility string    `json:"facility"`
	ExamType string    `json:"examType"`
	Request  time.Time `json:"request"`
	Arrive   time.Time `json:"arrive"`
	Final    time.Time `json:"final"`
	Overdue  bool      `json:"overdue,omitempty"`
}

// putFact records the figures of an exam released now.
func putFact(tx store.Tx, cal calendar, e *typev1.Exam) error {
	final := e.GetFinalTime().AsTime()
	return facts.Put(tx, cal.day(final), exams.ID(e.GetName()), fact{
		Center: e.GetCenterFacility(), Facility: e.GetRequestingFacility(), ExamType: e.GetExamType().GetCode(),
		Request: e.GetCreateTime().AsTime(), Arrive: e.GetArriveTime().AsTime(), Final: final,
		Overdue: e.GetOverdue() || final.After(e.GetDueTime().AsTime()),
	})
}

// statistics aggregates the facts of a range of days per center, exam
// type and requesting facility. The center, administrators and auditors
// see every requester's rows; a requester only its own.
func (f *Flow) statistics(ctx context.Context, c auth.Caller, startDay, endDay, facility, examType string) ([]*typev1.ExamStatisticsRow, error) {
	start, end, err := facts.Days(startDay, endDay, f.calendar.zone)
	if err != nil {
		return nil, err
	}
	type key struct{ center, examType, facility string }
	groups := map[key]*durations{}
	err = facts.Scan(ctx, f.store, c.Partition(), start, end, "reports", func(_ string, fc fact) error {
		all := c.SeesCommunity() || c.Has(typev1.Role_ROLE_AUDITOR) || c.Facility == fc.Center
		if (!all && c.Facility != fc.Facility) || (facility != "" && facility != fc.Facility) || (examType != "" && examType != fc.ExamType) {
			return nil
		}
		k := key{fc.Center, fc.ExamType, fc.Facility}
		if groups[k] == nil {
			groups[k] = &durations{}
		}
		groups[k].add(fc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	rows := make([]*typev1.ExamStatisticsRow, 0, len(groups))
	for k, g := range groups {
		rows = append(rows, &typev1.ExamStatisticsRow{
			CenterFacility: k.center, ExamType: k.examType, Facility: k.facility,
			Count: int32(len(g.total)), Overdue: g.overdue,
			OnTimeRate: float64(int32(len(g.total))-g.overdue) / float64(len(g.total)),
			InCenter:   percentiles(g.inCenter), Total: percentiles(g.total),
		})
	}
	slices.SortFunc(rows, func(a, b *typev1.ExamStatisticsRow) int {
		return cmp.Or(cmp.Compare(a.GetCenterFacility(), b.GetCenterFacility()),
			cmp.Compare(a.GetExamType(), b.GetExamType()), cmp.Compare(a.GetFacility(), b.GetFacility()))
	})
	return rows, nil
}

// durations collects the turnaround times of one group, in minutes.
type durations struct {
	inCenter, total []float64
	overdue         int32
}

func (d *durations) add(fc fact) {
	d.inCenter = append(d.inCenter, fc.Final.Sub(fc.Arrive).Minutes())
	d.total = append(d.total, fc.Final.Sub(fc.Request).Minutes())
	if fc.Overdue {
		d.overdue++
	}
}

// percentiles are the nearest-rank 50th, 90th and 95th percentiles.
func percentiles(minutes []float64) *typev1.Percentiles {
	if len(minutes) == 0 {
		return nil
	}
	slices.Sort(minutes)
	rank := func(q float64) float64 { return facts.NearestRank(minutes, q) }
	return &typev1.Percentiles{P50Minutes: rank(0.5), P90Minutes: rank(0.9), P95Minutes: rank(0.95)}
}
