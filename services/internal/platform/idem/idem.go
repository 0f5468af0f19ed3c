// Package idem makes create methods idempotent by request_id (AIP-155).
//
// A create remembers its request ID next to the resource it made, in the same
// transaction. A retry with the same ID finds it and returns that resource
// instead of creating another one.
package idem

import (
	"errors"

	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/store"
)

// Key is the store key for a request ID of the caller. IDs are scoped to the
// caller's facility, so that a retry from another workstation of the same
// clinic still matches and no facility can collide with another's IDs.
func Key(c auth.Caller, requestID string) string {
	return "req/" + c.Facility + "/" + requestID
}

// Lookup returns the resource a request ID already created, if any. An empty
// request ID never matches.
func Lookup(tx store.Tx, c auth.Caller, requestID string) (resource string, found bool, err error) {
	if requestID == "" {
		return "", false, nil
	}
	rec, err := tx.Get(Key(c, requestID))
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return string(rec.Value), true, nil
}

// Remember records that requestID created resource. It does nothing for an
// empty request ID.
func Remember(tx store.Tx, c auth.Caller, requestID, resource string) error {
	if requestID == "" {
		return nil
	}
	return tx.Create(Key(c, requestID), []byte(resource))
}
