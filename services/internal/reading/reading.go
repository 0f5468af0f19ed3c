// Package reading is the remote reading workflow that the imaging (影像),
// ECG (心电) and pathology (病理) centers share: one implementation of
// the exam, its report, the exam type catalog, the duty rota, turnaround
// deadlines, the critical-finding loop, statistics and the change feed,
// behind one set of gRPC methods that each center's service declares in
// its own proto.
//
// A center differs from the others only by data (its Center: the kind of
// center, the reader role, the built-in exam catalog) and by a few hooks
// where it must call other systems (the imaging service checks the study
// in the PACS before an exam is created) or keeps material of its own (an
// ECG's waveform, a pathology case's blocks and slides), which its own
// RPCs add through Arrive, Update and Expedite.
//
// The exam's state machine is Machine: request -> material arrived ->
// reader assigned (duty rota, claim, or assignment with a reason) ->
// preliminary -> reviewed by a second reader -> final -> amended, with
// rejection of the material and cancellation on the side. Every move goes
// through one function (change) that checks the table, stamps the
// timeline, keeps the worklist, counters and turnaround timer in step, and
// appends the events, in one store transaction.
package reading

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/store"
)

// Config is a center's part of mcc's configuration. Each service registers
// it under its own flag prefix (`-imaging.`, `-ecg.`, `-pathology.`).
type Config struct {
	// DeadlineInterval is how often due turnaround and critical-value
	// deadlines are looked for.
	DeadlineInterval time.Duration
	// Calendar is the center's working time, for limits counted in
	// working hours or days.
	Calendar CalendarConfig
	// Critical is the timing of the critical-finding loop.
	Critical critical.Config
}

// RegisterFlags registers the flags `-<prefix>deadline-interval`, the
// calendar's and the critical loop's, with their defaults; prefix is the
// service's, for example "imaging.".
func (c *Config) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.DurationVar(&c.DeadlineInterval, prefix+"deadline-interval", time.Second, "how often due turnaround and critical-finding deadlines are looked for")
	c.Calendar.RegisterFlags(fs, prefix)
	c.Critical.RegisterFlags(fs, prefix)
}

// Center is what one service brings to the shared workflow.
type Center struct {
	// Service is the service's name: its target, store and feed name.
	Service string
	// Desc is the generated description of the service's gRPC service,
	// which declares the shared methods and its own.
	Desc *grpc.ServiceDesc
	// Kind is the center in the directory's sense; the exam's center
	// facility is the one hosting it for the requester.
	Kind typev1.Center
	// Reader is the role of the center's readers.
	Reader typev1.Role
	// Catalog is the built-in exam catalog, a JSON array of
	// mcc.type.v1.ExamType in protojson form. A community uses it until an
	// administrator first changes its catalog.
	Catalog []byte
	// RequireDelayReason refuses to release a late report until the reason
	// of the delay is recorded (pathology).
	RequireDelayReason bool
	// Prepare, if set, checks and completes the material of a new exam
	// before its transaction, calling other systems if it must (the PACS).
	// It runs outside any transaction, so it may do I/O; it must not write.
	Prepare func(ctx context.Context, c auth.Caller, e *typev1.Exam, patient *directoryv1.Patient, et *typev1.ExamType) (Prepared, error)
	// CheckReport, if set, checks a report's content against other systems
	// before the transaction that stores it (key images in the PACS).
	CheckReport func(ctx context.Context, e *typev1.Exam, content *typev1.ReportContent) error
}

// Prepared is what Center.Prepare found out about a new exam.
type Prepared struct {
	// Arrived reports that the material came with the request, so the
	// exam arrives in the transaction that creates it.
	Arrived bool
	// Write, if set, runs in the create transaction, for keys of the
	// center's own (sealed identifiers). It may run more than once.
	Write func(tx store.Tx, e *typev1.Exam) error
}

// Flow is the reading workflow of one center on its store.
type Flow struct {
	center    Center
	store     store.Store
	clock     clock.Clock
	peers     *peer.Peers
	dir       *directory.Lookup
	cfg       Config
	calendar  calendar
	catalog   catalog
	machine   fsm.Machine[State]
	feed      *events.Feed
	critical  *critical.Loop
	scheduler *deadline.Scheduler
	// desc and impl are what Register serves: the service description
	// with the shared methods bound to the flow, and the center's service
	// for its own methods.
	desc *grpc.ServiceDesc
	impl any
}

// New returns the workflow of center on s, serving center.Desc: the shared
// methods by the flow, the others by impl, the center's service (which
// embeds the flow). Peers reach the directory.
func New(center Center, impl any, s store.Store, clk clock.Clock, peers *peer.Peers, logger *slog.Logger, cfg Config) (*Flow, error) {
	if center.Service == "" || center.Desc == nil || center.Kind == typev1.Center_CENTER_UNSPECIFIED || center.Reader == typev1.Role_ROLE_UNSPECIFIED {
		return nil, errors.New("reading: a center needs a service name and description, a kind and a reader role")
	}
	if cfg.DeadlineInterval <= 0 {
		return nil, fmt.Errorf("-%s.deadline-interval: must be positive", center.Service)
	}
	cal, err := cfg.Calendar.parse()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", center.Service, err)
	}
	cat, err := newCatalog(center.Kind, center.Catalog)
	if err != nil {
		return nil, fmt.Errorf("%s catalog: %w", center.Service, err)
	}
	f := &Flow{
		center:    center,
		store:     s,
		clock:     clk,
		peers:     peers,
		dir:       directory.NewLookup(peers),
		cfg:       cfg,
		calendar:  cal,
		catalog:   cat,
		machine:   Machine(),
		feed:      events.NewFeed(s, center.Service),
		critical:  critical.New(center.Service, cfg.Critical),
		scheduler: deadline.NewScheduler(s, clk, logger),
		impl:      impl,
	}
	f.critical.Register(f.scheduler)
	f.scheduler.Handle(timerTurnaround, f.turnaroundBreached)
	if f.desc, err = f.bind(center.Desc); err != nil {
		return nil, err
	}
	return f, nil
}

// Register adds the center's service to a gRPC server.
func (f *Flow) Register(srv *grpc.Server) { srv.RegisterService(f.desc, f.impl) }

// Run fires the turnaround and critical-finding deadlines until ctx ends.
func (f *Flow) Run(ctx context.Context) error {
	return f.scheduler.Run(ctx, f.cfg.DeadlineInterval)
}

// FireDeadlines fires the due deadlines now; tests call it with a manual
// clock instead of waiting for Run.
func (f *Flow) FireDeadlines(ctx context.Context) (int, error) { return f.scheduler.Fire(ctx) }

// Store returns the flow's store, for a center's keys of its own.
func (f *Flow) Store() store.Store { return f.store }

// Clock returns the flow's clock.
func (f *Flow) Clock() clock.Clock { return f.clock }

// systemCaller is the actor of what the service does by itself when a
// deadline passes.
func (f *Flow) systemCaller(community, facility string) auth.Caller {
	return auth.ServiceCaller(community, facility, f.center.Service)
}

// clone returns a deep copy of an exam, for the state before a change.
func clone(e *typev1.Exam) *typev1.Exam { return proto.CloneOf(e) }
