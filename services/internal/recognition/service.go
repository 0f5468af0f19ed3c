// Package recognition is the mutual recognition of test and exam results
// (检查检验结果互认): a versioned catalog of recognizable items, a registry
// of every final report of the lab, imaging, ECG and pathology centers
// (followed on their event feeds with durable cursors) and of results the
// members publish, the check a clinician runs before ordering, the
// decisions with their coded reasons, and the statistics of the rate and
// the money saved.
//
// Everything of a community lives in one store partition named after it.
// A check reads the rules version and, for each item, the bucket of the
// patient's record that holds it (pat/{patient}/{bucket}): a few keys,
// never a scan of the registry.
package recognition

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "recognition"

// Centers are the services whose feeds the registry follows.
var Centers = []string{"lab", "imaging", "ecg", "pathology"}

// Config is the recognition service's part of mcc's configuration.
type Config struct {
	// Communities are the communities whose centers' feeds are followed.
	Communities string
	// RetryMax is the longest pause before reconnecting to a center.
	RetryMax time.Duration
	// AccessTTL is how long a positive answer of the directory that a
	// facility treats a patient is reused.
	AccessTTL time.Duration
	// CheckLogDelay, if positive, lets checks be answered before their
	// record is committed, which happens at most this long after.
	CheckLogDelay time.Duration
}

// RegisterFlags registers the recognition flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Communities, "recognition.communities", "demo", "comma-separated communities whose centers' reports the registry indexes")
	fs.DurationVar(&c.RetryMax, "recognition.retry-max", 5*time.Second, "longest pause before the registry reconnects to a center's event feed")
	fs.DurationVar(&c.AccessTTL, "recognition.access-ttl", time.Minute, "how long the directory's answer that a facility treats a patient is reused by checks")
	fs.DurationVar(&c.CheckLogDelay, "recognition.check-log-delay", 0, "0: every check's access record is committed (fsync) before the answer; above 0: records are committed in groups at most this long after the answer, and a crash may lose the last ones")
}

