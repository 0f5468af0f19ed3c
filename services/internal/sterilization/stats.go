package sterilization

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/store"
)

// Statistics are counters per local day, bumped in the transaction of the
// step they count, so they always agree with the records. A query reads one
// key per day, facility and set type (or sterilizer) of its range.

const (
	dispatchStatPrefix = "stat/pkg/"
	loadStatPrefix     = "stat/load/"
	// maxStatDays bounds the range of one statistics query.
	maxStatDays = 366
)

// dispatchDay counts the packages dispatched to one facility of one set
// type on one day.
type dispatchDay struct {
	Packages          int64 `json:"packages"`
	TurnaroundSeconds int64 `json:"turnaround_s"`
	AmountFen         int64 `json:"amount_fen"`
}

// loadDay counts one sterilizer's loads, BI results and recalls of a day.
type loadDay struct {
	Loads            int64 `json:"loads"`
	Released         int64 `json:"released"`
	Failed           int64 `json:"failed"`
	BiologicalPassed int64 `json:"bi_passed"`
	BiologicalFailed int64 `json:"bi_failed"`
	Recalls          int64 `json:"recalls"`
	RecalledPackages int64 `json:"recalled_packages"`
}

// bump applies change to the counter record at key.
func bump[T any](tx store.Tx, key string, change func(*T)) error {
	var v T
	rec, err := tx.Get(key)
	switch {
	case err == nil:
		if err := json.Unmarshal(rec.Value, &v); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	change(&v)
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(key, data)
}

// countDispatch counts a dispatch for its destination: the turnaround of
// the cycle from its collection, and the set type's current price.
func (s *Service) countDispatch(tx store.Tx, p *sterilizationv1.Package, now time.Time) error {
	price := int64(0)
	st, _, err := setTypes.Get(tx, p.GetSetType())
	switch {
	case err == nil:
		price = st.GetPriceFen()
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	var turnaround time.Duration
	for _, ch := range p.GetTimeline() {
		if ch.GetTo() == collected.String() {
			turnaround = now.Sub(ch.GetTime().AsTime())
		}
	}
	key := dispatchStatPrefix + strings.Join([]string{s.day(now), facilityID(p.GetCssd()), facilityID(p.GetHandover().GetDestination()), strings.TrimPrefix(p.GetSetType(), "setTypes/")}, "/")
	return bump(tx, key, func(d *dispatchDay) {
		d.Packages++
		d.TurnaroundSeconds += int64(turnaround.Seconds())
		d.AmountFen += price
	})
}

// countLoad bumps the counters of a sterilizer's day.
func (s *Service) countLoad(tx store.Tx, st *sterilizationv1.Sterilizer, now time.Time, change func(*loadDay)) error {
	key := loadStatPrefix + strings.Join([]string{s.day(now), facilityID(st.GetFacility()), strings.TrimPrefix(st.GetName(), "sterilizers/")}, "/")
	return bump(tx, key, change)
}

// countLoadOf bumps the counters of a load's sterilizer's day.
func (s *Service) countLoadOf(tx store.Tx, load *sterilizationv1.Load, now time.Time, change func(*loadDay)) error {
	return s.countLoad(tx, &sterilizationv1.Sterilizer{Name: load.GetSterilizer(), Facility: load.GetFacility()}, now, change)
}

// statRange checks a range of days and returns its first and last day.
func statRange(start, end string) (string, string, error) {
	first, err := time.Parse(time.DateOnly, start)
	if err != nil {
		return "", "", apierr.Invalid("start_day", "not a date")
	}
	last, err := time.Parse(time.DateOnly, end)
	if err != nil {
		return "", "", apierr.Invalid("end_day", "not a date")
	}
	if last.Before(first) || last.Sub(first) > maxStatDays*24*time.Hour {
		return "", "", apierr.Invalid("end_day", "must be from start_day to %d days after it", maxStatDays)
	}
	return start, end, nil
}

// statRow is one counter record of a range, with the parts of its key.
type statRow struct {
	day   string
	parts []string
	value []byte
}

// scanStats reads the counter records under prefix for the days from start
// to end, that keep accepts by the parts of their key after the day.
func (s *Service) scanStats(ctx context.Context, c auth.Caller, prefix, start, end string, keep func(parts []string) bool) ([]statRow, error) {
	first, last, err := statRange(start, end)
	if err != nil {
		return nil, err
	}
	var rows []statRow
	for rec, err := range store.Scan(ctx, s.store, c.Partition(), prefix, prefix+first, 1000) {
		if err != nil {
			return nil, err
		}
		parts := strings.Split(strings.TrimPrefix(rec.Key, prefix), "/")
		if parts[0] > last {
			break
		}
		if parts[0] >= first && keep(parts[1:]) {
			rows = append(rows, statRow{day: parts[0], parts: parts[1:], value: rec.Value})
		}
	}
	return rows, nil
}

// dispatchRows reads the dispatch counters of a range that the caller may
// see; their key parts are the CSSD, the facility and the set type.
func (s *Service) dispatchRows(ctx context.Context, c auth.Caller, start, end string) ([]statRow, error) {
	return s.scanStats(ctx, c, dispatchStatPrefix, start, end, func(parts []string) bool {
		return len(parts) == 3 && seesStats(c, parts[0], parts[1])
	})
}

// seesStats reports whether the caller may see the counters of a CSSD and
// a facility: administrators all, a CSSD its own, a clinic its own.
func seesStats(c auth.Caller, cssd, facility string) bool {
	me := facilityID(c.Facility)
	return c.SeesCommunity() || me == cssd || me == facility
}

// GetStatistics returns the dispatches per facility and day with their
// turnaround, and the CSSD's load, BI and recall figures.
func (s *Service) GetStatistics(ctx context.Context, req *sterilizationv1.GetStatisticsRequest) (*sterilizationv1.GetStatisticsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.dispatchRows(ctx, c, req.GetStartDay(), req.GetEndDay())
	if err != nil {
		return nil, err
	}
	type total struct{ packages, seconds int64 }
	// days is keyed by day and facility, which sort in that order.
	days, facilities := map[string]*total{}, map[string]*total{}
	for _, row := range rows {
		var d dispatchDay
		if err := json.Unmarshal(row.value, &d); err != nil {
			return nil, err
		}
		facility := "facilities/" + row.parts[1]
		for _, t := range []*total{entry(days, row.day+" "+facility), entry(facilities, facility)} {
			t.packages += d.Packages
			t.seconds += d.TurnaroundSeconds
		}
	}
	resp := &sterilizationv1.GetStatisticsResponse{Loads: &sterilizationv1.LoadStatistics{}}
	mean := func(t *total) *durationpb.Duration {
		if t.packages == 0 {
			return durationpb.New(0)
		}
		return durationpb.New(time.Duration(t.seconds/t.packages) * time.Second)
	}
	for _, k := range slicesSorted(days) {
		day, facility, _ := strings.Cut(k, " ")
		resp.Days = append(resp.Days, &sterilizationv1.FacilityDay{Day: day, Facility: facility, Packages: days[k].packages, MeanTurnaround: mean(days[k])})
	}
	for _, f := range slicesSorted(facilities) {
		resp.Facilities = append(resp.Facilities, &sterilizationv1.FacilityDay{Facility: f, Packages: facilities[f].packages, MeanTurnaround: mean(facilities[f])})
	}
	loadRows, err := s.scanStats(ctx, c, loadStatPrefix, req.GetStartDay(), req.GetEndDay(), func(parts []string) bool {
		return len(parts) == 2 && (c.SeesCommunity() || facilityID(c.Facility) == parts[0])
	})
	if err != nil {
		return nil, err
	}
	l := resp.Loads
	for _, row := range loadRows {
		var d loadDay
		if err := json.Unmarshal(row.value, &d); err != nil {
			return nil, err
		}
		l.Loads += d.Loads
		l.Released += d.Released
		l.Failed += d.Failed
		l.BiologicalPassed += d.BiologicalPassed
		l.BiologicalFailed += d.BiologicalFailed
		l.Recalls += d.Recalls
		l.RecalledPackages += d.RecalledPackages
	}
	l.PassRate = rate(l.Released, l.Failed)
	l.BiologicalPassRate = rate(l.BiologicalPassed, l.BiologicalFailed)
	return resp, nil
}

// GetCostSummary returns the charges per facility and set type.
func (s *Service) GetCostSummary(ctx context.Context, req *sterilizationv1.GetCostSummaryRequest) (*sterilizationv1.GetCostSummaryResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := s.dispatchRows(ctx, c, req.GetStartDay(), req.GetEndDay())
	if err != nil {
		return nil, err
	}
	costs := map[string]map[string]*sterilizationv1.SetTypeCost{}
	for _, row := range rows {
		var d dispatchDay
		if err := json.Unmarshal(row.value, &d); err != nil {
			return nil, err
		}
		facility, setType := "facilities/"+row.parts[1], "setTypes/"+row.parts[2]
		if costs[facility] == nil {
			costs[facility] = map[string]*sterilizationv1.SetTypeCost{}
		}
		cost := costs[facility][setType]
		if cost == nil {
			cost = &sterilizationv1.SetTypeCost{SetType: setType}
			costs[facility][setType] = cost
		}
		cost.Packages += d.Packages
		cost.AmountFen += d.AmountFen
	}
	resp := &sterilizationv1.GetCostSummaryResponse{}
	for _, f := range slicesSorted(costs) {
		fc := &sterilizationv1.FacilityCost{Facility: f}
		for _, st := range slicesSorted(costs[f]) {
			cost := costs[f][st]
			fc.SetTypes = append(fc.SetTypes, cost)
			fc.Packages += cost.GetPackages()
			fc.AmountFen += cost.GetAmountFen()
		}
		resp.Facilities = append(resp.Facilities, fc)
		resp.TotalFen += fc.GetAmountFen()
	}
	return resp, nil
}

// entry returns the entry of m at k, creating it.
func entry[V any](m map[string]*V, k string) *V {
	if m[k] == nil {
		m[k] = new(V)
	}
	return m[k]
}

func rate(pass, fail int64) float64 {
	if pass+fail == 0 {
		return 0
	}
	return float64(pass) / float64(pass+fail)
}
