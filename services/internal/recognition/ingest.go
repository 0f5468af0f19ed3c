package recognition

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/timestamppb"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/store"
)

// The registry follows each center's feed on its own goroutine. The
// position in a center's feed is kept at src/{service}, with counts of the
// events indexed and skipped, and it moves in the same transaction as the
// entries the events change: after a restart the registry resumes right
// after the last event it indexed, and an event is never applied twice.
// Events it cannot read are skipped, counted and kept at
// skipped/{service}/{cursor}; they never stop the feed.

func registryFiles() *protoregistry.Files { return protoregistry.GlobalFiles }

func sourceKey(name string) string { return "src/" + name }

// batchMax is how many events one transaction indexes at most.
const batchMax = 256

// probeInterval is how long a center's stream may go without an event
// before the registry asks the center whether it missed one.
const probeInterval = time.Minute

// follow follows src in community until ctx ends, reconnecting after the
// last event indexed, which it reads from the store at each connection.
func (s *Service) follow(ctx context.Context, community string, src *eventfeed.Source) {
	f := &eventfeed.Follower{
		Source: src,
		Open: func(ctx context.Context) (context.Context, string, error) {
			st, err := s.sourceState(ctx, store.Partition(community), src.Name)
			if err != nil {
				return nil, "", err
			}
			sctx, err := s.peers.AsService(ctx, community)
			return sctx, st.GetCursor(), err
		},
		Apply: func(ctx context.Context, evs []*typev1.Event) error {
			return s.Ingest(ctx, community, src.Name, evs)
		},
		Failed: func(ctx context.Context, err error) bool {
			if cursorExpired(err) {
				if err := s.restart(ctx, community, src.Name); err != nil {
					s.logger.Error("recognition: could not reset a center's cursor", "source", src.Name, "error", err.Error())
				}
			}
			level := s.logger.Debug
			if status.Code(err) != codes.Unavailable {
				level = s.logger.Warn
			}
			level("recognition: reconnecting to a center's events", "source", src.Name, "community", community, "error", fmt.Sprint(err))
			return true
		},
		MaxBatch: batchMax, RetryMin: 100 * time.Millisecond, RetryMax: s.cfg.RetryMax, Probe: probeInterval,
	}
	f.Run(ctx)
}

// sourceState returns the stored state of a source, or its start.
func (s *Service) sourceState(ctx context.Context, p store.Partition, name string) (*recognitionv1.Source, error) {
	rec, err := s.store.Get(ctx, p, sourceKey(name))
	if isNotFound(err) {
		return &recognitionv1.Source{Name: "sources/" + name}, nil
	}
	if err != nil {
		return nil, err
	}
	st := &recognitionv1.Source{}
	return st, proto.Unmarshal(rec.Value, st)
}

// Ingest indexes a batch of events of one center's feed, in order, and
// moves the center's cursor past them, in one transaction. The follower
// calls it; benchmarks call it directly.
func (s *Service) Ingest(ctx context.Context, community, source string, batch []*typev1.Event) error {
	p := store.Partition(community)
	r, err := s.rulesOf(ctx, p)
	if err != nil {
		return err
	}
	type parsed struct {
		changes []change
		skip    string
	}
	parsedEvents := make([]parsed, len(batch))
	for i, ev := range batch {
		changes, skip := parse(source, ev)
		for _, ch := range changes {
			ch.entry.CatalogVersion = r.catalogVersion
			if it, ok := r.items[ch.entry.GetItem()]; ok && ch.entry.GetDisplay() == "" {
				ch.entry.Display = it.GetDisplayName()
			}
			if ch.withdraw {
				continue
			}
			level, err := s.levelOf(ctx, community, ch.entry.GetIssuingFacility())
			if err != nil {
				return err
			}
			ch.entry.IssuerLevel = level
		}
		parsedEvents[i] = parsed{changes, skip}
	}
	actor := auth.ServiceCaller(community, peer.ServiceFacility, Name)
	now := s.clock.Now()
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		st := &recognitionv1.Source{Name: "sources/" + source}
		if rec, err := tx.Get(sourceKey(source)); err == nil {
			if err := proto.Unmarshal(rec.Value, st); err != nil {
				return err
			}
		} else if !isNotFound(err) {
			return err
		}
		for i, ev := range batch {
			pe := parsedEvents[i]
			if pe.skip != "" {
				st.Skipped++
				st.LastSkipped = pe.skip
				s.logger.Warn("recognition: skipped an unreadable event of a center", "source", source, "community", community, "event", ev.GetId(), "why", pe.skip)
				if err := tx.Put("skipped/"+source+"/"+ev.GetCursor(), []byte(pe.skip)); err != nil {
					return err
				}
			}
			for _, ch := range pe.changes {
				changed, err := s.apply(tx, actor, now, ch)
				if err != nil {
					return err
				}
				if changed {
					st.Indexed++
				}
			}
			if ev.GetCursor() != "" {
				st.Cursor = ev.GetCursor()
			}
		}
		st.UpdateTime = timestamppb.New(now)
		return tx.Put(sourceKey(source), mustMarshal(st))
	})
}

