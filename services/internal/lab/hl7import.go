package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	"github.com/countymcc/mcc/services/internal/lab/hl7"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// Messages that could not be imported are kept at hl7/{id} for review.
// They may identify the patient (PID), so their events carry no raw text.
var hl7Messages = resource.Table[*labv1.Hl7Message]{
	Collection: "hl7Messages",
	Prefix:     "hl7/",
	New:        func() *labv1.Hl7Message { return &labv1.Hl7Message{} },
	Event:      "hl7Message",
	Facilities: func(m *labv1.Hl7Message) []string { return []string{m.GetLabFacility()} },
}

// supportedVersions are the HL7 v2 versions whose ORU^R01 we read: the
// OBR/OBX fields used here are the same in all of them.
func supportedVersions() []string {
	return []string{"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"}
}

// HL7 error codes (table 0357) used in ERR segments.
const (
	errSegmentSequence    = "100"
	errRequiredField      = "101"
	errDataType           = "102"
	errUnsupportedType    = "200"
	errUnsupportedVersion = "203"
	errUnknownKey         = "204"
	errApplication        = "207"
)

// importError is one reason a message was not imported.
type importError struct{ code, text string }

// observation is one OBX of a message.
type observation struct {
	input    *labv1.ResultInput
	reported reported
}

// group is one OBR with its OBX segments.
type group struct {
	index          int
	placer, filler string
	obs            []observation
}

// ImportHl7Message imports an ORU^R01 message for the caller's lab center.
func (s *Service) ImportHl7Message(ctx context.Context, req *labv1.ImportHl7MessageRequest) (*labv1.ImportHl7MessageResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	return s.importHL7(ctx, c, []byte(req.GetMessage()))
}

// importHL7 imports one message for the lab center c.Facility: AA when its
// results were entered, AE when the message was understood but not
// imported, AR when it was refused. AE and AR messages are kept for review
// before the ACK is returned. An error is returned only when the store
// failed, in which case nothing was kept and the sender must retry.
func (s *Service) importHL7(ctx context.Context, c auth.Caller, raw []byte) (*labv1.ImportHl7MessageResponse, error) {
	now := s.clock.Now()
	msg, perr := hl7.Parse(raw)
	var msh *hl7.Segment
	if perr == nil {
		msh = msg.Segment("MSH")
	}
	kept := &labv1.Hl7Message{Raw: string(raw), LabFacility: c.Facility, ReceiveTime: timestamppb.New(now)}
	if msh != nil {
		kept.SendingApplication = msh.Get(3, 1)
		kept.SendingFacility = msh.Get(4, 1)
		kept.MessageType = msh.Field(9).Text(msg.Delimiters)
		kept.ControlId = msh.Get(10, 1)
		kept.Version = msh.Get(12, 1)
	}
	if perr != nil {
		return s.refuse(ctx, c, now, kept, labv1.AckCode_ACK_CODE_AR, []importError{{errSegmentSequence, perr.Error()}})
	}
	if errs := checkHeader(kept); len(errs) > 0 {
		return s.refuse(ctx, c, now, kept, labv1.AckCode_ACK_CODE_AR, errs)
	}
	groups, errs := readGroups(msg)
	if len(errs) > 0 {
		return s.refuse(ctx, c, now, kept, labv1.AckCode_ACK_CODE_AE, errs)
	}
	barcodes, errs, err := s.match(ctx, c, groups)
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return s.refuse(ctx, c, now, kept, labv1.AckCode_ACK_CODE_AE, errs)
	}
	var names []string
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		names = names[:0]
		for i, g := range groups {
			r, err := s.enterImported(tx, c, now, barcodes[i], g)
			if err != nil {
				return fmt.Errorf("OBR %d: %w", g.index, err)
			}
			names = append(names, r.GetName())
		}
		return nil
	})
	if isDomain(err) {
		return s.refuse(ctx, c, now, kept, labv1.AckCode_ACK_CODE_AE, []importError{{errApplication, err.Error()}})
	}
	if err != nil {
		return nil, err
	}
	return &labv1.ImportHl7MessageResponse{
		Ack: ack(msh, c, now, labv1.AckCode_ACK_CODE_AA, nil), AckCode: labv1.AckCode_ACK_CODE_AA, Reports: names,
	}, nil
}

// isDomain reports whether err is about the message's content, not the
// store: such a message gets AE.
func isDomain(err error) bool {
	return errors.Is(err, apierr.ErrInvalidArgument) || errors.Is(err, apierr.ErrFailedPrecondition) ||
		errors.Is(err, apierr.ErrPermissionDenied) || errors.Is(err, store.ErrNotFound)
}

