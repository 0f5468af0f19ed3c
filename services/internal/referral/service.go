// Package referral is two-way referral (双向转诊): up-referrals from township
// health centers and village clinics to the county hospitals, with triage,
// appointments and referral codes; the emergency green channel; and
// down-referrals to the townships, whose care plans become follow-up tasks.
//
// Every referral lives in its community's store partition under
// `ref/{id}`, where IDs sort by creation time. Index keys written in the same
// transactions list a facility's sent and received referrals and its
// worklist in priority order, so no query scans the whole partition.
// Deadlines (triage overdue, code expiry, missed follow-ups) are durable
// timers of package deadline.
package referral

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/deadline"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/store"
)

// Name is the service's target name and store name.
const Name = "referral"

// Config holds the referral settings a community may change.
type Config struct {
	// CodeTTL is how long a referral code is valid after acceptance.
	CodeTTL time.Duration
	// TriageTimeout is how long a routine or urgent up-referral may wait
	// for triage before it escalates.
	TriageTimeout time.Duration
	// EmergencyTriageTimeout is the same for emergencies.
	EmergencyTriageTimeout time.Duration
	// FollowUpGrace is how long after its due time a follow-up task that
	// was not done counts as missed.
	FollowUpGrace time.Duration
	// ScanInterval is how often due timers are looked for.
	ScanInterval time.Duration
}

// RegisterFlags registers the referral flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.CodeTTL, "referral.code-ttl", 48*time.Hour, "how long a referral code stays valid after acceptance")
	fs.DurationVar(&c.TriageTimeout, "referral.triage-timeout", 24*time.Hour, "time to triage a routine or urgent up-referral before it escalates")
	fs.DurationVar(&c.EmergencyTriageTimeout, "referral.emergency-triage-timeout", 30*time.Minute, "time to triage an emergency up-referral before it escalates")
	fs.DurationVar(&c.FollowUpGrace, "referral.follow-up-grace", 72*time.Hour, "time after its due time before a follow-up task not done is reported missed")
	fs.DurationVar(&c.ScanInterval, "referral.scan-interval", 10*time.Second, "how often the referral deadlines are checked")
}

// validate checks the settings before the service starts: every duration
// must be positive (a zero scan interval would stop the timers; a zero
// grace period is allowed, for tests and for counties that want it).
func (c Config) validate() error {
	var errs []error
	for flag, d := range map[string]time.Duration{
		"-referral.code-ttl":                 c.CodeTTL,
		"-referral.triage-timeout":           c.TriageTimeout,
		"-referral.emergency-triage-timeout": c.EmergencyTriageTimeout,
		"-referral.scan-interval":            c.ScanInterval,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, not %s", flag, d))
		}
	}
	if c.FollowUpGrace < 0 {
		errs = append(errs, fmt.Errorf("-referral.follow-up-grace: must not be negative, not %s", c.FollowUpGrace))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Deps are what the service is built from.
type Deps struct {
	Store  store.Store
	Clock  clock.Clock
	Peers  *peer.Peers
	Logger *slog.Logger
	// Attachments checks attached results. Nil until the recognition
	// service exists: results are then accepted as unchecked.
	Attachments AttachmentChecker
}

// Service implements referralv1.ReferralServiceServer.
type Service struct {
	referralv1.UnimplementedReferralServiceServer

	store       store.Store
	clock       clock.Clock
	peers       *peer.Peers
	logger      *slog.Logger
	attachments AttachmentChecker
	cfg         Config
	feed        *events.Feed
	scheduler   *deadline.Scheduler
}

var _ referralv1.ReferralServiceServer = (*Service)(nil)

// New returns the referral service, or an error naming the flag of a bad
// setting.
func New(d Deps, cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{
		store:       d.Store,
		clock:       d.Clock,
		peers:       d.Peers,
		logger:      d.Logger,
		attachments: d.Attachments,
		cfg:         cfg,
		scheduler:   deadline.NewScheduler(d.Store, d.Clock, d.Logger),
	}
	s.feed = events.NewFeed(d.Store, Name)
	s.feed.View = feedCaller
	s.scheduler.Handle(timerTriage, s.triageOverdue)
	s.scheduler.Handle(timerCode, s.codeExpired)
	s.scheduler.Handle(timerFollowUp, s.followUpOverdue)
	return s, nil
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) {
	referralv1.RegisterReferralServiceServer(srv, s)
}

// Run fires the referral deadlines until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	return s.scheduler.Run(ctx, s.cfg.ScanInterval)
}

