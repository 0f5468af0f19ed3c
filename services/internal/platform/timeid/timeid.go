// Package timeid makes resource IDs that sort by creation time: UUIDv7s
// whose timestamp is the service's clock, so a range of creation times is
// a range of keys, on the same time line as every time field the service
// writes.
package timeid

import (
	"time"

	"github.com/google/uuid"
)

// New returns a UUIDv7 whose timestamp is now.
func New(now time.Time) (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	stamp(&u, now)
	return u.String(), nil
}

// stamp sets the 48-bit millisecond timestamp of a UUIDv7.
func stamp(u *uuid.UUID, at time.Time) {
	ms := uint64(at.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (8 * (5 - i)))
	}
}

// Floor returns a key that sorts before every ID made at or after at, and
// after every ID made before it, for range scans.
func Floor(at time.Time) string {
	var u uuid.UUID
	stamp(&u, at)
	return u.String()
}

// Time returns the creation time an ID carries, or the zero time for a
// string that is not a UUID.
func Time(id string) time.Time {
	u, err := uuid.Parse(id)
	if err != nil {
		return time.Time{}
	}
	var ms int64
	for i := range 6 {
		ms = ms<<8 | int64(u[i])
	}
	return time.UnixMilli(ms)
}
