package app

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/countymcc/mcc/services/internal/admin"
	"github.com/countymcc/mcc/services/internal/audit"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/ecg"
	"github.com/countymcc/mcc/services/internal/feed"
	"github.com/countymcc/mcc/services/internal/imaging"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/pathology"
	platformaudit "github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/recognition"
	"github.com/countymcc/mcc/services/internal/referral"
	"github.com/countymcc/mcc/services/internal/sterilization"
	"github.com/countymcc/mcc/services/internal/store"
)

// gatewayTarget is the REST gateway's target name.
const gatewayTarget = "gateway"

// deps are what a service is built from. Each service gets its own store.
type deps struct {
	store  store.Store
	pii    *pii.Protector
	clock  clock.Clock
	logger *slog.Logger
	peers  *peer.Peers
	keys   *auth.Keys
	// audit is the process's audit trail, in the shared audit store.
	audit *platformaudit.Trail
	// metrics receives a service's own collectors.
	metrics prometheus.Registerer
}

// registrar is a built service, ready to be added to the gRPC server.
type registrar interface {
	Register(*grpc.Server)
}

// runFunc is background work as a runner.
type runFunc func(ctx context.Context) error

// Run runs f.
func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

// runner is a service with background work (firing its deadlines), which
// runs until the context ends.
type runner interface {
	Run(ctx context.Context) error
}

// serviceTarget is one gRPC service that -target can select. build gets
// the whole configuration: a service with settings of its own has a Config
// field in app.Config, registered in Config.RegisterFlags.
type serviceTarget struct {
	name   string
	policy func() auth.Policy
	build  func(deps, *Config) (registrar, error)
}

// serviceTargets lists every service of MCC. Adding a service means adding a
// line here and its handler in the gateway.
func serviceTargets() []serviceTarget {
	return []serviceTarget{
		{name: directory.Name, policy: directory.Policy, build: func(d deps, c *Config) (registrar, error) {
			return directory.New(d.store, d.pii, d.clock, directory.WithClients(d.keys, c.Clients)), nil
		}},
		{name: lab.Name, policy: lab.Policy, build: func(d deps, c *Config) (registrar, error) {
			return lab.New(d.store, d.clock, d.peers, d.logger, c.Lab)
		}},
		{name: imaging.Name, policy: imaging.Policy, build: func(d deps, c *Config) (registrar, error) {
			return imaging.New(d.store, d.clock, d.peers, d.pii, d.logger, c.Imaging)
		}},
		{name: ecg.Name, policy: ecg.Policy, build: func(d deps, c *Config) (registrar, error) {
			return ecg.New(d.store, d.clock, d.peers, d.logger, c.ECG)
		}},
		{name: pathology.Name, policy: pathology.Policy, build: func(d deps, c *Config) (registrar, error) {
			return pathology.New(d.store, d.clock, d.peers, d.logger, c.Pathology)
		}},
		{name: sterilization.Name, policy: sterilization.Policy, build: func(d deps, c *Config) (registrar, error) {
			return sterilization.New(d.store, d.clock, d.peers, d.logger, c.Sterilization)
		}},
		{name: referral.Name, policy: referral.Policy, build: func(d deps, c *Config) (registrar, error) {
			// Attached results are checked by the recognition service
			// when this process can reach it; without it they are stored
			// unchecked.
			var attachments referral.AttachmentChecker
			if _, err := d.peers.Conn(recognition.Name); err == nil {
				attachments = recognition.NewAttachments(d.peers)
			}
			return referral.New(referral.Deps{Store: d.store, Clock: d.clock, Peers: d.peers, Logger: d.logger, Attachments: attachments}, c.Referral)
		}},
		{name: recognition.Name, policy: recognition.Policy, build: func(d deps, c *Config) (registrar, error) {
			return recognition.New(recognition.Deps{Store: d.store, Clock: d.clock, Peers: d.peers, Logger: d.logger}, c.Recognition)
		}},
		{name: audit.Name, policy: audit.Policy, build: func(d deps, c *Config) (registrar, error) {
			return audit.New(d.audit, d.clock, d.logger, c.Audit), nil
		}},
		{name: feed.Name, policy: feed.Policy, build: func(d deps, cfg *Config) (registrar, error) {
			return feed.New(feed.Deps{Store: d.store, Clock: d.clock, Peers: d.peers, PII: d.pii, Logger: d.logger, Retention: cfg.EventRetention, Metrics: d.metrics}, cfg.Feed)
		}},
	}
}

// targetNames are the names -target accepts, besides "all".
func targetNames() []string {
	names := []string{gatewayTarget}
	for _, t := range serviceTargets() {
		names = append(names, t.name)
	}
	return names
}

// AccessPolicy is the merged role table of every service mcc can run and of
// the process-level services, for tests and documentation.
func AccessPolicy() auth.Policy {
	p := admin.Policy()
	for _, t := range serviceTargets() {
		p.Merge(t.policy())
	}
	return p
}