// Fire fires the deadlines that are due now and reports how many fired.
// Run calls it periodically; tests call it after moving their clock.
func (s *Service) Fire(ctx context.Context) (int, error) {
	return s.scheduler.Fire(ctx)
}

// Policy says which roles may call each method. Clinicians and referral
// coordinators work referrals; which of them may take which action on a
// given referral is decided per referral (see rights). MCC's services may
// read referrals; statistics carry no patient data and are for
// coordinators and administrators.
func Policy() auth.Policy {
	const svc = "/" + "mcc.referral.v1.ReferralService/"
	care := []typev1.Role{typev1.Role_ROLE_CLINICIAN, typev1.Role_ROLE_REFERRAL_COORDINATOR}
	read := append(slices.Clone(care), typev1.Role_ROLE_SERVICE)
	feed := append(slices.Clone(read), typev1.Role_ROLE_ADMIN)
	stats := []typev1.Role{typev1.Role_ROLE_REFERRAL_COORDINATOR, typev1.Role_ROLE_ADMIN}
	return auth.Policy{
		svc + "CreateReferral":   care,
		svc + "GetReferral":      read,
		svc + "ListReferrals":    read,
		svc + "ListWorklist":     care,
		svc + "AcceptReferral":   care,
		svc + "RejectReferral":   care,
		svc + "ReturnReferral":   care,
		svc + "ResubmitReferral": care,
		svc + "ArriveReferral":   care,
		svc + "CompleteReferral": care,
		svc + "CancelReferral":   care,
		svc + "BackfillReferral": care,
		svc + "ListFollowUps":    read,
		svc + "CompleteFollowUp": care,
		svc + "MissFollowUp":     care,
		svc + "GetStatistics":    stats,
		svc + "ListEvents":       feed,
		svc + "WatchEvents":      feed,
	}
}

// coordinators is the audience every referral event names besides the two
// facilities, so that the community's referral coordinators follow every
// referral in the feed. It cannot be a facility's name: facility IDs start
// with a letter.
const coordinators = "facilities/-referral-coordinators"

// feedCaller is the caller as the feed filters events for it. Referral
// events are for the two facilities and the coordinators only, so an
// administrator sees its own facility's, like anyone else; a coordinator
// sees them all.
func feedCaller(c auth.Caller) auth.Caller {
	if c.Has(typev1.Role_ROLE_SERVICE) {
		return c
	}
	v := c
	v.Roles = slices.DeleteFunc(slices.Clone(c.Roles), func(r typev1.Role) bool { return r == typev1.Role_ROLE_ADMIN })
	if c.Has(typev1.Role_ROLE_REFERRAL_COORDINATOR) {
		v.Facility = coordinators
	}
	return v
}

// ListEvents returns a page of the referral feed.
func (s *Service) ListEvents(ctx context.Context, req *referralv1.ListEventsRequest) (*referralv1.ListEventsResponse, error) {
	evs, next, err := s.feed.ListEvents(ctx, req.GetAfter(), req.GetPageSize())
	return &referralv1.ListEventsResponse{Events: evs, NextCursor: next}, err
}

// WatchEvents streams the referral feed.
func (s *Service) WatchEvents(req *referralv1.WatchEventsRequest, stream grpc.ServerStreamingServer[referralv1.WatchEventsResponse]) error {
	return s.feed.WatchEvents(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&referralv1.WatchEventsResponse{Event: ev})
	})
}
