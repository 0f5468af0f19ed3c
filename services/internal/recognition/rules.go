package recognition

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/store"
)

// rules are what a check judges results by: the catalog and the QC
// suspensions of one community at one rules version.
type rules struct {
	version        int64
	catalogVersion int64
	items          map[string]*recognitionv1.Item
	// suspensions are by item code.
	suspensions map[string][]*recognitionv1.QcSuspension
}

// rulesCache keeps the rules of each community until its rules version
// moves. Every check reads the version key, so a change made through
// another replica is seen at once.
type rulesCache struct {
	mu sync.Mutex
	by map[store.Partition]*rules
}

func newRulesCache() *rulesCache { return &rulesCache{by: map[store.Partition]*rules{}} }

// rulesOf returns the current rules of partition p.
func (s *Service) rulesOf(ctx context.Context, p store.Partition) (*rules, error) {
	get := func(k string) (store.Record, error) { return s.store.Get(ctx, p, k) }
	v, err := readCounter(get, rulesVersionKey)
	if err != nil {
		return nil, err
	}
	if v == 0 {
		if err := s.ensureCatalog(ctx, p); err != nil {
			return nil, err
		}
		if v, err = readCounter(get, rulesVersionKey); err != nil {
			return nil, err
		}
	}
	s.rules.mu.Lock()
	cached := s.rules.by[p]
	s.rules.mu.Unlock()
	if cached != nil && cached.version == v {
		return cached, nil
	}
	r := &rules{version: v, items: map[string]*recognitionv1.Item{}, suspensions: map[string][]*recognitionv1.QcSuspension{}}
	if r.catalogVersion, err = readCounter(get, catalogVersionKey); err != nil {
		return nil, err
	}
	if err := s.scan(ctx, p, items.Prefix, func(rec store.Record) error {
		it, err := items.Decode(rec)
		if err == nil {
			r.items[it.GetCode().GetCode()] = it
		}
		return err
	}); err != nil {
		return nil, err
	}
	if err := s.scan(ctx, p, qcSuspensions.Prefix, func(rec store.Record) error {
		q, err := qcSuspensions.Decode(rec)
		if err == nil {
			r.suspensions[q.GetItem()] = append(r.suspensions[q.GetItem()], q)
		}
		return err
	}); err != nil {
		return nil, err
	}
	s.rules.mu.Lock()
	s.rules.by[p] = r
	s.rules.mu.Unlock()
	return r, nil
}

// scan calls fn for every record under prefix.
func (s *Service) scan(ctx context.Context, p store.Partition, prefix string, fn func(store.Record) error) error {
	for rec, err := range store.Scan(ctx, s.store, p, prefix, "", 1000) {
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return fmt.Errorf("%s: %w", rec.Key, err)
		}
	}
	return nil
}

// verdict is the judgement of one result.
type verdict struct {
	expire time.Time
	why    recognitionv1.Unrecognizable
	detail string
}

// judge decides whether result e of item it may be recognized at time at.
// It is the one place the recognition rules live.
func (r *rules) judge(it *recognitionv1.Item, e *recognitionv1.Result, at time.Time) verdict {
	reported := e.GetReportTime().AsTime()
	v := verdict{expire: reported.AddDate(0, 0, int(it.GetValidityDays()))}
	scope := e.GetOriginScope()
	if scope == recognitionv1.Scope_SCOPE_UNSPECIFIED {
		scope = recognitionv1.Scope_SCOPE_COMMUNITY
	}
	switch {
	case e.GetState() == recognitionv1.Result_STATE_WITHDRAWN:
		v.why, v.detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_AMENDED, fmt.Sprintf("%s was withdrawn by its issuer", e.GetName())
	case !it.GetRecognized():
		v.why, v.detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_NOT_IN_CATALOG, fmt.Sprintf("%s is not in the mutual recognition catalog", it.GetCode().GetCode())
	case scope > it.GetScope():
		v.why, v.detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_OUT_OF_SCOPE, fmt.Sprintf("%s is issued outside the %s scope of the item", e.GetName(), it.GetScope())
	case directory.Tier(e.GetIssuerLevel()) < directory.Tier(it.GetMinFacilityLevel()):
		v.why, v.detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_ISSUER_NOT_ELIGIBLE, fmt.Sprintf("%s (%s) is below the item's minimum level %s", e.GetIssuingFacility(), e.GetIssuerLevel(), it.GetMinFacilityLevel())
	case it.GetRequiresQc() && r.suspended(e.GetIssuingFacility(), it.GetCode().GetCode(), reported) != nil:
		q := r.suspended(e.GetIssuingFacility(), it.GetCode().GetCode(), reported)
		v.why, v.detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_QC_SUSPENDED, fmt.Sprintf("%s was issued during %s", e.GetName(), q.GetName())
	case !at.Before(v.expire):
		v.why, v.detail = recognitionv1.Unrecognizable_UNRECOGNIZABLE_EXPIRED, fmt.Sprintf("%s expired at %s (%d days)", e.GetName(), v.expire.UTC().Format(time.RFC3339), it.GetValidityDays())
	}
	return v
}

