// Package lab is the county clinical lab center (医学检验中心): the test
// catalog, orders from the member facilities, the specimen chain, results
// entered and verified by two people, reports with their versions, the
// critical-value loop (package critical), HL7 v2 import over RPC and MLLP,
// turnaround statistics, and the change feed.
//
// Everything of a community lives in one store partition named after it.
// Orders record the requesting facility (from the token) and the lab center
// (from the directory); a facility sees only what it requested or, as lab
// center, what was sent to it.
package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/critical"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "lab"

// Config is the lab's part of mcc's configuration.
type Config struct {
	// MLLPAddr is the address of the HL7 MLLP listener; empty turns it off.
	MLLPAddr string
	// MLLPCommunity and MLLPFacility say whose lab center the messages
	// arriving over MLLP are for: MLLP carries no token.
	MLLPCommunity string
	MLLPFacility  string
	// DeadlineInterval is how often due critical-value deadlines are
	// looked for.
	DeadlineInterval time.Duration
	// Critical is the timing of the critical-value loop.
	Critical critical.Config
}

// RegisterFlags registers the lab's flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.MLLPAddr, "lab.mllp-addr", "", "HL7 v2 MLLP listen address for analyzers and LIS systems (off when empty); MLLP has no authentication, so bind it to a trusted network")
	fs.StringVar(&c.MLLPCommunity, "lab.mllp-community", "demo", "community of the results arriving over MLLP")
	fs.StringVar(&c.MLLPFacility, "lab.mllp-facility", "", "facility ID of the lab center the MLLP listener receives for (required with -lab.mllp-addr)")
	fs.DurationVar(&c.DeadlineInterval, "lab.deadline-interval", time.Second, "how often the lab looks for due critical-value deadlines")
	c.Critical.RegisterFlags(fs, "lab.")
}

// Service implements labv1.LabServiceServer.
type Service struct {
	labv1.UnimplementedLabServiceServer

	store     store.Store
	clock     clock.Clock
	peers     *peer.Peers
	dir       *directory.Lookup
	logger    *slog.Logger
	cfg       Config
	feed      *events.Feed
	critical  *critical.Loop
	scheduler *deadline.Scheduler
	catalog   catalog
	orderM    fsm.Machine[labv1.Order_State]
	specimenM fsm.Machine[labv1.Specimen_State]
	reportM   fsm.Machine[labv1.Report_State]
}

var _ labv1.LabServiceServer = (*Service)(nil)

// New returns the lab service on s. Peers reach the directory.
func New(s store.Store, clk clock.Clock, peers *peer.Peers, logger *slog.Logger, cfg Config) (*Service, error) {
	if cfg.MLLPAddr != "" && cfg.MLLPFacility == "" {
		return nil, errors.New("-lab.mllp-facility: required with -lab.mllp-addr")
	}
	if cfg.DeadlineInterval <= 0 {
		cfg.DeadlineInterval = time.Second
	}
	cat, err := newCatalog()
	if err != nil {
		return nil, err
	}
	svc := &Service{
		store:     s,
		clock:     clk,
		peers:     peers,
		dir:       directory.NewLookup(peers),
		logger:    logger,
		cfg:       cfg,
		feed:      events.NewFeed(s, Name),
		critical:  critical.New(Name, cfg.Critical),
		scheduler: deadline.NewScheduler(s, clk, logger),
		catalog:   cat,
		orderM:    OrderMachine(),
		specimenM: SpecimenMachine(),
		reportM:   ReportMachine(),
	}
	svc.critical.Register(svc.scheduler)
	return svc, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) { labv1.RegisterLabServiceServer(srv, s) }

// Run fires the critical-value deadlines and, if configured, serves MLLP,
// until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.scheduler.Run(ctx, s.cfg.DeadlineInterval) })
	if s.cfg.MLLPAddr != "" {
		lis, err := net.Listen("tcp", s.cfg.MLLPAddr)
		if err != nil {
			return fmt.Errorf("-lab.mllp-addr: %w", err)
		}
		s.logger.Info("HL7 MLLP listener started", "addr", lis.Addr().String())
		g.Go(func() error { return s.ServeMLLP(ctx, lis) })
	}
	return g.Wait()
}

// FireDeadlines fires the due critical-value deadlines now; tests call it
// with a manual clock instead of waiting for Run.
func (s *Service) FireDeadlines(ctx context.Context) (int, error) { return s.scheduler.Fire(ctx) }

