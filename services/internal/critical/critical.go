// Package critical is the critical-value loop (危急值) that every center of
// MCC runs: the lab, imaging, ECG and pathology. A center opens a
// notification inside the store transaction that finds the critical value
// (a lab report's verification, an imaging report's release), so the
// notification exists exactly when the finding does. The ordering facility
// acknowledges it by reading the value back. Without an acknowledgement in
// time the loop escalates, driven by durable timers (platform/deadline):
// first to the ordering facility's duty doctor, then to its medical affairs
// office, and finally it is closed as unreachable. Every step is kept in the
// notification's timeline and appended to the center's event feed, which is
// how the facilities are notified.
//
// A center uses one Loop:
//
//	loop := critical.New("lab", cfg.Critical)
//	loop.Register(scheduler)                  // the escalation timers
//	loop.Open(tx, caller, now, critical.Notice{...}) // inside its own Txn
//	loop.Acknowledge(ctx, store, caller, now, name, readBack)
//	loop.Get / loop.List                      // for its Get/List RPCs
package critical

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// State is the state of a notification.
type State = typev1.CriticalNotification_State

// The states, for readability.
const (
	Notified               = typev1.CriticalNotification_STATE_NOTIFIED
	EscalatedDutyDoctor    = typev1.CriticalNotification_STATE_ESCALATED_DUTY_DOCTOR
	EscalatedMedical       = typev1.CriticalNotification_STATE_ESCALATED_MEDICAL_AFFAIRS
	Confirmed              = typev1.CriticalNotification_STATE_CONFIRMED
	ReachedWithoutReadBack = typev1.CriticalNotification_STATE_REACHED_WITHOUT_READ_BACK
	Unreachable            = typev1.CriticalNotification_STATE_UNREACHABLE
)

// Reasons of the FailedPrecondition errors of Acknowledge.
const (
	// ReasonReadBackMismatch is a read-back that does not repeat the value.
	// The attempt is logged in the notification before the error returns.
	ReasonReadBackMismatch = "READ_BACK_MISMATCH"
)

// Machine is the loop's state machine. The open states may be closed by an
// acknowledgement (with or without read-back); each escalation step moves
// one level up, and the last one closes the loop as unreachable.
func Machine() fsm.Machine[State] {
	ack := []State{Confirmed, ReachedWithoutReadBack}
	return fsm.Machine[State]{
		Kind: "critical notification",
		Moves: map[State][]State{
			typev1.CriticalNotification_STATE_UNSPECIFIED: {Notified},
			Notified:            append([]State{EscalatedDutyDoctor}, ack...),
			EscalatedDutyDoctor: append([]State{EscalatedMedical}, ack...),
			EscalatedMedical:    append([]State{Unreachable}, ack...),
		},
	}
}

// escalation maps each open state to the state its deadline leads to.
func escalation(s State) (State, bool) {
	switch s {
	case Notified:
		return EscalatedDutyDoctor, true
	case EscalatedDutyDoctor:
		return EscalatedMedical, true
	case EscalatedMedical:
		return Unreachable, true
	}
	return 0, false
}

// Config is the timing of the loop, per service.
type Config struct {
	// AckTimeout is how long the ordering clinician has to acknowledge
	// before the duty doctor is called; the timely-notification KPI counts
	// confirmations within it.
	AckTimeout time.Duration
	// EscalationTimeout is how long each escalation level (duty doctor,
	// medical affairs office) has before the next one.
	EscalationTimeout time.Duration
}

// DefaultTimeout is the default of both timeouts: 10 minutes, the usual
// requirement of Chinese hospital critical-value rules.
const DefaultTimeout = 10 * time.Minute

// RegisterFlags registers the flags `-<prefix>critical.ack-timeout` and
// `-<prefix>critical.escalation-timeout` with their defaults; prefix is the
// service's flag prefix, for example "lab.".
func (c *Config) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.DurationVar(&c.AckTimeout, prefix+"critical.ack-timeout", DefaultTimeout, "time the ordering clinician has to acknowledge a critical value before it escalates to the duty doctor")
	fs.DurationVar(&c.EscalationTimeout, prefix+"critical.escalation-timeout", DefaultTimeout, "time each escalation level (duty doctor, then medical affairs office) has before the next")
}

