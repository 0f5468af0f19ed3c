package lab_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// An attempt is how a test tries one illegal move through the API. It
// puts a fresh resource in the move's from state, makes the call that
// leads to its to state, and says what refusal to expect: reason (by
// default INVALID_TRANSITION) or code.
type attempt struct {
	call   func(t *testing.T, from int32) error
	reason string
	code   codes.Code
}

// noVerb marks a target state that no RPC leads to (an initial state, or
// one only the loop's own timers reach); the walk checks that exactly
// these are skipped.
var noVerb = attempt{}

func walk[S fsm.State](t *testing.T, m fsm.Machine[S], try func(mv fsm.Move[S]) attempt) {
	t.Helper()
	tried, skipped := 0, 0
	for _, mv := range m.Illegal() {
		a := try(mv)
		if a.call == nil {
			skipped++
			continue
		}
		tried++
		t.Run(mv.String(), func(t *testing.T) {
			err := a.call(t, int32(mv.From))
			switch {
			case a.code != codes.OK:
				servertest.WantCode(t, err, a.code)
			case a.reason != "":
				servertest.WantReason(t, err, a.reason)
			default:
				servertest.WantReason(t, err, apierr.ReasonInvalidTransition)
			}
		})
	}
	t.Logf("%d illegal moves tried through the API, %d into states no RPC leads to", tried, skipped)
}

// seq hands out barcodes.
type seq struct{ n int }

func (s *seq) next() string { s.n++; return fmt.Sprintf("I%05d", s.n) }

func TestIllegalSpecimenMoves(t *testing.T) {
	f := newFixture(t)
	var bc seq
	// specimen puts a new specimen in state from and returns its barcode.
	// A rejected specimen is rejected in testing, after results were
	// entered, so that it has a report to verify.
	specimen := func(t *testing.T, from int32) string {
		b := bc.next()
		o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
		st := labv1.Specimen_State(from)
		if st != labv1.Specimen_STATE_REJECTED {
			f.toState(t, o, b, st)
			return b
		}
		f.toState(t, o, b, labv1.Specimen_STATE_IN_TESTING)
		if _, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/" + b, Results: []*labv1.ResultInput{normal("2823-3")}}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.lab.RejectSpecimen(f.wang(t), &labv1.RejectSpecimenRequest{Name: "specimens/" + b, Reason: labv1.RejectionReason_REJECTION_REASON_CLOTTED, Action: labv1.RejectionAction_REJECTION_ACTION_RECOLLECT}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	walk(t, lab.SpecimenMachine(), func(mv fsm.Move[labv1.Specimen_State]) attempt {
		switch mv.To {
		case labv1.Specimen_STATE_IN_TRANSIT:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.DispatchSpecimen(f.doctor(t), &labv1.DispatchSpecimenRequest{Name: "specimens/" + specimen(t, from), Courier: "老张"})
				return err
			}}
		case labv1.Specimen_STATE_RECEIVED:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: "specimens/" + specimen(t, from)})
				return err
			}}
		case labv1.Specimen_STATE_IN_TESTING:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.StartTesting(f.wang(t), &labv1.StartTestingRequest{Name: "specimens/" + specimen(t, from)})
				return err
			}}
		case labv1.Specimen_STATE_REJECTED:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.RejectSpecimen(f.wang(t), &labv1.RejectSpecimenRequest{Name: "specimens/" + specimen(t, from),
					Reason: labv1.RejectionReason_REJECTION_REASON_HEMOLYSIS, Action: labv1.RejectionAction_REJECTION_ACTION_NOTIFY})
				return err
			}}
		case labv1.Specimen_STATE_DONE:
			verify := func(t *testing.T, from int32) error {
				_, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/" + specimen(t, from)})
				return err
			}
			// Before testing a specimen has no report, so there is
			// nothing to verify.
			if mv.From < labv1.Specimen_STATE_IN_TESTING {
				return attempt{call: verify, code: codes.NotFound}
			}
			return attempt{call: verify}
		}
		return noVerb // COLLECTED is only ever the first state
	})
}