// Policy says which roles may call each method. Clinicians order, collect
// and acknowledge; lab technologists run the center; administrators keep
// the catalog.
func Policy() auth.Policy {
	const svc = "/mcc.lab.v1.LabService/"
	var (
		admin     = typev1.Role_ROLE_ADMIN
		clinician = typev1.Role_ROLE_CLINICIAN
		tech      = typev1.Role_ROLE_LAB_TECHNOLOGIST
		auditor   = typev1.Role_ROLE_AUDITOR
		service   = typev1.Role_ROLE_SERVICE
		r         = func(roles ...typev1.Role) []typev1.Role { return roles }
		readers   = r(clinician, tech, admin, auditor, service)
	)
	return auth.Policy{
		svc + "ListTests":                       auth.AnyRole(),
		svc + "GetTest":                         auth.AnyRole(),
		svc + "CreateTest":                      r(admin),
		svc + "UpdateTest":                      r(admin),
		svc + "CreateOrder":                     r(clinician),
		svc + "GetOrder":                        readers,
		svc + "ListOrders":                      readers,
		svc + "ListWorklist":                    r(tech, admin),
		svc + "CancelOrder":                     r(clinician),
		svc + "CreateSpecimen":                  r(clinician, tech),
		svc + "GetSpecimen":                     readers,
		svc + "DispatchSpecimen":                r(clinician, tech),
		svc + "ReceiveSpecimen":                 r(tech),
		svc + "StartTesting":                    r(tech),
		svc + "RejectSpecimen":                  r(tech),
		svc + "EnterResults":                    r(tech),
		svc + "GetReport":                       readers,
		svc + "VerifyReport":                    r(tech),
		svc + "AmendReport":                     r(tech),
		svc + "GetCriticalNotification":         readers,
		svc + "ListCriticalNotifications":       readers,
		svc + "AcknowledgeCriticalNotification": r(clinician),
		svc + "ImportHl7Message":                r(tech, service),
		svc + "GetHl7Message":                   r(tech, admin),
		svc + "ListHl7Messages":                 r(tech, admin),
		svc + "GetStatistics":                   readers,
		svc + "ListEvents":                      auth.AnyRole(),
		svc + "WatchEvents":                     auth.AnyRole(),
	}
}

// caller returns the authenticated caller and its partition.
func caller(ctx context.Context) (auth.Caller, store.Partition, error) {
	c, err := auth.Require(ctx)
	return c, c.Partition(), err
}

// sees reports whether c may read a record requested by requesting and
// sent to the lab center lab.
func sees(c auth.Caller, requesting, lab string) bool {
	return c.SeesCommunity() || c.Facility == requesting || c.Facility == lab
}

// notFound is the error for a missing record and for one the caller may
// not see, so that existence does not leak across facilities.
func notFound(name string) error { return fmt.Errorf("%s: %w", name, store.ErrNotFound) }

// atLab checks that c acts as the lab center of a record.
func atLab(c auth.Caller, name, requesting, lab string) error {
	return actingAs(c, name, requesting, lab, lab, "the lab center")
}

// atRequester checks that c acts as the requesting facility of a record.
func atRequester(c auth.Caller, name, requesting, lab string) error {
	return actingAs(c, name, requesting, lab, requesting, "the requesting facility")
}

// actingAs checks that c may see a record and acts as the facility that
// must make the change: a record c may not see is not found, and one it
// may see but not change is denied.
func actingAs(c auth.Caller, name, requesting, lab, must, role string) error {
	if !sees(c, requesting, lab) {
		return notFound(name)
	}
	if c.Facility != must {
		return fmt.Errorf("only %s %s may do this to %s: %w", role, must, name, apierr.ErrPermissionDenied)
	}
	return nil
}

// ListEvents returns a page of the lab feed.
func (s *Service) ListEvents(ctx context.Context, req *labv1.ListEventsRequest) (*labv1.ListEventsResponse, error) {
	evs, next, err := s.feed.ListEvents(ctx, req.GetAfter(), req.GetPageSize())
	return &labv1.ListEventsResponse{Events: evs, NextCursor: next}, err
}

// WatchEvents streams the lab feed.
func (s *Service) WatchEvents(req *labv1.WatchEventsRequest, stream grpc.ServerStreamingServer[labv1.WatchEventsResponse]) error {
	return s.feed.WatchEvents(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&labv1.WatchEventsResponse{Event: ev})
	})
}
