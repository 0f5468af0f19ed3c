package recognition

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/timeid"
	"github.com/countymcc/mcc/services/internal/store"
)

// maxMonths bounds the months one statistics call reads.
const maxMonths = 24

// maxStatDecisions bounds the decisions and corrections one statistics
// call reads; a variable for tests.
var maxStatDecisions = 500_000

// GetStatistics aggregates the decisions of the months asked for. Only the
// latest decision of a correction chain counts.
func (s *Service) GetStatistics(ctx context.Context, req *recognitionv1.GetStatisticsRequest) (*recognitionv1.GetStatisticsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	start, err := time.Parse("2006-01", req.GetStartMonth())
	if err != nil {
		return nil, apierr.Invalid("start_month", "is required, YYYY-MM")
	}
	end, err := time.Parse("2006-01", req.GetEndMonth())
	if err != nil {
		return nil, apierr.Invalid("end_month", "is required, YYYY-MM")
	}
	if end.Before(start) {
		return nil, apierr.Invalid("end_month", "is before start_month")
	}
	if end.After(start.AddDate(0, maxMonths-1, 0)) {
		return nil, apierr.Invalid("end_month", "is more than %d months after start_month", maxMonths)
	}
	facility := req.GetFacility()
	if !seesAll(c) {
		facility = c.Facility
	}
	// The corrections of the decisions made in the months asked for: their
	// IDs, like the decisions', sort by creation time.
	from := time.Date(start.Year(), start.Month(), 1, 0, 0, 0, 0, cst)
	until := time.Date(end.Year(), end.Month()+1, 1, 0, 0, 0, 0, cst)
	read := 0
	tooMany := func() error {
		return apierr.Invalid("end_month", "the months hold more than %d decisions; ask for fewer", maxStatDecisions)
	}
	corrected := map[string]bool{}
	for rec, err := range store.Scan(ctx, s.store, p, "corr/", "corr/"+timeid.Floor(from), 1000) {
		if err != nil {
			return nil, err
		}
		id := strings.TrimPrefix(rec.Key, "corr/")
		if !timeid.Time(id).Before(until) {
			break
		}
		if read++; read > maxStatDecisions {
			return nil, tooMany()
		}
		corrected[decisions.Name(id)] = true
	}
	type key struct{ item, facility, month string }
	rows := map[key]*recognitionv1.StatisticsRow{}
	total := &recognitionv1.StatisticsRow{}
	reasons := map[recognitionv1.Reason]int32{}
	repeated := map[string]int32{}
	for m := start; !m.After(end); m = m.AddDate(0, 1, 0) {
		month := m.Format("2006-01")
		for rec, err := range store.Scan(ctx, s.store, p, "decm/"+month+"/", "", 1000) {
			if err != nil {
				return nil, err
			}
			if read++; read > maxStatDecisions {
				return nil, tooMany()
			}
			d := &recognitionv1.Decision{}
			if err := proto.Unmarshal(rec.Value, d); err != nil {
				return nil, fmt.Errorf("%s: %w", rec.Key, err)
			}
			if corrected[d.GetName()] || facility != "" && d.GetFacility() != facility {
				continue
			}
			k := key{d.GetItem(), d.GetFacility(), month}
			row := rows[k]
			if row == nil {
				row = &recognitionv1.StatisticsRow{Item: k.item, Facility: k.facility, Month: k.month}
				rows[k] = row
			}
			for _, r := range []*recognitionv1.StatisticsRow{row, total} {
				count(r, d)
			}
			if d.GetOutcome() == recognitionv1.Outcome_OUTCOME_NOT_RECOGNIZED {
				reasons[d.GetReason()]++
				if d.GetReason() != recognitionv1.Reason_REASON_IMAGES_NOT_RECEIVED {
					repeated[d.GetItem()]++
				}
			}
		}
	}
	resp := &recognitionv1.GetStatisticsResponse{Total: rate(total)}
	for _, r := range rows {
		resp.Rows = append(resp.Rows, rate(r))
	}
	slices.SortFunc(resp.Rows, func(a, b *recognitionv1.StatisticsRow) int {
		return cmp.Or(strings.Compare(a.GetMonth(), b.GetMonth()), strings.Compare(a.GetFacility(), b.GetFacility()), strings.Compare(a.GetItem(), b.GetItem()))
	})
	var all int32
	for reason, n := range reasons {
		resp.Reasons = append(resp.Reasons, &recognitionv1.ReasonCount{Reason: reason, Count: n})
		all += n
	}
	slices.SortFunc(resp.Reasons, func(a, b *recognitionv1.ReasonCount) int {
		return cmp.Or(cmp.Compare(b.GetCount(), a.GetCount()), cmp.Compare(a.GetReason(), b.GetReason()))
	})
	var cum int32
	for _, r := range resp.Reasons {
		cum += r.GetCount()
		r.CumulativeShare = float64(cum) / float64(all)
	}
	for item, n := range repeated {
		resp.Repeated = append(resp.Repeated, &recognitionv1.ItemCount{Item: item, Count: n})
	}
	slices.SortFunc(resp.Repeated, func(a, b *recognitionv1.ItemCount) int {
		return cmp.Or(cmp.Compare(b.GetCount(), a.GetCount()), strings.Compare(a.GetItem(), b.GetItem()))
	})
	return resp, nil
}

// count adds one decision to a row.
func count(r *recognitionv1.StatisticsRow, d *recognitionv1.Decision) {
	r.Decisions++
	switch {
	case d.GetOutcome() == recognitionv1.Outcome_OUTCOME_RECOGNIZED:
		r.Recognized++
		r.SavedFen += d.GetPriceFen()
	case d.GetReason() == recognitionv1.Reason_REASON_IMAGES_NOT_RECEIVED:
		r.Excluded++
	default:
		r.NotRecognized++
	}
}

// rate sets a row's rate: recognized over the decisions that count.
func rate(r *recognitionv1.StatisticsRow) *recognitionv1.StatisticsRow {
	if n := r.GetRecognized() + r.GetNotRecognized(); n > 0 {
		r.Rate = float64(r.GetRecognized()) / float64(n)
	}
	return r
}
