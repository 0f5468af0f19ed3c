package reading

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The rota (排班) of a center is its shifts, each at shift/{id}, with an
// index by end time:
//
//	shiftend/{center}/{end}/{id}
//
// so that the shifts that have not ended are one key range from now on.
var shifts = resource.Table[*typev1.RotaShift]{
	Collection: "shifts",
	Prefix:     "shift/",
	New:        func() *typev1.RotaShift { return &typev1.RotaShift{} },
	Event:      "shift",
	Facilities: func(s *typev1.RotaShift) []string { return []string{s.GetCenterFacility()} },
}

// maxShift is the longest shift: a rota lists duty periods, not standing
// assignments.
const maxShift = 7 * 24 * time.Hour

// maxDutyScan bounds the shifts read to find who is on duty.
const maxDutyScan = 500

func shiftEndPrefix(center string) string { return "shiftend/" + facilityID(center) + "/" }

func shiftEndKey(s *typev1.RotaShift) string {
	return fmt.Sprintf("%s%020d/%s", shiftEndPrefix(s.GetCenterFacility()), s.GetEndTime().AsTime().UnixNano(), shifts.ID(s.GetName()))
}

// createShift adds a shift to the caller's center's rota.
func (f *Flow) createShift(ctx context.Context, c auth.Caller, in *typev1.RotaShift, requestID string) (*typev1.RotaShift, error) {
	start, end := in.GetStartTime().AsTime(), in.GetEndTime().AsTime()
	if end.Sub(start) > maxShift {
		return nil, apierr.Invalid("shift.end_time", "a shift lasts at most %s", maxShift)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	s := &typev1.RotaShift{
		Name: shifts.Name(id.String()), CenterFacility: c.Facility, Reader: in.GetReader(),
		ExamTypes: in.GetExamTypes(), StartTime: in.GetStartTime(), EndTime: in.GetEndTime(),
	}
	return shifts.StandardCreate(ctx, f.store, c, requestID, s, f.clock.Now(), func(tx store.Tx, s *typev1.RotaShift) error {
		for i, code := range s.GetExamTypes() {
			if _, err := f.activeType(f.catalog.inside(tx), code, fmt.Sprintf("shift.exam_types[%d]", i)); err != nil {
				return err
			}
		}
		return tx.Put(shiftEndKey(s), nil)
	})
}

// listShifts lists the caller's center's shifts that have not ended, by
// end time.
func (f *Flow) listShifts(ctx context.Context, c auth.Caller, token string, size int32) ([]*typev1.RotaShift, string, error) {
	p, prefix := c.Partition(), shiftEndPrefix(c.Facility)
	filter := "shifts|" + prefix
	after, err := paging.Decode(token, filter)
	if err != nil {
		return nil, "", err
	}
	if now := fmt.Sprintf("%s%020d", prefix, f.clock.Now().UnixNano()); after < now {
		after = now
	}
	var out []*typev1.RotaShift
	last, err := paging.Scan(ctx, f.store, p, prefix, after, paging.Size(size), func(rec store.Record) (bool, error) {
		s, err := shifts.Load(ctx, f.store, p, shifts.Name(rec.Key[strings.LastIndexByte(rec.Key, '/')+1:]))
		if err != nil {
			return false, err
		}
		out = append(out, s)
		return true, nil
	})
	if err != nil || last == "" {
		return out, "", err
	}
	return out, paging.Encode(last, filter), nil
}

// deleteShift removes a shift of the caller's center. Exams it assigned
// keep their reader.
func (f *Flow) deleteShift(ctx context.Context, c auth.Caller, name, etag string) error {
	now := f.clock.Now()
	return f.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		s, version, err := shifts.Get(tx, name)
		if err != nil {
			return err
		}
		if s.GetCenterFacility() != c.Facility && !c.SeesCommunity() {
			return notFound(name)
		}
		if err := resource.CheckEtag(name, etag, version); err != nil {
			return err
		}
		if err := tx.Delete(shifts.Key(name), version); err != nil {
			return err
		}
		if err := tx.Delete(shiftEndKey(s), 0); err != nil {
			return err
		}
		return events.Append(tx, c, now, shifts.Change(shifts.Event+".deleted", s, version+1))
	})
}

// duty is a reader on duty, by the shift that puts them there.
type duty struct{ shift, reader string }

// onDuty lists the readers whose shifts at the center cover an exam type
// at a time, by the end of their shift. It reads outside the transaction
// that assigns (a transaction cannot list), which pick re-checks.
func (f *Flow) onDuty(ctx context.Context, p store.Partition, center, examType string, at time.Time) ([]duty, error) {
	prefix := shiftEndPrefix(center)
	from := fmt.Sprintf("%s%020d", prefix, at.UnixNano())
	var out []duty
	_, err := paging.Scan(ctx, f.store, p, prefix, from, maxDutyScan, func(rec store.Record) (bool, error) {
		s, err := shifts.Load(ctx, f.store, p, shifts.Name(rec.Key[strings.LastIndexByte(rec.Key, '/')+1:]))
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		covers := len(s.GetExamTypes()) == 0 || slices.Contains(s.GetExamTypes(), examType)
		if s.GetStartTime().AsTime().After(at) || !covers {
			return false, nil
		}
		out = append(out, duty{shift: s.GetName(), reader: s.GetReader()})
		return true, nil
	})
	return out, err
}

// pick chooses, inside the assigning transaction, the reader on duty with
// the fewest open exams, among those whose shift still exists; the first
// listed wins a tie. It returns "" when nobody is on duty: the exam stays
// in the pool to be claimed.
func pick(tx store.Tx, center string, duty []duty) (string, error) {
	best, bestLoad := "", 0
	for _, d := range duty {
		if _, err := tx.Get(shifts.Key(d.shift)); errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return "", err
		}
		n, err := counter(tx, loadKey(center, d.reader))
		if err != nil {
			return "", err
		}
		if best == "" || n < bestLoad {
			best, bestLoad = d.reader, n
		}
	}
	return best, nil
}
