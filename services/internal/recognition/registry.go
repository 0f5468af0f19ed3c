package recognition

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/fsm"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The registry keeps a patient's entries in item buckets: pat/{patient
// id}/{bucket} holds every entry of the patient whose item falls in the
// bucket (two hex digits of the item's hash, 256 buckets), so that a check
// of five items reads at most five keys, and an ingested result rewrites
// only the entries of its own item, however long the patient's history
// grows. An entry's name starts with its patient's ID and its ID's hash
// starts with its bucket, so the name finds the record; hist/{id}/{n}
// holds the versions an amendment replaced. An entry's etag is the number
// of its state changes.
var results = resource.Table[*recognitionv1.Result]{
	Collection: "results",
	Prefix:     "res/",
	New:        func() *recognitionv1.Result { return &recognitionv1.Result{} },
	Event:      "result",
	Facilities: func(r *recognitionv1.Result) []string { return []string{r.GetIssuingFacility()} },
	// Events carry no summary: a member's impression is free text.
	Snapshot: func(r *recognitionv1.Result) proto.Message {
		out := compact(r)
		out.Summary = ""
		return out
	},
}

func historyPrefix(name string) string { return "hist/" + results.ID(name) + "/" }

// bucketOf is the bucket of an item: two hex digits of its hash.
func bucketOf(item string) string {
	h := sha256.Sum256([]byte(item))
	return hex.EncodeToString(h[:1])
}

// patientRecord is one bucket of a patient's entries as stored: what the
// key says (the patient), what the catalog says (display) and what the
// timeline says (create and update time) are not stored. An entry is
// decoded only when it is looked up by name, and only the decoded ones are
// encoded again when the record is written back, so an ingest costs about
// the same however long the patient's history.
type patientRecord struct {
	id, bucket string
	// raw holds each entry's stored bytes (nil for one added since the
	// read), and decoded, at the same index, the entry if it was decoded
	// or added.
	raw     [][]byte
	decoded []*recognitionv1.Result
}

func (pr *patientRecord) key() string { return "pat/" + pr.id + "/" + pr.bucket }

// entriesField is the field number each entry is written under, as if the
// record were a message with `repeated Result entries = 1`.
const entriesField = 1

// readPatient reads one bucket of a patient's entries; a missing one is
// empty.
func readPatient(get func(string) (store.Record, error), id, bucket string) (*patientRecord, error) {
	pr := &patientRecord{id: id, bucket: bucket}
	raw, err := readEntries(get, pr.key())
	if err != nil {
		return nil, err
	}
	pr.raw, pr.decoded = raw, make([]*recognitionv1.Result, len(raw))
	return pr, nil
}

// readEntries returns the stored bytes of each entry of the bucket record
// at key, undecoded; a missing record has none.
func readEntries(get func(string) (store.Record, error), key string) ([][]byte, error) {
	rec, err := get(key)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for b := rec.Value; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != entriesField || typ != protowire.BytesType {
			return nil, fmt.Errorf("%s: bad record", key)
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("%s: bad record", key)
		}
		b = b[n:]
		out = append(out, v)
	}
	return out, nil
}

// decodeEntry decodes one stored entry of the patient with ID id, and
// fills in what the record leaves out.
func decodeEntry(id string, v []byte) (*recognitionv1.Result, error) {
	e := &recognitionv1.Result{}
	if err := proto.Unmarshal(v, e); err != nil {
		return nil, err
	}
	e.Patient = "patients/" + id
	if tl := e.GetTimeline(); len(tl) > 0 {
		e.CreateTime, e.UpdateTime = tl[0].GetTime(), tl[len(tl)-1].GetTime()
	}
	return e, nil
}

// The field numbers peekEntry reads, from the generated descriptors.
var (
	nameField       = fieldNumber((&recognitionv1.Result{}).ProtoReflect().Descriptor(), "name")
	itemField       = fieldNumber((&recognitionv1.Result{}).ProtoReflect().Descriptor(), "item")
	reportTimeField = fieldNumber((&recognitionv1.Result{}).ProtoReflect().Descriptor(), "report_time")
	secondsField    = fieldNumber((&timestamppb.Timestamp{}).ProtoReflect().Descriptor(), "seconds")
	nanosField      = fieldNumber((&timestamppb.Timestamp{}).ProtoReflect().Descriptor(), "nanos")
)

func fieldNumber(md protoreflect.MessageDescriptor, name protoreflect.Name) protowire.Number {
	return md.Fields().ByName(name).Number()
}

