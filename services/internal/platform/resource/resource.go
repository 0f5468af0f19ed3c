// Package resource stores AIP-style proto resources in a store.Store.
//
// A Table maps one resource collection (`facilities/{id}`) to a key prefix of
// the service's store (`fac/{id}`). Resources are stored as binary protos
// without their etag; the etag is derived from the store version on every
// read, so it can never disagree with the version compare-and-swap checks.
package resource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/store"
)

// Table is one collection of resources of message type T.
type Table[T proto.Message] struct {
	// Collection is the first part of resource names, "facilities".
	Collection string
	// Prefix is the store key prefix, "fac/".
	Prefix string
	// New returns an empty T.
	New func() T
	// Event is the first part of event types, "facility" in
	// "facility.created".
	Event string
	// Mutable are the fields the standard update may change.
	Mutable []string
	// Facilities returns the facilities an event about a resource
	// concerns.
	Facilities func(T) []string
	// Snapshot, if set, returns what an event carries of a resource, for
	// example the resource without free text in which a clinician may have
	// written the patient's name. Without it events carry the resource.
	Snapshot func(T) proto.Message
}

// Name returns the resource name of an ID.
func (t Table[T]) Name(id string) string { return t.Collection + "/" + id }

// ID returns the ID part of a resource name.
func (t Table[T]) ID(name string) string { return strings.TrimPrefix(name, t.Collection+"/") }

// Key returns the store key of a resource name.
func (t Table[T]) Key(name string) string { return t.Prefix + t.ID(name) }

// Decode unmarshals a stored record and sets its etag.
func (t Table[T]) Decode(rec store.Record) (T, error) {
	msg := t.New()
	if err := proto.Unmarshal(rec.Value, msg); err != nil {
		return msg, fmt.Errorf("decode %s: %w", rec.Key, err)
	}
	setString(msg, "etag", events.Etag(rec.Version))
	return msg, nil
}

// Get reads a resource inside a transaction. It returns its store version,
// the basis of the next compare-and-swap. A missing resource is
// store.ErrNotFound, with the name in the message.
func (t Table[T]) Get(tx store.Tx, name string) (T, uint64, error) {
	rec, err := tx.Get(t.Key(name))
	if err != nil {
		var zero T
		return zero, 0, notFound(name, err)
	}
	msg, err := t.Decode(rec)
	return msg, rec.Version, err
}

// Load reads a resource outside a transaction.
func (t Table[T]) Load(ctx context.Context, s store.Store, p store.Partition, name string) (T, error) {
	rec, err := s.Get(ctx, p, t.Key(name))
	if err != nil {
		var zero T
		return zero, notFound(name, err)
	}
	return t.Decode(rec)
}

// Create stores a new resource at version 1 and sets its etag. A resource of
// the same name is store.ErrAlreadyExists.
func (t Table[T]) Create(tx store.Tx, msg T) error {
	name := getString(msg, "name")
	data, err := t.encode(msg)
	if err != nil {
		return err
	}
	if err := tx.Create(t.Key(name), data); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return err
	}
	setString(msg, "etag", events.Etag(1))
	return nil
}

// Update stores msg over the version read before and sets its new etag.
func (t Table[T]) Update(tx store.Tx, msg T, version uint64) error {
	data, err := t.encode(msg)
	if err != nil {
		return err
	}
	if err := tx.Update(t.Key(getString(msg, "name")), data, version); err != nil {
		return err
	}
	setString(msg, "etag", events.Etag(version+1))
	return nil
}

func (t Table[T]) encode(msg T) ([]byte, error) {
	clone := proto.Clone(msg)
	setString(clone, "etag", "")
	return proto.MarshalOptions{Deterministic: true}.Marshal(clone)
}

// CheckEtag returns store.ErrConflict when the client sent an etag that is
// not the current one. An empty etag skips the check, as AIP-154 allows.
func CheckEtag(name, sent string, version uint64) error {
	if sent != "" && sent != events.Etag(version) {
		return fmt.Errorf("%s was changed by someone else (etag %s, now %s): %w", name, sent, events.Etag(version), store.ErrConflict)
	}
	return nil
}

// ApplyMask copies the fields named in mask from src to dst. Only top-level
// fields listed in allowed may be named, by their proto name or their JSON
// name (REST clients send `displayName`); an empty mask means all of allowed.
// A field that is unset in src is cleared in dst.
func ApplyMask(dst, src proto.Message, mask *fieldmaskpb.FieldMask, allowed ...string) error {
	paths := mask.GetPaths()
	if len(paths) == 0 {
		paths = allowed
	}
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	fields := d.Descriptor().Fields()
	for _, path := range paths {
		fd := fields.ByName(protoreflect.Name(path))
		if fd == nil {
			fd = fields.ByJSONName(path)
		}
		if fd == nil || !slices.Contains(allowed, string(fd.Name())) {
			return apierr.Invalid("update_mask", "%q cannot be updated; allowed: %s", path, strings.Join(allowed, ", "))
		}
		if s.Has(fd) {
			d.Set(fd, s.Get(fd))
		} else {
			d.Clear(fd)
		}
	}
	return nil
}

// Stamp sets the create_time (when creating) and update_time fields of msg
// to at, where msg has them.
func Stamp(msg proto.Message, at time.Time, creating bool) {
	m := msg.ProtoReflect()
	ts := timestamppb.New(at)
	for _, field := range []string{"create_time", "update_time"} {
		if field == "create_time" && !creating {
			continue
		}
		if fd := m.Descriptor().Fields().ByName(protoreflect.Name(field)); fd != nil {
			m.Set(fd, protoreflect.ValueOfMessage(proto.Clone(ts).ProtoReflect()))
		}
	}
}

func notFound(name string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return err
}

func setString(msg proto.Message, field, v string) {
	m := msg.ProtoReflect()
	if fd := m.Descriptor().Fields().ByName(protoreflect.Name(field)); fd != nil {
		m.Set(fd, protoreflect.ValueOfString(v))
	}
}

func getString(msg proto.Message, field string) string {
	m := msg.ProtoReflect()
	if fd := m.Descriptor().Fields().ByName(protoreflect.Name(field)); fd != nil {
		return m.Get(fd).String()
	}
	return ""
}
