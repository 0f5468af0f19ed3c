package reading

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/store"
)

// This file holds the keys an exam keeps outside its own record (its
// requester's index, the center's worklist, the open and load counters,
// the turnaround timer) and the one function that keeps them in step with
// the exam after any change.

func facilityID(name string) string { return strings.TrimPrefix(name, "facilities/") }

func byFacilityKey(e *typev1.Exam) string {
	return "byfac/" + facilityID(e.GetRequestingFacility()) + "/" + exams.ID(e.GetName())
}

func worklistPrefix(center string) string { return "wl/" + facilityID(center) + "/" }

func worklistKey(e *typev1.Exam) string {
	rank, due := "1", noDue
	if e.GetExpedited() != nil {
		rank = "0"
	}
	if e.GetDueTime() != nil {
		due = fmt.Sprintf("%020d", e.GetDueTime().AsTime().UnixNano())
	}
	return worklistPrefix(e.GetCenterFacility()) + rank + "/" + due + "/" + exams.ID(e.GetName())
}

func openKey(e *typev1.Exam) string {
	return "open/" + facilityID(e.GetCenterFacility()) + "/" + e.GetExamType().GetCode()
}

func loadKey(center, reader string) string { return "load/" + facilityID(center) + "/" + reader }

// footprint is what an exam's state keeps outside its own record: its
// worklist entry, the counters it counts in, and its turnaround timer.
type footprint struct {
	worklist   string
	open, load string
	due        time.Time
}

func footprintOf(e *typev1.Exam) footprint {
	var fp footprint
	if e == nil || e.GetName() == "" {
		return fp
	}
	if pending(e.GetState()) {
		fp.worklist = worklistKey(e)
	}
	if open(e.GetState()) {
		fp.open = openKey(e)
		if e.GetReader() != "" {
			fp.load = loadKey(e.GetCenterFacility(), e.GetReader())
		}
		if !e.GetOverdue() && e.GetDueTime() != nil {
			fp.due = e.GetDueTime().AsTime()
		}
	}
	return fp
}

// settle brings the worklist, the counters and the turnaround timer from
// what the exam had before a change to what it has now.
func settle(tx store.Tx, before footprint, e *typev1.Exam) error {
	after := footprintOf(e)
	if before.worklist != after.worklist {
		if before.worklist != "" {
			if err := tx.Delete(before.worklist, 0); err != nil {
				return err
			}
		}
		if after.worklist != "" {
			if err := tx.Put(after.worklist, nil); err != nil {
				return err
			}
		}
	}
	for _, pair := range [][2]string{{before.open, after.open}, {before.load, after.load}} {
		if pair[0] == pair[1] {
			continue
		}
		if err := count(tx, pair[0], -1); err != nil {
			return err
		}
		if err := count(tx, pair[1], 1); err != nil {
			return err
		}
	}
	id := exams.ID(e.GetName())
	switch {
	case after.due.Equal(before.due):
		return nil
	case after.due.IsZero():
		return deadline.Clear(tx, timerTurnaround, id)
	default:
		return deadline.Set(tx, timerTurnaround, id, after.due, nil)
	}
}

// counter reads a counter; a missing one is 0.
func counter(tx store.Tx, key string) (int, error) {
	rec, err := tx.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(rec.Value))
}

// count adds delta to a counter (not below zero); an empty key is none.
func count(tx store.Tx, key string, delta int) error {
	if key == "" {
		return nil
	}
	n, err := counter(tx, key)
	if err != nil {
		return err
	}
	n = max(n+delta, 0)
	if n == 0 {
		return tx.Delete(key, 0)
	}
	return tx.Put(key, []byte(strconv.Itoa(n)))
}