// peekEntry reads a stored entry's name, item and report time without
// decoding the rest. A missing report time is the Unix epoch, as AsTime
// makes it.
func peekEntry(b []byte) (name, item []byte, reported time.Time, err error) {
	var ts []byte
	if err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		switch {
		case num == nameField && typ == protowire.BytesType:
			name = v
		case num == itemField && typ == protowire.BytesType:
			item = v
		case num == reportTimeField && typ == protowire.BytesType:
			ts = v
		}
	}); err != nil {
		return nil, nil, time.Time{}, err
	}
	var secs, nanos uint64
	if err := eachField(ts, func(num protowire.Number, typ protowire.Type, v []byte) {
		if typ != protowire.VarintType {
			return
		}
		n, _ := protowire.ConsumeVarint(v)
		switch num {
		case secondsField:
			secs = n
		case nanosField:
			nanos = n
		}
	}); err != nil {
		return nil, nil, time.Time{}, err
	}
	return name, item, time.Unix(int64(secs), int64(int32(nanos))).UTC(), nil
}

// eachField calls fn with each field of the encoded message b: its number,
// its wire type and its value (a bytes field's contents, a varint's
// encoding).
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("a stored entry: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("a stored entry: %w", protowire.ParseError(m))
			}
			fn(num, typ, v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return fmt.Errorf("a stored entry: %w", protowire.ParseError(m))
		}
		fn(num, typ, b[:m])
		b = b[m:]
	}
	return nil
}

// add adds a new entry.
func (pr *patientRecord) add(e *recognitionv1.Result) {
	pr.raw = append(pr.raw, nil)
	pr.decoded = append(pr.decoded, e)
}

// find returns the entry named name, decoded, or nil.
func (pr *patientRecord) find(name string) (*recognitionv1.Result, error) {
	for i, v := range pr.raw {
		if e := pr.decoded[i]; e != nil {
			if e.GetName() == name {
				return e, nil
			}
			continue
		}
		n, _, _, err := peekEntry(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", pr.key(), err)
		}
		if string(n) != name {
			continue
		}
		e, err := decodeEntry(pr.id, v)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", pr.key(), err)
		}
		pr.decoded[i] = e
		return e, nil
	}
	return nil, nil
}

// encode writes the record back: the decoded entries encoded again, the
// others as they were stored.
func (pr *patientRecord) encode() []byte {
	var out []byte
	for i, v := range pr.raw {
		if e := pr.decoded[i]; e != nil {
			slim := compact(e)
			slim.Timeline = e.GetTimeline()
			slim.Patient, slim.Display, slim.Etag = "", "", ""
			slim.CreateTime, slim.UpdateTime = nil, nil
			v = mustMarshal(slim)
		}
		out = protowire.AppendTag(out, entriesField, protowire.BytesType)
		out = protowire.AppendBytes(out, v)
	}
	return out
}

// getResult reads an entry, without its history, with its patient's
// record and its etag version. A missing entry is NotFound with the record
// it would be in, when its name is well formed.
func getResult(get func(string) (store.Record, error), name string) (*recognitionv1.Result, *patientRecord, uint64, error) {
	id, bucket, ok := patientOf(name)
	if !ok {
		return nil, nil, 0, notFound(name)
	}
	pr, err := readPatient(get, id, bucket)
	if err != nil {
		return nil, nil, 0, err
	}
	e, err := pr.find(name)
	if err != nil {
		return nil, nil, 0, err
	}
	if e == nil {
		return nil, pr, 0, notFound(name)
	}
	version := uint64(len(e.GetTimeline()))
	e.Etag = events.Etag(version)
	return e, pr, version, nil
}

// loadResult reads an entry with its history, outside a transaction.
func (s *Service) loadResult(ctx context.Context, p store.Partition, name string) (*recognitionv1.Result, error) {
	e, _, _, err := getResult(func(k string) (store.Record, error) { return s.store.Get(ctx, p, k) }, name)
	if err != nil {
		return nil, err
	}
	e = proto.CloneOf(e)
	if r, err := s.rulesOf(ctx, p); err == nil {
		e.Display = r.items[e.GetItem()].GetDisplayName()
	}
	err = s.scan(ctx, p, historyPrefix(name), func(rec store.Record) error {
		h := &recognitionv1.Result{}
		if err := proto.Unmarshal(rec.Value, h); err != nil {
			return err
		}
		e.History = append(e.History, h)
		return nil
	})
	return e, err
}

func notFoundOr(name string, err error) error {
	if isNotFound(err) {
		return notFound(name)
	}
	return err
}

