package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/store"
)

// Query selects records of one community. Every filter that is set must
// match.
type Query struct {
	Patient string
	Actor   string
	// Start and End bound the record's time to [Start, End); zero is open.
	Start, End time.Time
}

// filter is the query as a page token's filter: a token is accepted back
// only with the same query.
func (q Query) filter() string {
	return fmt.Sprintf("%s|%s|%d|%d", q.Patient, q.Actor, unix(q.Start), unix(q.End))
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (q Query) match(rec *auditv1.AuditRecord) bool {
	t := rec.GetTime().AsTime()
	switch {
	case q.Actor != "" && rec.GetSubject() != q.Actor:
		return false
	case !q.Start.IsZero() && t.Before(q.Start):
		return false
	case !q.End.IsZero() && !t.Before(q.End):
		return false
	case q.Patient != "":
		for _, p := range rec.GetPatients() {
			if p == q.Patient {
				return true
			}
		}
		return false
	}
	return true
}

// List returns up to size records of community that match q, oldest first,
// after the page token (empty: from the start), and the token of the next
// page ("" at the end). It reads the patient index when q names a patient,
// else the actor index, else the time index. A token made for another
// query is an InvalidArgument on page_token.
func (t *Trail) List(ctx context.Context, community string, q Query, size int, token string) ([]*auditv1.AuditRecord, string, error) {
	after, err := paging.Decode(token, q.filter())
	if err != nil {
		return nil, "", err
	}
	p := store.Partition(community)
	var prefix string
	switch {
	case q.Patient != "":
		prefix = patientIndex(q.Patient)
	case q.Actor != "":
		prefix = actorIndex(q.Actor)
	default:
		prefix = timePrefix
		if start := timeIndex(q.Start); !q.Start.IsZero() && after < start {
			after = strings.TrimSuffix(start, "/")
		}
	}
	var out []*auditv1.AuditRecord
	end := ""
	if q.Patient == "" && q.Actor == "" && !q.End.IsZero() {
		end = timeIndex(q.End)
	}
	errEnd := errors.New("past the end of the range")
	next, err := paging.Scan(ctx, t.st, p, prefix, after, size, func(r store.Record) (bool, error) {
		if end != "" && r.Key >= end {
			return false, errEnd
		}
		rec, err := t.st.Get(ctx, p, recordPrefix+string(r.Value))
		if errors.Is(err, store.ErrNotFound) {
			return false, nil // pruned while we read
		}
		if err != nil {
			return false, err
		}
		ar, err := decodeRecord(rec.Value)
		if err != nil {
			return false, err
		}
		if !q.match(ar) {
			return false, nil
		}
		out = append(out, ar)
		return true, nil
	})
	if errors.Is(err, errEnd) {
		return out, "", nil
	}
	if err != nil || next == "" {
		return out, "", err
	}
	return out, paging.Encode(next, q.filter()), nil
}
