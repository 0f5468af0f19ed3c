// Package sterilization is the sterilization supply center (消毒供应中心,
// CSSD) of the community, following WS 310: instrument packages traced from
// the clinic's request through reprocessing, sterilization loads, storage
// and dispatch to their use on a patient, and the recall of every package a
// failed biological indicator puts in doubt.
//
// All records of a community live in its partition:
//
//	st/{set type}                         set types
//	ster/{sterilizer}                     sterilizers
//	bd/{sterilizer}/{test}                B-D tests
//	load/{sterilizer}/{cycle, 8 digits}   loads, by cycle: a recall reads only its window
//	pkg/{barcode}                         packages, with their current cycle
//	pcyc/{barcode}/{cycle, 6 digits}      earlier cycles of a package, as they ended
//	inv/{facility}/{barcode}              the sterile packages a facility holds
//	patpkg/{patient}/{time}-{barcode}-{cycle}  the packages used on a patient
//	rc/{recall}                           recalls
//	rci/{recall}/{barcode}/{cycle}        recalled package cycles and where they were
//	rcf/{facility}/{recall}               the recalls that concern a facility
//	stat/pkg/{day}/{cssd}/{facility}/{set type}   dispatch counters
//	stat/load/{day}/{cssd}/{sterilizer}           load and recall counters
//
// Nothing here is ever deleted but index entries: traceability records are
// kept for as long as the store is (WS 310 asks for at least 3 years).
package sterilization

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "sterilization"

// Peers is what the service needs of *peer.Peers: the directory's
// connection, and a service identity to read facilities and practitioners.
type Peers interface {
	Conn(name string) (*grpc.ClientConn, error)
	AsService(ctx context.Context, community string) (context.Context, error)
}

// Service implements sterilizationv1.SterilizationServiceServer.
type Service struct {
	sterilizationv1.UnimplementedSterilizationServiceServer

	store  store.Store
	clock  clock.Clock
	peers  Peers
	logger *slog.Logger
	cfg    Config
	zone   *time.Location
	feed   *events.Feed
}

var _ sterilizationv1.SterilizationServiceServer = (*Service)(nil)

// New returns the sterilization service on s. It checks facilities,
// patients and practitioners with the directory through peers.
func New(s store.Store, clk clock.Clock, peers Peers, logger *slog.Logger, cfg Config) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{
		store:  s,
		clock:  clk,
		peers:  peers,
		logger: logger,
		cfg:    cfg,
		zone:   time.FixedZone(fmt.Sprintf("UTC%+d", int(cfg.UTCOffset.Hours())), int(cfg.UTCOffset.Seconds())),
		feed:   events.NewFeed(s, Name),
	}, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) {
	sterilizationv1.RegisterSterilizationServiceServer(srv, s)
}