// ResultMachine is an entry's life: final, amended any number of times,
// withdrawn for good. An entry first seen as amended (a feed read from
// after its release) starts amended.
func ResultMachine() fsm.Machine[recognitionv1.Result_State] {
	const (
		final     = recognitionv1.Result_STATE_FINAL
		amended   = recognitionv1.Result_STATE_AMENDED
		withdrawn = recognitionv1.Result_STATE_WITHDRAWN
	)
	return fsm.Machine[recognitionv1.Result_State]{
		Kind: "result",
		Moves: map[recognitionv1.Result_State][]recognitionv1.Result_State{
			recognitionv1.Result_STATE_UNSPECIFIED: {final, amended},
			final:                                  {amended, withdrawn},
			amended:                                {amended, withdrawn},
		},
	}
}

// resultID is the stable ID of one item of one report of one issuer, so
// that a repeated event finds the entry it made. It starts with the
// patient's ID, which says where the entry is stored: a directory patient
// ID (a UUID) and the 12-digit hash make 49 characters. The hash starts
// with the item's bucket, which says which of the patient's records holds
// the entry.
func resultID(patient, source, issuer, report, item string) string {
	h := sha256.Sum256([]byte(source + "\x00" + issuer + "\x00" + report + "\x00" + item))
	return patientID(patient) + "-" + bucketOf(item) + hex.EncodeToString(h[:5])
}

// patientOf returns the patient ID an entry's name starts with, and the
// bucket of its item.
func patientOf(name string) (id, bucket string, ok bool) {
	id = results.ID(name)
	if len(id) < 14 || id[len(id)-13] != '-' {
		return "", "", false
	}
	return id[:len(id)-13], id[len(id)-12 : len(id)-10], true
}

// maxPatientID is the longest patient ID an entry's name can carry.
const maxPatientID = 64 - 13

func patientID(patient string) string { return patient[len("patients/"):] }

// change is one change a report makes to the registry.
type change struct {
	// entry is the entry as the report gives it (name, patient, item,
	// issuer, report, version, summary, times).
	entry *recognitionv1.Result
	// withdraw is set for a retracted or cancelled report.
	withdraw bool
	// reason is why, for the timeline.
	reason string
	// emit makes the change an event.
	emit bool
}

// apply makes one change in tx and reports whether the registry changed.
// A change the entry already reflects (a repeated event, an older version)
// changes nothing. Changes made through this service's API are events;
// those read from a center's feed are not, since that feed is their
// record already.
func (s *Service) apply(tx store.Tx, c auth.Caller, now time.Time, ch change) (bool, error) {
	in := ch.entry
	cur, pr, version, err := getResult(tx.Get, in.GetName())
	if isNotFound(err) {
		if ch.withdraw {
			return false, nil
		}
		e := proto.CloneOf(in)
		to := recognitionv1.Result_STATE_FINAL
		if e.GetReportVersion() > 1 {
			to = recognitionv1.Result_STATE_AMENDED
		}
		e.State, e.Etag = recognitionv1.Result_STATE_UNSPECIFIED, ""
		resource.Stamp(e, now, true)
		if err := s.resultM.Apply(e, to, c, now, ""); err != nil {
			return false, err
		}
		if pr == nil {
			if pr, err = readPatient(tx.Get, patientID(e.GetPatient()), bucketOf(e.GetItem())); err != nil {
				return false, err
			}
		}
		pr.add(e)
		if err := tx.Put(pr.key(), pr.encode()); err != nil {
			return false, err
		}
		if !ch.emit {
			return true, nil
		}
		e.Etag = events.Etag(1)
		return true, events.Append(tx, c, now, results.Change(results.Event+"."+fsm.EventName(to), e, 1))
	}
	if err != nil {
		return false, err
	}
	if cur.GetState() == recognitionv1.Result_STATE_WITHDRAWN {
		return false, nil
	}
	to := recognitionv1.Result_STATE_AMENDED
	if ch.withdraw {
		to = recognitionv1.Result_STATE_WITHDRAWN
	} else {
		if in.GetReportVersion() <= cur.GetReportVersion() {
			return false, nil
		}
		old := compact(cur)
		old.Etag = ""
		if err := tx.Put(fmt.Sprintf("%s%06d", historyPrefix(cur.GetName()), cur.GetReportVersion()), mustMarshal(old)); err != nil {
			return false, err
		}
		cur.ReportVersion, cur.Summary, cur.CatalogVersion = in.GetReportVersion(), in.GetSummary(), in.GetCatalogVersion()
		cur.ReportTime, cur.Display = in.GetReportTime(), in.GetDisplay()
		cur.IssuerLevel = in.GetIssuerLevel()
	}
	if err := s.resultM.Apply(cur, to, c, now, ch.reason); err != nil {
		return false, err
	}
	if err := tx.Put(pr.key(), pr.encode()); err != nil {
		return false, err
	}
	if !ch.emit {
		return true, nil
	}
	cur.Etag = events.Etag(version + 1)
	return true, events.Append(tx, c, now, results.Change(results.Event+"."+fsm.EventName(to), cur, version+1))
}