// withDefaults fills in zero timeouts.
func (c Config) withDefaults() Config {
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultTimeout
	}
	if c.EscalationTimeout <= 0 {
		c.EscalationTimeout = DefaultTimeout
	}
	return c
}

// Collection is the collection of notifications in every service that runs
// the loop: `criticalNotifications/{id}`.
const Collection = "criticalNotifications"

// timerKind is the kind of the loop's deadlines in the service's store.
const timerKind = "critical"

// Loop is the critical-value loop of one service.
type Loop struct {
	service string
	cfg     Config
	machine fsm.Machine[State]
	table   resource.Table[*typev1.CriticalNotification]
}

// New returns the loop of service (its name appears as the actor of the
// escalations) with the timing of cfg.
func New(service string, cfg Config) *Loop {
	return &Loop{
		service: service,
		cfg:     cfg.withDefaults(),
		machine: Machine(),
		table: resource.Table[*typev1.CriticalNotification]{
			Collection: Collection,
			Prefix:     "crit/",
			New:        func() *typev1.CriticalNotification { return &typev1.CriticalNotification{} },
			Event:      "criticalNotification",
			// A notification concerns the facility that must act on it
			// and the center that raised it.
			Facilities: func(n *typev1.CriticalNotification) []string {
				return []string{n.GetFacility(), n.GetCenter()}
			},
		},
	}
}

// Config returns the loop's timing.
func (l *Loop) Config() Config { return l.cfg }

// Notice is what a center knows when it finds a critical value.
type Notice struct {
	// Subject is the resource name of the report or finding.
	Subject string
	// Order is the order's resource name.
	Order string
	// Patient is the directory patient, `patients/{id}`.
	Patient string
	// Item is what was measured or found.
	Item *typev1.Code
	// Value is the value with its unit, as the read-back must repeat it.
	Value string
	// Flag says how it is critical (LL, HH, or the center's own code).
	Flag string
	// Center is the facility that found it.
	Center string
	// Facility is the ordering facility.
	Facility string
	// Clinician is the ordering clinician.
	Clinician string
}

