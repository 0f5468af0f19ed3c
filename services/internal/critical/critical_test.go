package critical_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

const community = "urad"

var (
	lab    = auth.Caller{Subject: "lab-liu", Community: community, Facility: "facilities/qrmyy", Roles: []typev1.Role{typev1.Role_ROLE_LAB_TECHNOLOGIST}}
	doctor = auth.Caller{Subject: "doc-han", Community: community, Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
	other  = auth.Caller{Subject: "doc-li", Community: community, Facility: "facilities/wjh", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
)

// fixture is a loop on a bolt store that a test can close and reopen, with
// a clock the test moves.
type fixture struct {
	path  string
	clock *clock.Manual
	cfg   critical.Config
	store store.Store
	loop  *critical.Loop
	sched *deadline.Scheduler
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{path: filepath.Join(t.TempDir(), "lab.db"), clock: clock.NewManual(t0), cfg: critical.Config{AckTimeout: 10 * time.Minute, EscalationTimeout: 5 * time.Minute}}
	f.open(t)
	return f
}

// open opens the store and builds the loop and scheduler afresh, as a
// restarted process would.
func (f *fixture) open(t *testing.T) {
	t.Helper()
	s, err := bolt.Open(f.path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.store = s
	f.loop = critical.New("lab", f.cfg)
	f.sched = deadline.NewScheduler(s, f.clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.loop.Register(f.sched)
}

func (f *fixture) openNotice(t *testing.T) *typev1.CriticalNotification {
	t.Helper()
	var out *typev1.CriticalNotification
	err := f.store.Txn(context.Background(), community, func(tx store.Tx) error {
		var err error
		out, err = f.loop.Open(tx, lab, f.clock.Now(), critical.Notice{
			Subject: "reports/B0001", Order: "orders/x", Patient: "patients/p1",
			Item:  &typev1.Code{System: "http://loinc.org", Code: "2823-3", Display: "钾 Potassium"},
			Value: "2.1 mmol/L", Flag: "LL", Center: lab.Facility, Facility: doctor.Facility, Clinician: "doc-han",
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *fixture) fire(t *testing.T) int {
	t.Helper()
	n, err := f.sched.Fire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) get(t *testing.T, name string) *typev1.CriticalNotification {
	t.Helper()
	n, err := f.loop.Get(context.Background(), f.store, lab, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// steps returns the (to, time) pairs of a timeline.
func steps(n *typev1.CriticalNotification) []string {
	var out []string
	for _, c := range n.GetTimeline() {
		out = append(out, c.GetTo()+"@"+c.GetTime().AsTime().Sub(t0).String())
	}
	return out
}

func TestConfirmedInTime(t *testing.T) {
	f := newFixture(t)
	n := f.openNotice(t)
	f.clock.Advance(4 * time.Minute)
	got, err := f.loop.Acknowledge(context.Background(), f.store, doctor, f.clock.Now(), n.GetName(), "2.1")
	if err != nil {
		t.Fatal(err)
	}
	want := &typev1.CriticalNotification{
		Name: n.GetName(), State: critical.Confirmed, Subject: "reports/B0001", Order: "orders/x", Patient: "patients/p1",
		Item:  &typev1.Code{System: "http://loinc.org", Code: "2823-3", Display: "钾 Potassium"},
		Value: "2.1 mmol/L", Flag: "LL", Center: "facilities/qrmyy", Facility: "facilities/dls", Clinician: "doc-han",
		NotifyTime: timestamppb.New(t0), AcknowledgeTime: timestamppb.New(t0.Add(4 * time.Minute)),
		AcknowledgedBy: doctor.Actor(), ReadBack: "2.1", Timely: true,
		Attempts: []*typev1.CriticalAttempt{{Actor: doctor.Actor(), Time: timestamppb.New(t0.Add(4 * time.Minute)), ReadBack: "2.1", Accepted: true}},
		Etag:     "2",
	}
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&typev1.CriticalNotification{}, "timeline", "create_time", "update_time")); diff != "" {
		t.Errorf("acknowledged (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"STATE_NOTIFIED@0s", "STATE_CONFIRMED@4m0s"}, steps(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	// The deadline was cleared with the acknowledgement.
	f.clock.Advance(time.Hour)
	if n := f.fire(t); n != 0 {
		t.Errorf("%d timers fired after the acknowledgement", n)
	}
}

func TestEscalatesStepByStepThenUnreachable(t *testing.T) {
	f := newFixture(t)
	n := f.openNotice(t)
	f.clock.Advance(9 * time.Minute)
	if fired := f.fire(t); fired != 0 {
		t.Fatalf("%d fired before the deadline", fired)
	}
	// The scan comes late (at 12 min); the record keeps the due time.
	f.clock.Advance(3 * time.Minute)
	f.fire(t)
	if got := f.get(t, n.GetName()); got.GetState() != critical.EscalatedDutyDoctor || !got.GetEscalateTime().AsTime().Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("after 12 min: %v, escalates at %v", got.GetState(), got.GetEscalateTime().AsTime())
	}
	f.clock.Advance(time.Hour)
	for range 3 {
		f.fire(t)
	}
	got := f.get(t, n.GetName())
	want := []string{"STATE_NOTIFIED@0s", "STATE_ESCALATED_DUTY_DOCTOR@10m0s", "STATE_ESCALATED_MEDICAL_AFFAIRS@15m0s", "STATE_UNREACHABLE@20m0s"}
	if diff := cmp.Diff(want, steps(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	if got.GetTimeline()[1].GetActor().GetSubject() != "service:lab" {
		t.Errorf("escalation actor %v", got.GetTimeline()[1].GetActor())
	}
	// Closed as unreachable, it takes no acknowledgement.
	_, err := f.loop.Acknowledge(context.Background(), f.store, doctor, f.clock.Now(), n.GetName(), "2.1")
	wantReason(t, err, apierr.ReasonInvalidTransition)
}

// TestDeadlineSurvivesRestart closes the store in the middle of the first
// deadline and reopens it, as a restart of mcc would: the escalation still
// happens, stamped at the time it was due.
func TestDeadlineSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	n := f.openNotice(t)
	f.clock.Advance(6 * time.Minute)
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(5 * time.Minute) // down for 5 minutes, across the deadline
	f.open(t)
	if fired := f.fire(t); fired != 1 {
		t.Fatalf("%d timers fired after the restart, want 1", fired)
	}
	got := f.get(t, n.GetName())
	if diff := cmp.Diff([]string{"STATE_NOTIFIED@0s", "STATE_ESCALATED_DUTY_DOCTOR@10m0s"}, steps(got)); diff != "" {
		t.Errorf("timeline (-want +got):\n%s", diff)
	}
	// A late acknowledgement confirms it, but not in time.
	ack, err := f.loop.Acknowledge(context.Background(), f.store, doctor, f.clock.Now(), n.GetName(), "2.1 mmol/l")
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetState() != critical.Confirmed || ack.GetTimely() {
		t.Errorf("late acknowledgement: %v timely=%v", ack.GetState(), ack.GetTimely())
	}
}

func TestAcknowledgeErrors(t *testing.T) {
	f := newFixture(t)
	n := f.openNotice(t)
	ctx := context.Background()

	_, err := f.loop.Acknowledge(ctx, f.store, doctor, f.clock.Now(), n.GetName(), "1.2")
	wantReason(t, err, critical.ReasonReadBackMismatch)
	got := f.get(t, n.GetName())
	if got.GetState() != critical.Notified || len(got.GetAttempts()) != 1 || got.GetAttempts()[0].GetAccepted() {
		t.Errorf("after a wrong read-back: %v, attempts %v", got.GetState(), got.GetAttempts())
	}

	_, err = f.loop.Acknowledge(ctx, f.store, other, f.clock.Now(), n.GetName(), "2.1")
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another facility: %v, want not found", err)
	}
	_, err = f.loop.Acknowledge(ctx, f.store, lab, f.clock.Now(), n.GetName(), "2.1")
	if !errors.Is(err, apierr.ErrPermissionDenied) {
		t.Errorf("the center: %v, want permission denied", err)
	}
	if _, err := f.loop.Get(ctx, f.store, other, n.GetName()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another facility reads it: %v", err)
	}

	// Without read-back it is reached, not confirmed, and not timely.
	ack, err := f.loop.Acknowledge(ctx, f.store, doctor, f.clock.Now(), n.GetName(), "")
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetState() != critical.ReachedWithoutReadBack || ack.GetTimely() {
		t.Errorf("without read-back: %v timely=%v", ack.GetState(), ack.GetTimely())
	}
}

func TestListShowsOnlyVisible(t *testing.T) {
	f := newFixture(t)
	f.openNotice(t)
	f.openNotice(t)
	for _, tt := range []struct {
		caller auth.Caller
		want   int
	}{{doctor, 2}, {lab, 2}, {other, 0}} {
		list, _, err := f.loop.List(context.Background(), f.store, tt.caller, "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != tt.want {
			t.Errorf("%s sees %d, want %d", tt.caller.Facility, len(list), tt.want)
		}
	}
}

// TestEveryIllegalMoveIsRefused walks the machine's table. Moves into the
// acknowledged states are also tried through the lab API (lab tests); the
// escalation moves are made only by the loop's own timers.
func TestEveryIllegalMoveIsRefused(t *testing.T) {
	m := critical.Machine()
	for _, mv := range m.Illegal() {
		t.Run(mv.String(), func(t *testing.T) {
			wantReason(t, m.Check(mv.From, mv.To), apierr.ReasonInvalidTransition)
		})
	}
}

func TestMatches(t *testing.T) {
	for _, tt := range []struct {
		readBack, value string
		want            bool
	}{
		{"2.1", "2.1 mmol/L", true},
		{"2.1 mmol/L", "2.1 mmol/L", true},
		{" 2.1MMOL/l ", "2.1 mmol/L", true},
		{"2.10", "2.1 mmol/L", false},
		{"1.2", "2.1 mmol/L", false},
		{"mmol/L", "2.1 mmol/L", false},
		{"", "2.1 mmol/L", false},
		{"大面积脑梗死", "大面积 脑梗死", true},
		{"血钾 6.8 mmol/L", "6.8 mmol/L", true},
		{"血钾 6.8", "6.8 mmol/L", true},
		{"血钾 6.5", "6.8 mmol/L", false},
		{"6.5 还是 6.8", "6.8 mmol/L", false},
		{"16.8", "6.8 mmol/L", false},
		{"血钾 16.8 mmol/L", "6.8 mmol/L", false},
		{"白细胞 1.2 10^9/L", "1.2 10^9/L", true},
		{"脑梗死", "大面积脑梗死", false},
		{"重要病原体感染", "重要病原体感染 serious infection (tuberculosis, fungi)", true},
		{"肺癌", "重要病原体感染 serious infection (tuberculosis, fungi)", false},
		// Findings in words whose name holds digits.
		{"严重心动过缓(心室率低于40次/分)", "严重心动过缓(心室率低于40次/分) severe bradycardia below 40 bpm", true},
		{"QTc显著延长(超过550ms)", "QTc显著延长(超过550ms) QTc above 550 ms", true},
		{"QTc显著延长(超过500ms)", "QTc显著延长(超过550ms) QTc above 550 ms", false},
	} {
		if got := critical.Matches(tt.readBack, tt.value); got != tt.want {
			t.Errorf("Matches(%q, %q) = %v", tt.readBack, tt.value, got)
		}
	}
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	var cond *apierr.ConditionError
	if !errors.As(err, &cond) || cond.Reason != reason {
		t.Fatalf("error %v, want reason %s", err, reason)
	}
}