// Event types of the centers' feeds. A report that is retracted or
// cancelled withdraws its entries; no center emits one yet, but the
// registry is ready for them.
var (
	releaseTypes  = []string{"report.final", "report.amended"}
	withdrawTypes = []string{"report.retracted", "report.withdrawn", "report.cancelled"}
)

// parse turns one event into registry changes. An event that is not about
// a report release changes nothing; one that should be but cannot be read
// gives the reason to skip it.
func parse(source string, ev *typev1.Event) ([]change, string) {
	typ := ev.GetType()
	withdraw := slices.Contains(withdrawTypes, typ)
	if !withdraw && !slices.Contains(releaseTypes, typ) {
		return nil, ""
	}
	if ev.GetSnapshot() == nil {
		return nil, typ + " without a snapshot"
	}
	msg, err := ev.GetSnapshot().UnmarshalNew()
	if err != nil {
		return nil, fmt.Sprintf("%s: unreadable snapshot: %v", typ, err)
	}
	var changes []change
	switch r := msg.(type) {
	case *labv1.Report:
		changes, err = labChanges(source, r)
	case *typev1.ExamReport:
		var ch change
		ch, err = examChange(source, r)
		changes = []change{ch}
	default:
		return nil, fmt.Sprintf("%s: unexpected snapshot %s", typ, msg.ProtoReflect().Descriptor().FullName())
	}
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", typ, err)
	}
	for i := range changes {
		changes[i].withdraw = withdraw
	}
	return changes, ""
}

// checkRef checks the references every entry needs.
func checkRef(patient, facility, report string, at *timestamppb.Timestamp) error {
	switch {
	case !strings.HasPrefix(patient, "patients/") || len(patient) == len("patients/"):
		return errors.New("no patient")
	case len(patient)-len("patients/") > maxPatientID:
		return errors.New("a patient ID longer than the registry's names can carry")
	case !strings.HasPrefix(facility, "facilities/"):
		return errors.New("no issuing facility")
	case report == "":
		return errors.New("no report name")
	case at == nil || at.AsTime().Unix() <= 0:
		return errors.New("no report time")
	}
	return nil
}