// Open opens a notification inside the caller's transaction tx and starts
// its first deadline. It writes only through tx, so it can run in any of the
// center's transactions and be retried with them.
func (l *Loop) Open(tx store.Tx, actor auth.Caller, now time.Time, n Notice) (*typev1.CriticalNotification, error) {
	if n.Value == "" || n.Facility == "" || n.Subject == "" {
		return nil, errors.New("critical: a notice needs a subject, a value and a facility")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	msg := &typev1.CriticalNotification{
		Name:         l.table.Name(id.String()),
		Subject:      n.Subject,
		Order:        n.Order,
		Patient:      n.Patient,
		Item:         proto.CloneOf(n.Item),
		Value:        n.Value,
		Flag:         n.Flag,
		Center:       n.Center,
		Facility:     n.Facility,
		Clinician:    n.Clinician,
		NotifyTime:   timestamppb.New(now),
		EscalateTime: timestamppb.New(now.Add(l.cfg.AckTimeout)),
	}
	resource.Stamp(msg, now, true)
	if err := l.machine.Apply(msg, Notified, actor, now, ""); err != nil {
		return nil, err
	}
	if err := l.table.Create(tx, msg); err != nil {
		return nil, err
	}
	if err := deadline.Set(tx, timerKind, id.String(), now.Add(l.cfg.AckTimeout), nil); err != nil {
		return nil, err
	}
	if err := events.Append(tx, actor, now, l.table.Change(l.table.Event+"."+fsm.EventName(Notified), msg, 1)); err != nil {
		return nil, err
	}
	return msg, nil
}

// Register makes scheduler fire the loop's escalation deadlines.
func (l *Loop) Register(scheduler *deadline.Scheduler) {
	scheduler.Handle(timerKind, l.escalate)
}

// escalate runs when a step's deadline passes without an acknowledgement:
// it moves the notification one level up and starts the next deadline, or
// closes it as unreachable. Times are the deadline's, not the scan's, so a
// restart that delays the scan does not change the record.
func (l *Loop) escalate(tx store.Tx, t deadline.Timer) error {
	name := l.table.Name(t.ID)
	msg, version, err := l.table.Get(tx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	next, ok := escalation(msg.GetState())
	if !ok {
		return nil // closed meanwhile; nothing to escalate
	}
	actor := auth.ServiceCaller(string(t.Partition), msg.GetCenter(), l.service)
	reason := fmt.Sprintf("not acknowledged by %s", t.At.UTC().Format(time.RFC3339))
	if err := l.machine.Apply(msg, next, actor, t.At, reason); err != nil {
		return err
	}
	msg.EscalateTime = nil
	if next != Unreachable {
		due := t.At.Add(l.cfg.EscalationTimeout)
		msg.EscalateTime = timestamppb.New(due)
		if err := deadline.Set(tx, timerKind, t.ID, due, nil); err != nil {
			return err
		}
	}
	if err := l.table.Update(tx, msg, version); err != nil {
		return err
	}
	return events.Append(tx, actor, t.At, l.table.Change(l.table.Event+"."+fsm.EventName(next), msg, version+1))
}

// Acknowledge records an acknowledgement by the ordering facility. A
// read-back that repeats the value confirms the notification; an empty one
// closes it as reached without read-back; a wrong one is logged as an
// attempt and refused with ReasonReadBackMismatch, and the loop goes on.
// Callers of other facilities get NotFound, or PermissionDenied if they
// may see the notification (the center) but are not its recipient.
func (l *Loop) Acknowledge(ctx context.Context, s store.Store, c auth.Caller, now time.Time, name, readBack string) (*typev1.CriticalNotification, error) {
	var out *typev1.CriticalNotification
	mismatch := false
	err := s.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		mismatch = false
		msg, version, err := l.table.Get(tx, name)
		if err != nil {
			return err
		}
		if err := l.canAcknowledge(c, msg); err != nil {
			return err
		}
		to := ReachedWithoutReadBack
		if readBack != "" {
			to = Confirmed
		}
		if err := l.machine.Check(msg.GetState(), to); err != nil {
			return err
		}
		attempt := &typev1.CriticalAttempt{Actor: c.Actor(), Time: timestamppb.New(now), ReadBack: readBack, Accepted: true}
		if readBack != "" && !Matches(readBack, msg.GetValue()) {
			attempt.Accepted = false
			mismatch = true
		}
		msg.Attempts = append(msg.Attempts, attempt)
		event := "read_back_rejected"
		if !mismatch {
			msg.Timely = to == Confirmed && msg.GetState() == Notified && !now.After(msg.GetEscalateTime().AsTime())
			if err := l.machine.Apply(msg, to, c, now, ""); err != nil {
				return err
			}
			msg.AcknowledgeTime = timestamppb.New(now)
			msg.AcknowledgedBy = c.Actor()
			msg.ReadBack = readBack
			msg.EscalateTime = nil
			event = fsm.EventName(to)
			if err := deadline.Clear(tx, timerKind, l.table.ID(name)); err != nil {
				return err
			}
		} else {
			resource.Stamp(msg, now, false)
		}
		if err := l.table.Update(tx, msg, version); err != nil {
			return err
		}
		out = msg
		return events.Append(tx, c, now, l.table.Change(l.table.Event+"."+event, msg, version+1))
	})
	if err != nil {
		return nil, err
	}
	if mismatch {
		return nil, apierr.Condition(ReasonReadBackMismatch, "the read-back does not repeat the critical value; the attempt was logged and the notification stays open")
	}
	return out, nil
}