// suspended returns the suspension of facility's item in force at t.
func (r *rules) suspended(facility, item string, t time.Time) *recognitionv1.QcSuspension {
	for _, q := range r.suspensions[item] {
		if q.GetFacility() != facility || t.Before(q.GetStartTime().AsTime()) {
			continue
		}
		if q.GetEndTime() == nil || t.Before(q.GetEndTime().AsTime()) {
			return q
		}
	}
	return nil
}

// item returns the catalog item of code; an unknown code is bad input on
// field.
func (r *rules) item(field, code string) (*recognitionv1.Item, error) {
	it, ok := r.items[code]
	if !ok {
		return nil, apierr.Invalid(field, "%q is not an item of the recognition catalog (neither a lab test nor an exam type)", code)
	}
	return it, nil
}

// accessCache remembers for a while that a facility treats a patient, so
// that a clinician's checks in one visit cost one directory call.
type accessCache struct {
	ttl time.Duration
	mu  sync.Mutex
	by  map[string]time.Time
}

func newAccessCache(ttl time.Duration) *accessCache {
	return &accessCache{ttl: ttl, by: map[string]time.Time{}}
}

// treating checks that c's facility treats patient: the directory shows a
// facility only the patients it has registered or matched. A patient the
// facility does not treat, and one of another community, is refused
// with PERMISSION_DENIED naming the field.
func (s *Service) treating(ctx context.Context, c auth.Caller, field, patient string) error {
	if c.SeesCommunity() {
		return nil
	}
	key := c.Community + "|" + c.Facility + "|" + patient
	now := time.Now()
	s.access.mu.Lock()
	until, ok := s.access.by[key]
	s.access.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	conn, err := s.peers.Conn(directory.Name)
	if err != nil {
		return err
	}
	_, err = directoryv1.NewDirectoryServiceClient(conn).GetPatient(peer.OnBehalf(ctx), &directoryv1.GetPatientRequest{Name: patient})
	switch status.Code(err) {
	case codes.OK:
	case codes.NotFound:
		return fmt.Errorf("%s: %s is not a patient your facility %s is treating in community %s: %w", field, patient, c.Facility, c.Community, apierr.ErrPermissionDenied)
	default:
		return fmt.Errorf("directory: %w", err)
	}
	if s.access.ttl > 0 {
		s.access.mu.Lock()
		if len(s.access.by) > 100000 {
			clear(s.access.by)
		}
		s.access.by[key] = now.Add(s.access.ttl)
		s.access.mu.Unlock()
	}
	return nil
}

// levelOf returns the level of facility in community, from the directory
// as the service (its answers kept for directory.LookupTTL). A facility the
// directory does not know, or a name that is not one, has no level.
func (s *Service) levelOf(ctx context.Context, community, facility string) (typev1.FacilityLevel, error) {
	f, err := s.dir.Facility(ctx, community, facility)
	switch {
	case err == nil:
		return f.GetLevel(), nil
	case errors.Is(err, directory.ErrFacilityUnknown), status.Code(err) == codes.InvalidArgument:
		return typev1.FacilityLevel_FACILITY_LEVEL_UNSPECIFIED, nil
	}
	return 0, err
}

// compact is an entry without its history and timeline: as its history
// keeps an earlier version, and as events carry it.
func compact(e *recognitionv1.Result) *recognitionv1.Result {
	out := proto.CloneOf(e)
	out.History, out.Timeline = nil, nil
	return out
}