// checkHeader checks MSH: a message type of ORU^R01 and a supported
// version, and the fields every message has.
func checkHeader(m *labv1.Hl7Message) []importError {
	var errs []importError
	for _, f := range []struct{ name, value string }{{"MSH-9 (message type)", m.GetMessageType()}, {"MSH-10 (control ID)", m.GetControlId()}, {"MSH-12 (version)", m.GetVersion()}} {
		if f.value == "" {
			errs = append(errs, importError{errRequiredField, f.name + " is missing: the message is truncated or incomplete"})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if t := strings.Split(m.GetMessageType(), "^"); len(t) < 2 || t[0] != "ORU" || t[1] != "R01" {
		errs = append(errs, importError{errUnsupportedType, fmt.Sprintf("message type %s is not ORU^R01", m.GetMessageType())})
	}
	if !slices.Contains(supportedVersions(), m.GetVersion()) {
		errs = append(errs, importError{errUnsupportedVersion, fmt.Sprintf("HL7 version %q is not supported (supported: %s)", m.GetVersion(), strings.Join(supportedVersions(), ", "))})
	}
	return errs
}

// readGroups reads the OBR groups and their numeric OBX results.
func readGroups(m *hl7.Message) ([]group, []importError) {
	var groups []group
	var errs []importError
	for _, seg := range m.Segments {
		switch seg.Name {
		case "OBR":
			groups = append(groups, group{index: len(groups) + 1, placer: seg.Get(2, 1), filler: seg.Get(3, 1)})
		case "OBX":
			if len(groups) == 0 {
				errs = append(errs, importError{errSegmentSequence, "OBX before any OBR"})
				continue
			}
			g := &groups[len(groups)-1]
			ob, err := readOBX(seg, len(g.obs)+1)
			if err != nil {
				errs = append(errs, *err)
				continue
			}
			g.obs = append(g.obs, ob)
		}
	}
	if len(groups) == 0 {
		errs = append(errs, importError{errSegmentSequence, "no OBR segment: the message is truncated or carries no order"})
	}
	for _, g := range groups {
		if len(g.obs) == 0 {
			errs = append(errs, importError{errSegmentSequence, fmt.Sprintf("OBR %d has no OBX result: the message may be truncated", g.index)})
		}
		if g.placer == "" && g.filler == "" {
			errs = append(errs, importError{errRequiredField, fmt.Sprintf("OBR %d names neither an order (OBR-2) nor a specimen barcode (OBR-3)", g.index)})
		}
	}
	return groups, errs
}

func readOBX(seg *hl7.Segment, n int) (observation, *importError) {
	code := seg.Get(3, 1)
	where := fmt.Sprintf("OBX %d (%s)", n, code)
	switch {
	case code == "":
		return observation{}, &importError{errRequiredField, where + ": OBX-3 (observation identifier) is missing"}
	case seg.Get(2, 1) != "NM":
		return observation{}, &importError{errDataType, fmt.Sprintf("%s: value type %q; only numeric (NM) results are imported", where, seg.Get(2, 1))}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(seg.Get(5, 1)), 64)
	if err != nil {
		return observation{}, &importError{errDataType, fmt.Sprintf("%s: OBX-5 %q is not a number", where, seg.Get(5, 1))}
	}
	unit := seg.Get(6, 1)
	if unit == "" {
		return observation{}, &importError{errRequiredField, where + ": OBX-6 (units) is missing"}
	}
	return observation{
		input:    &labv1.ResultInput{Code: code, Value: v, Unit: unit},
		reported: reported{rangeText: seg.Get(7, 1), flag: seg.Field(8).Value()},
	}, nil
}

// match finds the specimen of each group: by barcode (OBR-3), or by order
// (OBR-2) as the order's open specimen that carries the group's tests. It
// reads outside the import transaction, which checks the specimen again.
func (s *Service) match(ctx context.Context, c auth.Caller, groups []group) ([]string, []importError, error) {
	p := c.Partition()
	barcodes := make([]string, len(groups))
	var errs []importError
	for i, g := range groups {
		if g.filler != "" {
			barcodes[i] = g.filler
			continue
		}
		order := orders.Name(strings.TrimPrefix(g.placer, orders.Collection+"/"))
		prefix := orderSpecimensPrefix(order)
		_, err := paging.Scan(ctx, s.store, p, prefix, "", paging.Max, func(rec store.Record) (bool, error) {
			sp, err := specimens.Load(ctx, s.store, p, specimens.Name(strings.TrimPrefix(rec.Key, prefix)))
			if err != nil {
				return false, err
			}
			open := sp.GetState() == labv1.Specimen_STATE_RECEIVED || sp.GetState() == labv1.Specimen_STATE_IN_TESTING
			if open && barcodes[i] == "" && carries(sp, g) {
				barcodes[i] = specimens.ID(sp.GetName())
			}
			return true, nil
		})
		if err != nil {
			return nil, nil, err
		}
		if barcodes[i] == "" {
			errs = append(errs, importError{errUnknownKey, fmt.Sprintf("OBR %d: no open specimen of order %q carries its tests", g.index, g.placer)})
		}
	}
	return barcodes, errs, nil
}

func carries(sp *labv1.Specimen, g group) bool {
	for _, ob := range g.obs {
		if !slices.Contains(sp.GetTests(), ob.input.GetCode()) {
			return false
		}
	}
	return true
}

// enterImported enters a group's results into its specimen's preliminary
// report, starting the testing of a received specimen.
func (s *Service) enterImported(tx store.Tx, c auth.Caller, now time.Time, barcode string, g group) (*labv1.Report, error) {
	sp, version, err := specimens.Get(tx, specimens.Name(barcode))
	if err != nil || sp.GetLabFacility() != c.Facility {
		return nil, fmt.Errorf("no specimen %q at this lab center: %w", barcode, store.ErrNotFound)
	}
	if sp.GetState() == labv1.Specimen_STATE_RECEIVED {
		if err := s.specimenM.Apply(sp, labv1.Specimen_STATE_IN_TESTING, c, now, "HL7 result import"); err != nil {
			return nil, err
		}
		if err := specimens.Update(tx, sp, version); err != nil {
			return nil, err
		}
		if err := events.Append(tx, c, now, specimens.Change(specimens.Event+".in_testing", sp, version+1)); err != nil {
			return nil, err
		}
	}
	inputs := make([]*labv1.ResultInput, len(g.obs))
	extra := map[string]reported{}
	for i, ob := range g.obs {
		inputs[i] = ob.input
		extra[ob.input.GetCode()] = ob.reported
	}
	return s.enter(tx, c, now, barcode, "", inputs, extra, fmt.Sprintf("OBR[%d].OBX", g.index))
}

// refuse keeps a message that was not imported and answers it.
func (s *Service) refuse(ctx context.Context, c auth.Caller, now time.Time, m *labv1.Hl7Message, code labv1.AckCode, errs []importError) (*labv1.ImportHl7MessageResponse, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	m.Name = hl7Messages.Name(id.String())
	m.AckCode = code
	for _, e := range errs {
		m.Errors = append(m.Errors, e.text)
	}
	resource.Stamp(m, now, true)
	err = s.store.Txn(ctx, c.Partition(), func(tx store.Tx) error {
		stored := proto.CloneOf(m)
		if err := hl7Messages.Create(tx, stored); err != nil {
			return err
		}
		snapshot := proto.CloneOf(stored)
		snapshot.Raw = ""
		change := hl7Messages.Change(hl7Messages.Event+".kept", snapshot, 1)
		return events.Append(tx, c, now, change)
	})
	if err != nil {
		return nil, err
	}
	var msh *hl7.Segment
	if parsed, err := hl7.Parse([]byte(m.GetRaw())); err == nil {
		msh = parsed.Segment("MSH")
	}
	return &labv1.ImportHl7MessageResponse{Ack: ack(msh, c, now, code, errs), AckCode: code, Kept: m.GetName(), Errors: m.GetErrors()}, nil
}

// ack builds the ACK of a message whose MSH is msh (nil when it could not
// be read).
func ack(msh *hl7.Segment, c auth.Caller, now time.Time, code labv1.AckCode, errs []importError) string {
	version := msh.Get(12, 1)
	if !slices.Contains(supportedVersions(), version) {
		version = "2.5.1"
	}
	control := msh.Get(10, 1)
	text := "results entered"
	if len(errs) > 0 {
		text = errs[0].text
	}
	m := &hl7.Message{Delimiters: hl7.Standard, Segments: []*hl7.Segment{
		{Name: "MSH", Fields: []hl7.Field{
			hl7.NewField("|"), hl7.NewField("^~\\&"), hl7.NewField("MCC-LAB"), hl7.NewField(facilityID(c.Facility)),
			hl7.NewField(msh.Get(3, 1)), hl7.NewField(msh.Get(4, 1)), hl7.NewField(now.In(cst()).Format("20060102150405")), nil,
			hl7.NewField("ACK", "R01", "ACK"), hl7.NewField("ACK" + strconv.FormatInt(now.UnixNano(), 36)), hl7.NewField("P"), hl7.NewField(version),
		}},
		{Name: "MSA", Fields: []hl7.Field{hl7.NewField(strings.TrimPrefix(code.String(), "ACK_CODE_")), hl7.NewField(control), hl7.NewField(text)}},
	}}
	for _, e := range errs {
		m.Segments = append(m.Segments, &hl7.Segment{Name: "ERR", Fields: []hl7.Field{
			nil, nil, hl7.NewField(e.code, "", "HL70357"), hl7.NewField("E"), nil, nil, nil, hl7.NewField(e.text),
		}})
	}
	return string(m.Encode())
}

// GetHl7Message returns a kept message of the caller's lab center.
func (s *Service) GetHl7Message(ctx context.Context, req *labv1.GetHl7MessageRequest) (*labv1.GetHl7MessageResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := hl7Messages.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	if !c.SeesCommunity() && m.GetLabFacility() != c.Facility {
		return nil, notFound(req.GetName())
	}
	return &labv1.GetHl7MessageResponse{Message: m}, nil
}

// ListHl7Messages lists the kept messages of the caller's lab center,
// oldest first.
func (s *Service) ListHl7Messages(ctx context.Context, req *labv1.ListHl7MessagesRequest) (*labv1.ListHl7MessagesResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := hl7Messages.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), c.Facility, func(m *labv1.Hl7Message) bool {
		return c.SeesCommunity() || m.GetLabFacility() == c.Facility
	})
	if err != nil {
		return nil, err
	}
	return &labv1.ListHl7MessagesResponse{Messages: list, NextPageToken: next}, nil
}
