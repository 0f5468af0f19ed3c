package resource

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/idem"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/store"
)

// The standard methods of AIP-131 to 134 on a Table, in one transaction
// each: the request ID replay, the service's own checks, the write with
// compare-and-swap, and the event. Services supply only what differs.

// Check validates a resource inside the transaction that is about to store
// it: references to other resources, invariants across fields.
type Check[T proto.Message] func(tx store.Tx, msg T) error

// StandardCreate stores msg, whose name is already set, as a new resource.
// A retry with the same request ID returns the resource the first call made.
func (t Table[T]) StandardCreate(ctx context.Context, s store.Store, c auth.Caller, requestID string, msg T, now time.Time, check Check[T]) (T, error) {
	var out T
	err := s.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		if name, found, err := idem.Lookup(tx, c, requestID); err != nil || found {
			if err == nil {
				out, _, err = t.Get(tx, name)
			}
			return err
		}
		created := proto.CloneOf(msg)
		Stamp(created, now, true)
		if err := check(tx, created); err != nil {
			return err
		}
		if err := t.Create(tx, created); err != nil {
			return err
		}
		if err := idem.Remember(tx, c, requestID, getString(created, "name")); err != nil {
			return err
		}
		out = created
		return events.Append(tx, c, now, t.Change(t.Event+".created", created, 1))
	})
	return out, err
}

// StandardUpdate copies the fields of in named by mask (all of Mutable when
// the mask is empty) onto the stored resource named in.name, if in.etag is
// empty or current, and stores the result after check.
func (t Table[T]) StandardUpdate(ctx context.Context, s store.Store, c auth.Caller, in T, mask *fieldmaskpb.FieldMask, now time.Time, check Check[T]) (T, error) {
	var out T
	name := getString(in, "name")
	err := s.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		cur, version, err := t.Get(tx, name)
		if err != nil {
			return err
		}
		if err := CheckEtag(name, getString(in, "etag"), version); err != nil {
			return err
		}
		if err := ApplyMask(cur, in, mask, t.Mutable...); err != nil {
			return err
		}
		Stamp(cur, now, false)
		if err := check(tx, cur); err != nil {
			return err
		}
		if err := t.Update(tx, cur, version); err != nil {
			return err
		}
		out = cur
		return events.Append(tx, c, now, t.Change(t.Event+".updated", cur, version+1))
	})
	return out, err
}

// StandardList returns one page of the caller's community's resources, in
// ID order, that keep accepts. Filter describes the request's filters, so a
// page token only works with the filters it was issued for.
func (t Table[T]) StandardList(ctx context.Context, s store.Store, c auth.Caller, pageToken string, pageSize int32, filter string, keep func(T) bool) ([]T, string, error) {
	filter = t.Collection + "|" + filter
	after, err := paging.Decode(pageToken, filter)
	if err != nil {
		return nil, "", err
	}
	var out []T
	last, err := paging.Scan(ctx, s, c.Partition(), t.Prefix, after, paging.Size(pageSize), func(rec store.Record) (bool, error) {
		msg, err := t.Decode(rec)
		if err != nil || !keep(msg) {
			return false, err
		}
		out = append(out, msg)
		return true, nil
	})
	if err != nil || last == "" {
		return out, "", err
	}
	return out, paging.Encode(last, filter), nil
}

// Change is the event of type typ about msg at a store version, concerning
// the facilities the table's Facilities function names.
func (t Table[T]) Change(typ string, msg T, version uint64) events.Change {
	var facilities []string
	if t.Facilities != nil {
		facilities = t.Facilities(msg)
	}
	var snapshot proto.Message = msg
	if t.Snapshot != nil {
		snapshot = t.Snapshot(msg)
	}
	return events.Change{Type: typ, Resource: getString(msg, "name"), Version: version, Facilities: facilities, Snapshot: snapshot}
}