// canAcknowledge lets only the ordering facility acknowledge.
func (l *Loop) canAcknowledge(c auth.Caller, msg *typev1.CriticalNotification) error {
	if c.Facility == msg.GetFacility() {
		return nil
	}
	if visible(c, msg) {
		return fmt.Errorf("only %s, the ordering facility, acknowledges %s: %w", msg.GetFacility(), msg.GetName(), apierr.ErrPermissionDenied)
	}
	return fmt.Errorf("%s: %w", msg.GetName(), store.ErrNotFound)
}

// visible reports whether c may read the notification: the ordering
// facility, the center, and those who see the whole community.
func visible(c auth.Caller, msg *typev1.CriticalNotification) bool {
	return c.SeesCommunity() || c.Facility == msg.GetFacility() || c.Facility == msg.GetCenter()
}

// Get returns a notification the caller may see; others are NotFound.
func (l *Loop) Get(ctx context.Context, s store.Store, c auth.Caller, name string) (*typev1.CriticalNotification, error) {
	msg, err := l.table.Load(ctx, s, c.Partition(), name)
	if err != nil {
		return nil, err
	}
	if !visible(c, msg) {
		return nil, fmt.Errorf("%s: %w", name, store.ErrNotFound)
	}
	return msg, nil
}

// Load reads a notification without an access check, for a service's own
// use (statistics).
func (l *Loop) Load(ctx context.Context, s store.Store, p store.Partition, name string) (*typev1.CriticalNotification, error) {
	return l.table.Load(ctx, s, p, name)
}

// List returns a page of the notifications the caller may see, oldest
// first, in state if it is set.
func (l *Loop) List(ctx context.Context, s store.Store, c auth.Caller, pageToken string, pageSize int32, state State) ([]*typev1.CriticalNotification, string, error) {
	filter := fmt.Sprintf("%s|%d", c.Facility, state)
	return l.table.StandardList(ctx, s, c, pageToken, pageSize, filter, func(n *typev1.CriticalNotification) bool {
		return visible(c, n) && (state == 0 || n.GetState() == state)
	})
}

// Matches reports whether a read-back repeats a value, as a clinician says
// it on the phone. Spaces and case are ignored. It matches when the read-back
// is the value, or contains it whole ("血钾 6.8 mmol/L" for "6.8 mmol/L"), or
// holds exactly one number and that number is the value's, digit for digit
// ("血钾 6.8" for "6.8 mmol/L"; never "6.80", never "6.5 or 6.8"). A
// finding in words matches by its first word.
func Matches(readBack, value string) bool {
	rb, v := normalize(readBack), normalize(value)
	if rb == "" || v == "" {
		return false
	}
	if containsWhole(rb, v) {
		return true
	}
	first, _, _ := strings.Cut(strings.TrimSpace(value), " ")
	if !wholeNumber.MatchString(first) {
		// A finding in words, "重要病原体感染 serious infection": its first
		// word, the name said on the phone, is enough.
		return containsWhole(rb, normalize(first))
	}
	said := numberPattern.FindAllString(readBack, -1)
	return len(said) == 1 && said[0] == first
}

// containsWhole reports whether s contains v not glued to a digit before
// it: "16.8mmol/l" does not contain "6.8mmol/l".
func containsWhole(s, v string) bool {
	for from := 0; ; {
		i := strings.Index(s[from:], v)
		if i < 0 {
			return false
		}
		at := from + i
		if at == 0 || !strings.ContainsRune("0123456789.", rune(s[at-1])) {
			return true
		}
		from = at + 1
	}
}

// numberPattern finds the numbers in a read-back; wholeNumber says whether
// a value's first word is a number (a finding in words may hold digits:
// "QTc显著延长(超过550ms)").
var (
	numberPattern = regexp.MustCompile(`[-+]?[0-9]+(?:\.[0-9]+)?`)
	wholeNumber   = regexp.MustCompile(`^[-+]?[0-9]+(?:\.[0-9]+)?$`)
)

func normalize(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), ""))
}