// communities returns the configured communities.
func (c Config) communities() []string {
	var out []string
	for _, s := range strings.Split(c.Communities, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Service implements recognitionv1.RecognitionServiceServer.
type Service struct {
	recognitionv1.UnimplementedRecognitionServiceServer

	store   store.Store
	clock   clock.Clock
	peers   *peer.Peers
	logger  *slog.Logger
	cfg     Config
	feed    *events.Feed
	seed    seed
	sources []*eventfeed.Source

	resultM fsm.Machine[recognitionv1.Result_State]
	qcM     fsm.Machine[recognitionv1.QcSuspension_State]
	rules   *rulesCache
	access  *accessCache
	dir     *directory.Lookup
	checks  *checkLog
	// following counts the goroutines Run started.
	following sync.WaitGroup
}

var _ recognitionv1.RecognitionServiceServer = (*Service)(nil)

// Deps are what the service is built from.
type Deps struct {
	Store  store.Store
	Clock  clock.Clock
	Peers  *peer.Peers
	Logger *slog.Logger
	// Sources, if set, replace the centers found among the peers (tests
	// give a fake center).
	Sources []*eventfeed.Source
}

// New returns the recognition service.
func New(d Deps, cfg Config) (*Service, error) {
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Second
	}
	sd, err := newSeed()
	if err != nil {
		return nil, err
	}
	s := &Service{
		store: d.Store, clock: d.Clock, peers: d.Peers, logger: d.Logger, cfg: cfg,
		feed: events.NewFeed(d.Store, Name), seed: sd,
		resultM: ResultMachine(), qcM: QcMachine(),
		rules:  newRulesCache(),
		access: newAccessCache(cfg.AccessTTL),
		dir:    directory.NewLookup(d.Peers),
		checks: newCheckLog(cfg.CheckLogDelay),
	}
	s.sources = d.Sources
	if s.sources == nil && d.Peers != nil {
		var missing []string
		s.sources, missing = eventfeed.Discover(registryFiles(), d.Peers, Centers...)
		if len(missing) > 0 {
			d.Logger.Info("recognition: centers without a connection are not followed", "centers", missing)
		}
	}
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) { recognitionv1.RegisterRecognitionServiceServer(srv, s) }

// Run follows every center of every configured community, each on its own
// goroutine, until ctx ends: a center that is down delays nothing else.
func (s *Service) Run(ctx context.Context) error {
	s.following.Add(1)
	go func() {
		defer s.following.Done()
		s.flushChecks(ctx)
	}()
	for _, community := range s.cfg.communities() {
		for _, src := range s.sources {
			s.following.Add(1)
			go func() {
				defer s.following.Done()
				s.follow(ctx, community, src)
			}()
		}
	}
	<-ctx.Done()
	s.following.Wait()
	return nil
}

// Policy says which roles may call each method. Clinicians check and
// decide; the centers' staff publish and suspend; administrators keep the
// catalog; auditors read.
func Policy() auth.Policy {
	const svc = "/mcc.recognition.v1.RecognitionService/"
	var (
		admin       = typev1.Role_ROLE_ADMIN
		clinician   = typev1.Role_ROLE_CLINICIAN
		tech        = typev1.Role_ROLE_LAB_TECHNOLOGIST
		radiologist = typev1.Role_ROLE_RADIOLOGIST
		cardio      = typev1.Role_ROLE_CARDIOLOGIST
		patho       = typev1.Role_ROLE_PATHOLOGIST
		coordinator = typev1.Role_ROLE_REFERRAL_COORDINATOR
		auditor     = typev1.Role_ROLE_AUDITOR
		service     = typev1.Role_ROLE_SERVICE
		r           = func(roles ...typev1.Role) []typev1.Role { return roles }
		centers     = r(tech, radiologist, cardio, patho)
	)
	return auth.Policy{
		svc + "ListItems":          auth.AnyRole(),
		svc + "GetItem":            auth.AnyRole(),
		svc + "CreateItem":         r(admin),
		svc + "UpdateItem":         r(admin),
		svc + "PublishResult":      r(tech, service),
		svc + "GetResult":          r(clinician, tech, radiologist, cardio, patho, coordinator, admin, auditor, service),
		svc + "WithdrawResult":     r(tech, service),
		svc + "CheckRecognition":   r(clinician),
		svc + "CheckResults":       r(clinician, coordinator, service),
		svc + "CreateDecision":     r(clinician),
		svc + "GetDecision":        r(clinician, admin, auditor),
		svc + "ListDecisions":      r(clinician, admin, auditor),
		svc + "CreateQcSuspension": append(centers, admin),
		svc + "ListQcSuspensions":  auth.AnyRole(),
		svc + "LiftQcSuspension":   append(centers, admin),
		svc + "ListSources":        r(admin, auditor),
		svc + "GetStatistics":      r(clinician, admin, auditor),
		svc + "ListEvents":         auth.AnyRole(),
		svc + "WatchEvents":        auth.AnyRole(),
	}
}

// caller returns the authenticated caller and its partition.
func caller(ctx context.Context) (auth.Caller, store.Partition, error) {
	c, err := auth.Require(ctx)
	return c, c.Partition(), err
}

// seesAll reports whether c sees every facility's records: administrators,
// auditors and services.
func seesAll(c auth.Caller) bool {
	return c.SeesCommunity() || c.Has(typev1.Role_ROLE_AUDITOR)
}

// notFound is the error for a missing record and for one the caller may
// not see, so that existence does not leak across facilities.
func notFound(name string) error { return fmt.Errorf("%s: %w", name, store.ErrNotFound) }

// isNotFound reports whether err is a missing key.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// ListEvents returns a page of the recognition feed.
func (s *Service) ListEvents(ctx context.Context, req *recognitionv1.ListEventsRequest) (*recognitionv1.ListEventsResponse, error) {
	evs, next, err := s.feed.ListEvents(ctx, req.GetAfter(), req.GetPageSize())
	return &recognitionv1.ListEventsResponse{Events: evs, NextCursor: next}, err
}

// WatchEvents streams the recognition feed.
func (s *Service) WatchEvents(req *recognitionv1.WatchEventsRequest, stream grpc.ServerStreamingServer[recognitionv1.WatchEventsResponse]) error {
	return s.feed.WatchEvents(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&recognitionv1.WatchEventsResponse{Event: ev})
	})
}

// isAlreadyExists reports whether err is a key that exists.
func isAlreadyExists(err error) bool { return errors.Is(err, store.ErrAlreadyExists) }