// mustMarshal encodes a message that always encodes.
func mustMarshal(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// PublishResult adds or amends a result of the caller's own lab.
func (s *Service) PublishResult(ctx context.Context, req *recognitionv1.PublishResultRequest) (*recognitionv1.PublishResultResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	if req.GetReportTime().AsTime().After(now.Add(time.Minute)) {
		return nil, apierr.Invalid("report_time", "is in the future")
	}
	scope := req.GetOriginScope()
	switch {
	case req.GetExternalIssuer() == "" && scope > recognitionv1.Scope_SCOPE_COMMUNITY:
		return nil, apierr.Invalid("external_issuer", "is required with an origin scope beyond the community")
	case req.GetExternalIssuer() != "" && scope <= recognitionv1.Scope_SCOPE_COMMUNITY:
		return nil, apierr.Invalid("origin_scope", "must be SCOPE_CITY or SCOPE_PROVINCE for an external issuer")
	case scope == recognitionv1.Scope_SCOPE_UNSPECIFIED:
		scope = recognitionv1.Scope_SCOPE_COMMUNITY
	}
	r, err := s.rulesOf(ctx, p)
	if err != nil {
		return nil, err
	}
	it, err := r.item("item", req.GetItem())
	if err != nil {
		return nil, err
	}
	if err := s.treating(ctx, c, "patient", req.GetPatient()); err != nil {
		return nil, err
	}
	level, err := s.levelOf(ctx, c.Community, c.Facility)
	if err != nil {
		return nil, err
	}
	const source = "member"
	e := &recognitionv1.Result{
		Name:            results.Name(resultID(req.GetPatient(), source, c.Facility, req.GetReport(), req.GetItem())),
		Patient:         req.GetPatient(),
		Item:            req.GetItem(),
		Display:         it.GetDisplayName(),
		IssuingFacility: c.Facility,
		IssuerLevel:     level,
		OriginScope:     scope,
		ExternalIssuer:  req.GetExternalIssuer(),
		ReportTime:      req.GetReportTime(),
		Summary:         req.GetSummary(),
		Source:          source,
		Report:          req.GetReport(),
		ReportVersion:   req.GetReportVersion(),
		CatalogVersion:  r.catalogVersion,
	}
	var out *recognitionv1.Result
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		changed, err := s.apply(tx, c, now, change{entry: e, emit: true})
		if err != nil {
			return err
		}
		cur, _, _, err := getResult(tx.Get, e.GetName())
		if err != nil {
			return err
		}
		if !changed && cur.GetReportVersion() != e.GetReportVersion() {
			return apierr.Condition("STALE_VERSION", "%s is at report version %d; publish a higher version to amend it", cur.GetName(), cur.GetReportVersion())
		}
		out = cur
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &recognitionv1.PublishResultResponse{Result: out}, nil
}

// GetResult returns an entry to its issuer, to a facility treating the
// patient, and to administrators, auditors and services.
func (s *Service) GetResult(ctx context.Context, req *recognitionv1.GetResultRequest) (*recognitionv1.GetResultResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	e, err := s.loadResult(ctx, p, req.GetName())
	if err != nil {
		return nil, err
	}
	if !seesAll(c) && c.Facility != e.GetIssuingFacility() {
		if err := s.treating(ctx, c, "name", e.GetPatient()); err != nil {
			return nil, notFound(req.GetName())
		}
	}
	return &recognitionv1.GetResultResponse{Result: e}, nil
}

// WithdrawResult withdraws an entry for its issuer.
func (s *Service) WithdrawResult(ctx context.Context, req *recognitionv1.WithdrawResultRequest) (*recognitionv1.WithdrawResultResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	var out *recognitionv1.Result
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		e, _, version, err := getResult(tx.Get, req.GetName())
		if err != nil {
			return err
		}
		if !c.SeesCommunity() && c.Facility != e.GetIssuingFacility() {
			return fmt.Errorf("only the issuing facility %s may withdraw %s: %w", e.GetIssuingFacility(), req.GetName(), apierr.ErrPermissionDenied)
		}
		if err := resource.CheckEtag(req.GetName(), req.GetEtag(), version); err != nil {
			return err
		}
		if err := s.resultM.Check(e.GetState(), recognitionv1.Result_STATE_WITHDRAWN); err != nil {
			return err
		}
		if _, err := s.apply(tx, c, now, change{entry: e, withdraw: true, reason: req.GetReason(), emit: true}); err != nil {
			return err
		}
		out, _, _, err = getResult(tx.Get, req.GetName())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &recognitionv1.WithdrawResultResponse{Result: out}, nil
}
