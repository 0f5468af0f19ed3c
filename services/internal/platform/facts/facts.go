// Package facts keeps the small records a service writes, in the same
// transaction as the change they describe, for its statistics: one JSON
// value per fact under stat/{day}/, so that a statistics call reads a range
// of days by prefix and never scans the service's other records.
package facts

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/store"
)

// Bounds of one statistics call.
const (
	// MaxDays is the longest range of days one call may ask for, after
	// its first day.
	MaxDays = 92
	// MaxFacts is the most facts one call reads.
	MaxFacts = 200000
)

// pageSize is how many facts one store List returns.
const pageSize = 1000

// Put writes fact f of day (YYYY-MM-DD) under id in tx.
func Put(tx store.Tx, day, id string, f any) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return tx.Put(prefix(day)+id, data)
}

func prefix(day string) string { return "stat/" + day + "/" }

// Days parses a request's start_day and end_day, dates in zone, and checks
// that they make a range of at most MaxDays. Errors name the field.
func Days(startDay, endDay string, zone *time.Location) (start, end time.Time, err error) {
	start, err = time.ParseInLocation(time.DateOnly, startDay, zone)
	if err != nil {
		return start, end, apierr.Invalid("start_day", "not a date")
	}
	end, err = time.ParseInLocation(time.DateOnly, endDay, zone)
	if err != nil {
		return start, end, apierr.Invalid("end_day", "not a date")
	}
	if end.Before(start) || end.Sub(start) > MaxDays*24*time.Hour {
		return start, end, apierr.Invalid("end_day", "must be from start_day to %d days after it", MaxDays)
	}
	return start, end, nil
}

// Scan decodes the facts of every day from start to end, in order of day
// and id, and passes each with its day to fn. More than MaxFacts facts is
// an InvalidArgument on end_day that calls them what (say "reports").
func Scan[T any](ctx context.Context, st store.Store, p store.Partition, start, end time.Time, what string, fn func(day string, f T) error) error {
	n := 0
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		day := d.Format(time.DateOnly)
		for rec, err := range store.Scan(ctx, st, p, prefix(day), "", pageSize) {
			if err != nil {
				return err
			}
			if n++; n > MaxFacts {
				return apierr.Invalid("end_day", "more than %d %s; ask for fewer days", MaxFacts, what)
			}
			var f T
			if err := json.Unmarshal(rec.Value, &f); err != nil {
				return fmt.Errorf("decode %s: %w", rec.Key, err)
			}
			if err := fn(day, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// NearestRank returns the q-quantile (0 < q ≤ 1) of sorted values by the
// nearest-rank method: the smallest value with at least q of the values at
// or below it. sorted must not be empty.
func NearestRank(sorted []float64, q float64) float64 {
	return sorted[max(int(math.Ceil(q*float64(len(sorted))))-1, 0)]
}
