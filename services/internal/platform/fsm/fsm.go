// Package fsm runs the state machines of MCC's resources.
//
// A state machine is data: for each state, the states it may move to. Every
// transition of a resource goes through Transition, which checks the move
// against the table, records who made it and when in the resource's
// timeline, lets the service change what else the move changes, and saves
// the resource with its event in one store transaction. Tests walk Illegal
// to try every move the table forbids.
//
// A resource used with this package has an enum field `state` (whose zero
// value is UNSPECIFIED), a repeated mcc.type.v1.StateChange field `timeline`,
// and, if it has one, an `update_time` that each move sets.
package fsm

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// State is a generated proto enum used as a state.
type State interface {
	~int32
	protoreflect.Enum
}

// Machine is the state machine of one kind of resource.
type Machine[S State] struct {
	// Kind names the resource in errors: "specimen".
	Kind string
	// Moves lists, for each state, the states it may move to. A state
	// with no entry is final.
	Moves map[S][]S
}

// Allows reports whether the machine may move from one state to another.
func (m Machine[S]) Allows(from, to S) bool { return slices.Contains(m.Moves[from], to) }

// Check returns an apierr.Transition error (FailedPrecondition,
// INVALID_TRANSITION) unless the move is allowed.
func (m Machine[S]) Check(from, to S) error {
	if m.Allows(from, to) {
		return nil
	}
	return apierr.Transition(m.Kind, name(from), name(to))
}

// Next lists the states the machine may move to from state.
func (m Machine[S]) Next(from S) []S { return slices.Clone(m.Moves[from]) }

// Move is one (from, to) pair.
type Move[S State] struct{ From, To S }

func (mv Move[S]) String() string { return name(mv.From) + "->" + name(mv.To) }

// Illegal lists every move between two defined states that the machine
// forbids, for tests to try.
func (m Machine[S]) Illegal() []Move[S] {
	var zero S
	values := zero.Descriptor().Values()
	var out []Move[S]
	for i := 0; i < values.Len(); i++ {
		for j := 0; j < values.Len(); j++ {
			from, to := S(values.Get(i).Number()), S(values.Get(j).Number())
			if from == 0 || to == 0 || m.Allows(from, to) {
				continue
			}
			out = append(out, Move[S]{from, to})
		}
	}
	return out
}

// name is the full enum value name of a state, "STATE_RECEIVED".
func name[S State](s S) string {
	v := s.Descriptor().Values().ByNumber(protoreflect.EnumNumber(s))
	if v == nil {
		return fmt.Sprint(int32(s))
	}
	return string(v.Name())
}

// EventName is the short lower-case name of a state used in event types:
// STATE_RECEIVED of enum State is "received".
func EventName[S State](s S) string {
	prefix := upperSnake(string(s.Descriptor().Name())) + "_"
	return strings.ToLower(strings.TrimPrefix(name(s), prefix))
}

func upperSnake(camel string) string {
	var b strings.Builder
	for i, r := range camel {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// Apply moves msg to the state to, if the machine allows it, and appends
// the change to its timeline.
func (m Machine[S]) Apply(msg proto.Message, to S, actor auth.Caller, at time.Time, reason string) error {
	r := msg.ProtoReflect()
	fields := r.Descriptor().Fields()
	stateField, timeline := fields.ByName("state"), fields.ByName("timeline")
	if stateField == nil || timeline == nil {
		return fmt.Errorf("fsm: %s has no state or timeline field", r.Descriptor().FullName())
	}
	from := S(r.Get(stateField).Enum())
	if err := m.Check(from, to); err != nil {
		return err
	}
	r.Set(stateField, protoreflect.ValueOfEnum(protoreflect.EnumNumber(to)))
	change := &typev1.StateChange{From: name(from), To: name(to), Actor: actor.Actor(), Time: timestamppb.New(at), Reason: reason}
	r.Mutable(timeline).List().Append(protoreflect.ValueOfMessage(change.ProtoReflect()))
	resource.Stamp(msg, at, false)
	return nil
}

// Step is one transition request.
type Step[T proto.Message, S State] struct {
	// Name is the resource name.
	Name string
	// Etag, if set, must be the resource's current etag.
	Etag string
	// To is the target state.
	To S
	// Reason is recorded in the timeline.
	Reason string
	// Before, if set, runs before the move is checked, to refuse it for
	// reasons the table does not know (the caller's facility, a field).
	Before func(tx store.Tx, msg T) error
	// After, if set, runs after the move, to change what else the move
	// changes (a pick-up time, a result) or to write other keys.
	After func(tx store.Tx, msg T) error
}

// Transition runs one step in one store transaction: it reads the resource
// from table, checks the etag and Before, applies the move, runs After, and
// saves the resource with the event `<table.Event>.<state>`.
func Transition[T proto.Message, S State](ctx context.Context, s store.Store, table resource.Table[T], m Machine[S], c auth.Caller, now time.Time, step Step[T, S]) (T, error) {
	var out T
	err := s.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		msg, version, err := table.Get(tx, step.Name)
		if err != nil {
			return err
		}
		if err := resource.CheckEtag(step.Name, step.Etag, version); err != nil {
			return err
		}
		if step.Before != nil {
			if err := step.Before(tx, msg); err != nil {
				return err
			}
		}
		if err := m.Apply(msg, step.To, c, now, step.Reason); err != nil {
			return err
		}
		if step.After != nil {
			if err := step.After(tx, msg); err != nil {
				return err
			}
		}
		if err := table.Update(tx, msg, version); err != nil {
			return err
		}
		out = msg
		return events.Append(tx, c, now, table.Change(table.Event+"."+EventName(step.To), msg, version+1))
	})
	return out, err
}
