// Package directory is the community directory service: member facilities,
// their practitioners, and the community patient index (EMPI).
//
// All records of a community live in one store partition named after it, and
// the community always comes from the caller's token.
package directory

import (
	"context"

	"google.golang.org/grpc"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "directory"

// Service implements directoryv1.DirectoryServiceServer.
type Service struct {
	directoryv1.UnimplementedDirectoryServiceServer

	store store.Store
	pii   *pii.Protector
	clock clock.Clock
	feed  *events.Feed
	// keys and clientCfg are set by WithClients.
	keys      *auth.Keys
	clientCfg ClientConfig
}

var _ directoryv1.DirectoryServiceServer = (*Service)(nil)

// New returns the directory service on s. Patient identifiers are sealed
// and hashed with p.
func New(s store.Store, p *pii.Protector, clk clock.Clock, opts ...Option) *Service {
	svc := &Service{store: s, pii: p, clock: clk, feed: events.NewFeed(s, Name)}
	for _, o := range opts {
		o(svc)
	}
	return svc
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) {
	directoryv1.RegisterDirectoryServiceServer(srv, s)
}

// Policy says which roles may call each method. Reading facilities and
// practitioners is open to the whole community; changing them is for
// administrators. Patient lookups are for roles that care for patients.
func Policy() auth.Policy {
	const svc = "/" + "mcc.directory.v1.DirectoryService/"
	admin := []typev1.Role{typev1.Role_ROLE_ADMIN}
	everyone := auth.AnyRole()
	careRoles := []typev1.Role{
		typev1.Role_ROLE_CLINICIAN, typev1.Role_ROLE_LAB_TECHNOLOGIST, typev1.Role_ROLE_RADIOLOGIST,
		typev1.Role_ROLE_CARDIOLOGIST, typev1.Role_ROLE_PATHOLOGIST, typev1.Role_ROLE_CSSD_OPERATOR,
		typev1.Role_ROLE_REFERRAL_COORDINATOR, typev1.Role_ROLE_ADMIN, typev1.Role_ROLE_SERVICE,
	}
	return auth.Policy{
		svc + "CreateFacility":     admin,
		svc + "GetFacility":        everyone,
		svc + "ListFacilities":     everyone,
		svc + "UpdateFacility":     admin,
		svc + "CreatePractitioner": admin,
		svc + "GetPractitioner":    everyone,
		svc + "ListPractitioners":  everyone,
		svc + "UpdatePractitioner": admin,
		svc + "RegisterPatient":    careRoles,
		svc + "MatchPatient":       careRoles,
		svc + "GetPatient":         careRoles,
		svc + "ListPatients":       careRoles,
		svc + "ListEvents":         everyone,
		svc + "WatchEvents":        everyone,
		svc + "CreateClient":       admin,
		svc + "GetClient":          admin,
		svc + "ListClients":        admin,
		svc + "RevokeClient":       admin,
		// IssueToken is how a client gets its first token: it needs none.
		svc + "IssueToken":      nil,
		svc + "RevokeToken":     everyone,
		svc + "ListRevocations": {typev1.Role_ROLE_SERVICE},
	}
}

// caller returns the authenticated caller and its partition.
func caller(ctx context.Context) (auth.Caller, store.Partition, error) {
	c, err := auth.Require(ctx)
	return c, c.Partition(), err
}

// ListEvents returns a page of the directory feed.
func (s *Service) ListEvents(ctx context.Context, req *directoryv1.ListEventsRequest) (*directoryv1.ListEventsResponse, error) {
	evs, next, err := s.feed.ListEvents(ctx, req.GetAfter(), req.GetPageSize())
	return &directoryv1.ListEventsResponse{Events: evs, NextCursor: next}, err
}

// WatchEvents streams the directory feed.
func (s *Service) WatchEvents(req *directoryv1.WatchEventsRequest, stream grpc.ServerStreamingServer[directoryv1.WatchEventsResponse]) error {
	return s.feed.WatchEvents(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&directoryv1.WatchEventsResponse{Event: ev})
	})
}
