// Package audit is the audit service: auditors of a medical community read
// its audit trail (by patient, by actor, by time), export one patient's
// access history and verify the chain. The records themselves are written
// by every process's audit interceptor (package platform/audit) into the
// shared audit store; this service reads them, and prunes them after the
// retention period. Its own calls are audited like any other, because its
// messages carry patients.
package audit

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/paging"
)

// Name is the service's target name and the audit store's name.
const Name = "audit"

// MinRetention is the shortest retention allowed: twelve months, as the
// 等保 2.0 level-3 assessment and PIPL practice expect.
const MinRetention = 365 * 24 * time.Hour

// Config is the audit service's part of mcc's configuration.
type Config struct {
	// Retention is how long records are kept.
	Retention time.Duration
	// PruneInterval is how often records past the retention are pruned.
	PruneInterval time.Duration
}

// RegisterFlags registers the audit flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Retention, "audit.retention", 400*24*time.Hour, "how long audit records are kept (at least 8760h, twelve months)")
	fs.DurationVar(&c.PruneInterval, "audit.prune-interval", 24*time.Hour, "how often audit records older than -audit.retention are pruned")
}

// Validate reports a configuration that would keep records too briefly.
func (c Config) Validate() error {
	if c.Retention < MinRetention {
		return fmt.Errorf("-audit.retention: must be at least %s (twelve months), not %s", MinRetention, c.Retention)
	}
	if c.PruneInterval <= 0 {
		return fmt.Errorf("-audit.prune-interval: must be positive")
	}
	return nil
}

// Service implements auditv1.AuditServiceServer.
type Service struct {
	auditv1.UnimplementedAuditServiceServer
	trail  *audit.Trail
	clock  clock.Clock
	logger *slog.Logger
	cfg    Config
}

// New returns the audit service over trail.
func New(trail *audit.Trail, clk clock.Clock, logger *slog.Logger, cfg Config) *Service {
	return &Service{trail: trail, clock: clk, logger: logger, cfg: cfg}
}

// Register adds the service to srv.
func (s *Service) Register(srv *grpc.Server) { auditv1.RegisterAuditServiceServer(srv, s) }

// Policy says which roles may call each method: auditors only. Separation
// of duties keeps administrators, who can change the system, out of the
// evidence of what they did.
func Policy() auth.Policy {
	auditor := []typev1.Role{typev1.Role_ROLE_AUDITOR}
	p := auth.Policy{}
	for _, m := range auditv1.AuditService_ServiceDesc.Methods {
		p["/"+auditv1.AuditService_ServiceDesc.ServiceName+"/"+m.MethodName] = auditor
	}
	for _, m := range auditv1.AuditService_ServiceDesc.Streams {
		p["/"+auditv1.AuditService_ServiceDesc.ServiceName+"/"+m.StreamName] = auditor
	}
	return p
}

// timeRange checks and returns [start, end).
func timeRange(start, end *timestamppb.Timestamp) (time.Time, time.Time, error) {
	var s, e time.Time
	if start != nil {
		s = start.AsTime()
	}
	if end != nil {
		e = end.AsTime()
	}
	if !s.IsZero() && !e.IsZero() && !e.After(s) {
		return s, e, apierr.Invalid("end_time", "must be after start_time")
	}
	return s, e, nil
}

// ListAuditRecords lists the caller's community's records that match the
// filters, oldest first.
func (s *Service) ListAuditRecords(ctx context.Context, req *auditv1.ListAuditRecordsRequest) (*auditv1.ListAuditRecordsResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	start, end, err := timeRange(req.GetStartTime(), req.GetEndTime())
	if err != nil {
		return nil, err
	}
	q := audit.Query{Patient: req.GetPatient(), Actor: req.GetActor(), Start: start, End: end}
	recs, next, err := s.trail.List(ctx, c.Community, q, paging.Size(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &auditv1.ListAuditRecordsResponse{AuditRecords: recs, NextPageToken: next}, nil
}

// exportPage is how many records the export reads at once.
const exportPage = 500

// ExportPatientAccess streams a patient's access history.
func (s *Service) ExportPatientAccess(req *auditv1.ExportPatientAccessRequest, stream grpc.ServerStreamingServer[auditv1.ExportPatientAccessResponse]) error {
	ctx := stream.Context()
	c, err := auth.Require(ctx)
	if err != nil {
		return err
	}
	start, end, err := timeRange(req.GetStartTime(), req.GetEndTime())
	if err != nil {
		return err
	}
	q := audit.Query{Patient: req.GetPatient(), Start: start, End: end}
	token := ""
	for {
		recs, next, err := s.trail.List(ctx, c.Community, q, exportPage, token)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := stream.Send(&auditv1.ExportPatientAccessResponse{AuditRecord: r}); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		token = next
	}
}

// VerifyChain verifies the caller's community's chain.
func (s *Service) VerifyChain(ctx context.Context, _ *auditv1.VerifyChainRequest) (*auditv1.VerifyChainResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.trail.Verify(ctx, c.Community)
	if err != nil {
		return nil, err
	}
	resp := &auditv1.VerifyChainResponse{
		Valid:         v.OK(),
		Checked:       v.Checked,
		FirstSequence: v.First,
		HeadSequence:  v.Head,
		HeadHash:      v.HeadHash,
		Problem:       v.Problem,
	}
	if !v.OK() {
		resp.BadRecord = audit.RecordName(v.Bad)
		s.logger.WarnContext(ctx, "audit chain failed verification", "record", resp.BadRecord, "problem", v.Problem)
	}
	return resp, nil
}

// Run prunes every community's records older than the retention, at
// start and then every PruneInterval, until ctx ends. A failure is logged
// and retried at the next round.
func (s *Service) Run(ctx context.Context) error {
	tick := time.NewTicker(s.cfg.PruneInterval)
	defer tick.Stop()
	for {
		if err := s.Prune(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "pruning audit records", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Prune deletes the records older than the retention in every community.
func (s *Service) Prune(ctx context.Context) error {
	communities, err := s.trail.Communities(ctx)
	if err != nil {
		return err
	}
	cutoff := s.clock.Now().Add(-s.cfg.Retention)
	for _, c := range communities {
		n, err := s.trail.Prune(ctx, c, cutoff)
		if err != nil {
			return fmt.Errorf("community %s: %w", c, err)
		}
		if n > 0 {
			s.logger.InfoContext(ctx, "pruned audit records past the retention", "community", c, "records", n)
		}
	}
	return nil
}