func TestIllegalOrderMoves(t *testing.T) {
	f := newFixture(t)
	var bc seq
	order := func(t *testing.T, from int32) *labv1.Order {
		o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
		switch labv1.Order_State(from) {
		case labv1.Order_STATE_IN_PROGRESS:
			f.toState(t, o, bc.next(), labv1.Specimen_STATE_RECEIVED)
		case labv1.Order_STATE_COMPLETED:
			f.toState(t, o, bc.next(), labv1.Specimen_STATE_DONE)
		case labv1.Order_STATE_CANCELLED:
			if _, err := f.lab.CancelOrder(f.doctor(t), &labv1.CancelOrderRequest{Name: o.GetName()}); err != nil {
				t.Fatal(err)
			}
		}
		return o
	}
	walk(t, lab.OrderMachine(), func(mv fsm.Move[labv1.Order_State]) attempt {
		switch mv.To {
		case labv1.Order_STATE_CANCELLED:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.CancelOrder(f.doctor(t), &labv1.CancelOrderRequest{Name: order(t, from).GetName()})
				return err
			}}
		case labv1.Order_STATE_IN_PROGRESS, labv1.Order_STATE_COMPLETED:
			// An order starts with a specimen's reception and completes
			// with its last report. Both need a new specimen, which a
			// cancelled or completed order refuses; an order in progress
			// already is, and a placed one has no report to complete it.
			switch mv.From {
			case labv1.Order_STATE_CANCELLED:
				return attempt{call: collectFor(f, order, &bc), reason: lab.ReasonOrderCancelled}
			case labv1.Order_STATE_COMPLETED:
				return attempt{call: collectFor(f, order, &bc), reason: lab.ReasonOrderCompleted}
			case labv1.Order_STATE_PLACED:
				return attempt{call: func(t *testing.T, from int32) error {
					o := order(t, from)
					f.collect(t, o, bc.next())
					_, err := f.lab.VerifyReport(f.liu(t), &labv1.VerifyReportRequest{Name: "reports/" + fmt.Sprintf("I%05d", bc.n)})
					return err
				}, code: codes.NotFound}
			case labv1.Order_STATE_IN_PROGRESS:
				// IN_PROGRESS -> IN_PROGRESS: a second reception leaves
				// the order as it is, which the happy path tests.
				return attempt{call: func(t *testing.T, from int32) error {
					o := order(t, from)
					_, err := f.lab.ReceiveSpecimen(f.wang(t), &labv1.ReceiveSpecimenRequest{Name: "specimens/" + fmt.Sprintf("I%05d", bc.n)})
					got, gerr := f.lab.GetOrder(f.doctor(t), &labv1.GetOrderRequest{Name: o.GetName()})
					if gerr != nil || got.GetOrder().GetState() != labv1.Order_STATE_IN_PROGRESS || len(got.GetOrder().GetTimeline()) != 2 {
						t.Errorf("order after a repeated reception: %v %v", got.GetOrder(), gerr)
					}
					return err
				}}
			}
		}
		return noVerb // PLACED is only ever the first state
	})
}

func collectFor(f *fixture, order func(*testing.T, int32) *labv1.Order, bc *seq) func(*testing.T, int32) error {
	return func(t *testing.T, from int32) error {
		o := order(t, from)
		_, err := f.lab.CreateSpecimen(f.doctor(t), &labv1.CreateSpecimenRequest{Barcode: bc.next(), Specimen: &labv1.Specimen{Order: o.GetName(), Tests: o.GetTests()}})
		return err
	}
}

func TestIllegalReportMoves(t *testing.T) {
	f := newFixture(t)
	var bc seq
	report := func(t *testing.T, from int32) string {
		b := bc.next()
		o := f.order(t, f.batu, labv1.Priority_PRIORITY_ROUTINE, "2823-3")
		switch labv1.Report_State(from) {
		case labv1.Report_STATE_PRELIMINARY:
			f.toState(t, o, b, labv1.Specimen_STATE_IN_TESTING)
			if _, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: "reports/" + b, Results: []*labv1.ResultInput{normal("2823-3")}}); err != nil {
				t.Fatal(err)
			}
		case labv1.Report_STATE_FINAL:
			f.toState(t, o, b, labv1.Specimen_STATE_DONE)
		case labv1.Report_STATE_AMENDED:
			f.toState(t, o, b, labv1.Specimen_STATE_DONE)
			if _, err := f.lab.AmendReport(f.liu(t), &labv1.AmendReportRequest{Name: "reports/" + b, Reason: "typo", Results: []*labv1.ResultInput{normal("2823-3")}}); err != nil {
				t.Fatal(err)
			}
		}
		return "reports/" + b
	}
	walk(t, lab.ReportMachine(), func(mv fsm.Move[labv1.Report_State]) attempt {
		switch mv.To {
		case labv1.Report_STATE_PRELIMINARY:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.EnterResults(f.wang(t), &labv1.EnterResultsRequest{Name: report(t, from), Results: []*labv1.ResultInput{normal("2823-3")}})
				return err
			}}
		case labv1.Report_STATE_FINAL:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.VerifyReport(f.as(t, "lab-zhao", "qrmyy", tech), &labv1.VerifyReportRequest{Name: report(t, from)})
				return err
			}}
		case labv1.Report_STATE_AMENDED:
			return attempt{call: func(t *testing.T, from int32) error {
				_, err := f.lab.AmendReport(f.liu(t), &labv1.AmendReportRequest{Name: report(t, from), Reason: "x", Results: []*labv1.ResultInput{normal("2823-3")}})
				return err
			}}
		}
		return noVerb
	})
}

func TestIllegalCriticalMoves(t *testing.T) {
	f := newFixture(t)
	var bc seq
	notification := func(t *testing.T, from int32) string {
		n := f.criticalReport(t, bc.next())
		ack := func(readBack string) {
			if _, err := f.lab.AcknowledgeCriticalNotification(f.doctor(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: n.GetName(), ReadBack: readBack}); err != nil {
				t.Fatal(err)
			}
		}
		switch typev1.CriticalNotification_State(from) {
		case critical.Confirmed:
			ack("2.1")
		case critical.ReachedWithoutReadBack:
			ack("")
		case critical.Unreachable:
			f.Clock.Advance(time.Hour)
			for range 3 {
				if _, err := f.svc.FireDeadlines(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		return n.GetName()
	}
	walk(t, critical.Machine(), func(mv fsm.Move[typev1.CriticalNotification_State]) attempt {
		readBack := map[typev1.CriticalNotification_State]string{critical.Confirmed: "2.1", critical.ReachedWithoutReadBack: ""}
		rb, ok := readBack[mv.To]
		if !ok {
			return noVerb // opened by verification, escalated only by the loop's timers
		}
		return attempt{call: func(t *testing.T, from int32) error {
			name := notification(t, from)
			_, err := f.lab.AcknowledgeCriticalNotification(f.doctor(t), &labv1.AcknowledgeCriticalNotificationRequest{Name: name, ReadBack: rb})
			return err
		}}
	})
}
