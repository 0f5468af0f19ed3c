package timeid

import (
	"testing"
	"time"
)

func TestIDsSortByTheirTimeAndFloorsBoundThem(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.FixedZone("CST", 8*3600))
	var ids []string
	for i := range 5 {
		id, err := New(t0.Add(time.Duration(i-2) * time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			t.Errorf("%s made before %s sorts after it", ids[i-1], ids[i])
		}
	}
	floor := Floor(t0)
	for i, id := range ids {
		if before := i < 2; before != (id < floor) {
			t.Errorf("id %d (%s) against the floor %s: before %v", i, id, floor, id < floor)
		}
		if got, want := Time(id), t0.Add(time.Duration(i-2)*time.Millisecond); !got.Equal(want) {
			t.Errorf("Time(%s) = %v, want %v", id, got, want)
		}
	}
	if !Time("not-a-uuid").IsZero() {
		t.Error("a time from a string that is not a UUID")
	}
}