// labChanges gives an entry per result of a lab report. Validity counts
// from the first release, which an amendment keeps in the history.
func labChanges(source string, r *labv1.Report) ([]change, error) {
	released := r.GetVerifyTime()
	if h := r.GetHistory(); len(h) > 0 {
		released = h[0].GetVerifyTime()
	}
	if err := checkRef(r.GetPatient(), r.GetLabFacility(), r.GetName(), released); err != nil {
		return nil, err
	}
	if len(r.GetResults()) == 0 {
		return nil, errors.New("no results")
	}
	version := r.GetVersion()
	if version < 1 {
		version = 1
	}
	var out []change
	for _, res := range r.GetResults() {
		if res.GetCode() == "" {
			return nil, errors.New("a result without a code")
		}
		summary := strconv.FormatFloat(res.GetValue(), 'f', -1, 64)
		if res.GetUnit() != "" {
			summary += " " + res.GetUnit()
		}
		if f := res.GetFlag(); f != labv1.Flag_FLAG_UNSPECIFIED {
			summary += " (" + strings.TrimPrefix(f.String(), "FLAG_") + ")"
		}
		out = append(out, change{entry: &recognitionv1.Result{
			Name:            results.Name(resultID(r.GetPatient(), source, r.GetLabFacility(), r.GetName(), res.GetCode())),
			Patient:         r.GetPatient(),
			Item:            res.GetCode(),
			Display:         res.GetDisplay(),
			IssuingFacility: r.GetLabFacility(),
			OriginScope:     recognitionv1.Scope_SCOPE_COMMUNITY,
			ReportTime:      released,
			Summary:         summary,
			Source:          source,
			Report:          r.GetName(),
			ReportVersion:   version,
		}})
	}
	return out, nil
}

// examChange gives the entry of an imaging, ECG or pathology report. The
// feed carries no free text, so the summary is the coded results.
func examChange(source string, r *typev1.ExamReport) (change, error) {
	if err := checkRef(r.GetPatient(), r.GetCenterFacility(), r.GetName(), r.GetFinalTime()); err != nil {
		return change{}, err
	}
	item := r.GetExamType().GetCode()
	if item == "" {
		return change{}, errors.New("no exam type")
	}
	var coded []string
	for _, c := range r.GetContent().GetResults() {
		if c.GetDisplay() != "" {
			coded = append(coded, c.GetDisplay())
		} else {
			coded = append(coded, c.GetCode())
		}
	}
	version := r.GetVersion()
	if version < 1 {
		version = 1
	}
	return change{entry: &recognitionv1.Result{
		Name:            results.Name(resultID(r.GetPatient(), source, r.GetCenterFacility(), r.GetName(), item)),
		Patient:         r.GetPatient(),
		Item:            item,
		Display:         r.GetExamType().GetDisplay(),
		IssuingFacility: r.GetCenterFacility(),
		OriginScope:     recognitionv1.Scope_SCOPE_COMMUNITY,
		ReportTime:      r.GetFinalTime(),
		Summary:         strings.Join(coded, "; "),
		Source:          source,
		Report:          r.GetName(),
		ReportVersion:   version,
	}}, nil
}

// ListSources lists the followed feeds of the caller's community.
func (s *Service) ListSources(ctx context.Context, _ *recognitionv1.ListSourcesRequest) (*recognitionv1.ListSourcesResponse, error) {
	_, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	resp := &recognitionv1.ListSourcesResponse{}
	err = s.scan(ctx, p, "src/", func(rec store.Record) error {
		st := &recognitionv1.Source{}
		if err := proto.Unmarshal(rec.Value, st); err != nil {
			return err
		}
		resp.Sources = append(resp.Sources, st)
		return nil
	})
	return resp, err
}

// cursorExpired reports whether a center refused the cursor as older than
// the events it keeps.
func cursorExpired(err error) bool { return apierr.Reason(err) == events.ReasonCursorExpired }

// restart forgets the cursor of a source whose feed no longer has the
// events after it: the registry reads the feed again from the oldest event
// kept (entries already indexed are not changed twice) and says loudly
// that reports in between may be missing.
func (s *Service) restart(ctx context.Context, community, source string) error {
	s.logger.Error("recognition: a center's feed no longer holds the events after the registry's cursor; reading it again from its oldest event, reports released in between are missing from the registry", "source", source, "community", community)
	return s.store.Txn(ctx, store.Partition(community), func(tx store.Tx) error {
		rec, err := tx.Get(sourceKey(source))
		if err != nil {
			return err
		}
		st := &recognitionv1.Source{}
		if err := proto.Unmarshal(rec.Value, st); err != nil {
			return err
		}
		st.Cursor = ""
		st.LastSkipped = "cursor expired: the feed was read again from its oldest event"
		return tx.Put(sourceKey(source), mustMarshal(st))
	})
}
