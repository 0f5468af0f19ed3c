package referral

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/timeid"
	"github.com/countymcc/mcc/services/internal/store"
)

// chinaTime is the time zone months are counted in. It is fixed at UTC+8
// (China has no daylight saving time), so no time zone database is needed.
var chinaTime = time.FixedZone("CST", 8*60*60)

// Statistics bounds: the months one call may cover, and the referrals it
// may read.
const (
	maxStatMonths   = 12
	maxStatReferral = 500_000
	statBatch       = 1000
)

// GetStatistics returns the figures of the referrals created in a range of
// months, per month and facility pair. Referral IDs sort by creation time,
// so it reads exactly the referrals of those months.
func (s *Service) GetStatistics(ctx context.Context, req *referralv1.GetStatisticsRequest) (*referralv1.GetStatisticsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	start, err := time.ParseInLocation("2006-01", req.GetStartMonth(), chinaTime)
	if err != nil {
		return nil, apierr.Invalid("start_month", "must be YYYY-MM")
	}
	end, err := time.ParseInLocation("2006-01", req.GetEndMonth(), chinaTime)
	if err != nil {
		return nil, apierr.Invalid("end_month", "must be YYYY-MM")
	}
	if end.Before(start) || end.After(start.AddDate(0, maxStatMonths-1, 0)) {
		return nil, apierr.Invalid("end_month", "must be within %d months from start_month", maxStatMonths)
	}
	until := end.AddDate(0, 1, 0)
	groups := map[statKey]*statGroup{}
	read := 0
	for rec, err := range store.Scan(ctx, s.store, c.Partition(), referralPrefix, referralPrefix+timeid.Floor(start), statBatch) {
		if err != nil {
			return nil, err
		}
		created := timeid.Time(strings.TrimPrefix(rec.Key, referralPrefix))
		if !created.Before(until) {
			break
		}
		if read++; read > maxStatReferral {
			return nil, apierr.Condition("TOO_MANY_REFERRALS", "more than %d referrals in the range; ask for fewer months", maxStatReferral)
		}
		r, err := referrals.Decode(rec)
		if err != nil {
			return nil, err
		}
		k := statKey{month: created.In(chinaTime).Format("2006-01"), from: r.GetSendingFacility(), to: r.GetTargetFacility()}
		g := groups[k]
		if g == nil {
			g = &statGroup{}
			groups[k] = g
		}
		g.add(r)
	}
	resp := &referralv1.GetStatisticsResponse{}
	total := &statGroup{}
	for k, g := range groups {
		resp.Rows = append(resp.Rows, g.figures(k))
		total.merge(g)
	}
	slices.SortFunc(resp.Rows, func(a, b *referralv1.Statistics) int {
		return cmp.Or(cmp.Compare(a.GetMonth(), b.GetMonth()), cmp.Compare(a.GetSendingFacility(), b.GetSendingFacility()), cmp.Compare(a.GetTargetFacility(), b.GetTargetFacility()))
	})
	resp.Total = total.figures(statKey{})
	return resp, nil
}

type statKey struct{ month, from, to string }

// statGroup accumulates the figures of one group of referrals.
type statGroup struct {
	up, down, green, triaged, accepted, completed, missed int32
	triages                                               []time.Duration
}

func (g *statGroup) add(r *referralv1.Referral) {
	if r.GetDirection() == referralv1.Direction_DIRECTION_DOWN {
		g.down++
	} else {
		g.up++
	}
	if r.GetGreenChannel() {
		g.green++
	}
	if t := r.GetTriage(); t.GetTriageTime() != nil {
		g.triaged++
		g.triages = append(g.triages, t.GetTriageTime().AsTime().Sub(timeOf(r.GetSubmitTime())))
		if t.GetReferralCode() != "" {
			g.accepted++
		}
	}
	if r.GetState() == referralv1.Referral_STATE_COMPLETED {
		g.completed++
	}
	g.missed += r.GetFollowUps().GetMissed()
}

func (g *statGroup) merge(o *statGroup) {
	g.up, g.down, g.green = g.up+o.up, g.down+o.down, g.green+o.green
	g.triaged, g.accepted, g.completed, g.missed = g.triaged+o.triaged, g.accepted+o.accepted, g.completed+o.completed, g.missed+o.missed
	g.triages = append(g.triages, o.triages...)
}

// figures are the group's counts with its rates and median.
func (g *statGroup) figures(k statKey) *referralv1.Statistics {
	st := &referralv1.Statistics{
		Month: k.month, SendingFacility: k.from, TargetFacility: k.to,
		Up: g.up, Down: g.down, GreenChannel: g.green,
		Triaged: g.triaged, Accepted: g.accepted, Completed: g.completed,
		FollowUpsMissed: g.missed,
	}
	if g.triaged > 0 {
		st.AcceptanceRate = float64(g.accepted) / float64(g.triaged)
	}
	if n := g.up + g.down; n > 0 {
		st.CompletionRate = float64(g.completed) / float64(n)
	}
	if n := len(g.triages); n > 0 {
		slices.Sort(g.triages)
		median := g.triages[n/2]
		if n%2 == 0 {
			median = (g.triages[n/2-1] + g.triages[n/2]) / 2
		}
		st.MedianTimeToTriage = durationpb.New(median)
	}
	return st
}
