package reading

import (
	"flag"
	"fmt"
	"strings"
	"time"
)

// CalendarConfig is a center's working time: the hours of a working day
// and the public holidays. Saturdays and Sundays are not working days.
type CalendarConfig struct {
	// WorkingHours are the day's working spans, "08:00-12:00,14:30-18:00".
	WorkingHours string
	// Holidays are dates that are not working days, "2026-10-01,2026-10-02".
	Holidays string
	// UTCOffset is the community's time zone, also the day boundary of
	// the statistics.
	UTCOffset time.Duration
}

// RegisterFlags registers `-<prefix>working-hours`, `-<prefix>holidays` and
// `-<prefix>utc-offset`.
func (c *CalendarConfig) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.WorkingHours, prefix+"working-hours", "08:00-12:00,14:30-18:00", "working hours of a working day, for turnaround limits counted in working hours (comma-separated HH:MM-HH:MM spans)")
	fs.StringVar(&c.Holidays, prefix+"holidays", "", "public holidays (YYYY-MM-DD, comma-separated) that are not working days")
	fs.DurationVar(&c.UTCOffset, prefix+"utc-offset", 8*time.Hour, "the community's time zone, for working time and the days of the statistics")
}

// span is a working span of a day, in minutes after midnight.
type span struct{ start, end int }

// calendar answers working-time questions in the community's zone.
type calendar struct {
	zone     *time.Location
	spans    []span
	holidays map[string]bool
}

// maxSearchDays bounds how far ahead a working-time sum looks, so a
// calendar without working days (all holidays) cannot loop for ever.
const maxSearchDays = 400

func (c CalendarConfig) parse() (calendar, error) {
	cal := calendar{zone: time.FixedZone("community", int(c.UTCOffset/time.Second)), holidays: map[string]bool{}}
	for _, part := range strings.Split(c.WorkingHours, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(part), "-")
		start, err1 := minutesOf(from)
		end, err2 := minutesOf(to)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return calendar{}, fmt.Errorf("working hours: %q is not a span HH:MM-HH:MM", part)
		}
		if n := len(cal.spans); n > 0 && start < cal.spans[n-1].end {
			return calendar{}, fmt.Errorf("working hours: %q overlaps or precedes the span before it", part)
		}
		cal.spans = append(cal.spans, span{start, end})
	}
	for _, d := range strings.Split(c.Holidays, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return calendar{}, fmt.Errorf("holidays: %q is not a date YYYY-MM-DD", d)
		}
		cal.holidays[d] = true
	}
	return cal, nil
}

func minutesOf(hhmm string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(hhmm))
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}

// day returns the date of t in the community's zone, YYYY-MM-DD.
func (c calendar) day(t time.Time) string { return t.In(c.zone).Format(time.DateOnly) }

// workday reports whether the day of t is a working day.
func (c calendar) workday(t time.Time) bool {
	local := t.In(c.zone)
	if wd := local.Weekday(); wd == time.Saturday || wd == time.Sunday {
		return false
	}
	return !c.holidays[local.Format(time.DateOnly)]
}

// midnight returns the start of the day of t in the community's zone.
func (c calendar) midnight(t time.Time) time.Time {
	l := t.In(c.zone)
	return time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, c.zone)
}

// addWorkingTime returns the instant d of working time after t: time
// outside the working spans of working days does not count.
func (c calendar) addWorkingTime(t time.Time, d time.Duration) (time.Time, error) {
	for day := 0; day < maxSearchDays; day++ {
		base := c.midnight(t).AddDate(0, 0, day)
		if !c.workday(base) {
			continue
		}
		for _, s := range c.spans {
			from := base.Add(time.Duration(s.start) * time.Minute)
			to := base.Add(time.Duration(s.end) * time.Minute)
			if !to.After(t) {
				continue
			}
			if from.Before(t) {
				from = t
			}
			if left := to.Sub(from); d <= left {
				return from.Add(d).UTC(), nil
			}
			d -= to.Sub(from)
		}
	}
	return time.Time{}, fmt.Errorf("no working time within %d days", maxSearchDays)
}

// addWorkingDays returns the same time of day n working days after t.
func (c calendar) addWorkingDays(t time.Time, n int) (time.Time, error) {
	local := t.In(c.zone)
	for day, found := 1, 0; day <= maxSearchDays; day++ {
		next := local.AddDate(0, 0, day)
		if c.workday(next) {
			if found++; found == n {
				return next.UTC(), nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("no %d working days within %d days", n, maxSearchDays)
}