// Policy says which roles may call each method. CSSD operators do the
// center's work; clinicians request, receive and use packages at their
// clinics; everyone with a stake may read what concerns their facility.
func Policy() auth.Policy {
	const svc = "/" + "mcc.sterilization.v1.SterilizationService/"
	var (
		cssd      = []typev1.Role{typev1.Role_ROLE_CSSD_OPERATOR}
		clinic    = []typev1.Role{typev1.Role_ROLE_CLINICIAN}
		catalog   = []typev1.Role{typev1.Role_ROLE_CSSD_OPERATOR, typev1.Role_ROLE_ADMIN}
		requester = []typev1.Role{typev1.Role_ROLE_CLINICIAN, typev1.Role_ROLE_CSSD_OPERATOR, typev1.Role_ROLE_ADMIN}
		center    = []typev1.Role{typev1.Role_ROLE_CSSD_OPERATOR, typev1.Role_ROLE_ADMIN, typev1.Role_ROLE_AUDITOR}
		reader    = []typev1.Role{typev1.Role_ROLE_CLINICIAN, typev1.Role_ROLE_CSSD_OPERATOR, typev1.Role_ROLE_ADMIN, typev1.Role_ROLE_AUDITOR}
		everyone  = auth.AnyRole()
	)
	return auth.Policy{
		svc + "CreateSetType":          catalog,
		svc + "GetSetType":             everyone,
		svc + "ListSetTypes":           everyone,
		svc + "UpdateSetType":          catalog,
		svc + "CreateSterilizer":       catalog,
		svc + "GetSterilizer":          center,
		svc + "ListSterilizers":        center,
		svc + "CreateBowieDickTest":    cssd,
		svc + "ListBowieDickTests":     center,
		svc + "CreatePackage":          requester,
		svc + "GetPackage":             reader,
		svc + "ListPackages":           reader,
		svc + "CollectPackage":         cssd,
		svc + "WashPackage":            cssd,
		svc + "DisinfectPackage":       cssd,
		svc + "PackPackage":            cssd,
		svc + "DispatchPackage":        cssd,
		svc + "ReceivePackage":         clinic,
		svc + "UsePackage":             clinic,
		svc + "ReleasePackageEarly":    cssd,
		svc + "TracePackage":           reader,
		svc + "ListPatientPackages":    reader,
		svc + "ListInventory":          reader,
		svc + "CreateLoad":             cssd,
		svc + "GetLoad":                center,
		svc + "ListLoads":              center,
		svc + "RecordLoadResults":      cssd,
		svc + "ReleaseLoad":            cssd,
		svc + "RecordBiologicalResult": cssd,
		svc + "GetRecall":              reader,
		svc + "ListRecalls":            reader,
		svc + "ListRecallItems":        reader,
		svc + "GetStatistics":          reader,
		svc + "GetCostSummary":         reader,
		svc + "ListEvents":             everyone,
		svc + "WatchEvents":            everyone,
	}
}

// Reasons of the FAILED_PRECONDITION errors this service returns, besides
// apierr.ReasonInvalidTransition.
const (
	ReasonRecalled         = "PACKAGE_RECALLED"
	ReasonExpired          = "PACKAGE_EXPIRED"
	ReasonImplantHeld      = "IMPLANT_HELD"
	ReasonImplantNotHeld   = "IMPLANT_NOT_HELD"
	ReasonElsewhere        = "PACKAGE_AT_ANOTHER_FACILITY"
	ReasonInLoad           = "PACKAGE_IN_LOAD"
	ReasonLocked           = "STERILIZER_LOCKED"
	ReasonBowieDick        = "BOWIE_DICK_REQUIRED"
	ReasonResultsNotPassed = "LOAD_RESULTS_NOT_PASSED"
	ReasonLoadNotRunning   = "LOAD_NOT_RUNNING"
	ReasonResultRecorded   = "RESULT_ALREADY_RECORDED"
	ReasonNoCenter         = "NO_STERILIZATION_CENTER"
	ReasonNotCenter        = "NOT_A_STERILIZATION_CENTER"
)

// notFound is the error for a resource that does not exist or that the
// caller may not see: the two must look the same.
func notFound(name string) error { return fmt.Errorf("%s: %w", name, store.ErrNotFound) }

// day is the community's local date of t, YYYY-MM-DD.
func (s *Service) day(t time.Time) string { return t.In(s.zone).Format(time.DateOnly) }

// ListEvents returns a page of the sterilization feed.
func (s *Service) ListEvents(ctx context.Context, req *sterilizationv1.ListEventsRequest) (*sterilizationv1.ListEventsResponse, error) {
	evs, next, err := s.feed.ListEvents(ctx, req.GetAfter(), req.GetPageSize())
	return &sterilizationv1.ListEventsResponse{Events: evs, NextCursor: next}, err
}

// WatchEvents streams the sterilization feed.
func (s *Service) WatchEvents(req *sterilizationv1.WatchEventsRequest, stream grpc.ServerStreamingServer[sterilizationv1.WatchEventsResponse]) error {
	return s.feed.WatchEvents(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&sterilizationv1.WatchEventsResponse{Event: ev})
	})
}
