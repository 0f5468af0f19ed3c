package recognition_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	imagingv1 "github.com/countymcc/mcc/proto/mcc/imaging/v1"
	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/imaging"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/recognition"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	"github.com/countymcc/mcc/services/internal/store/redis"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

const (
	community = "urad"
	elsewhere = "bayan"
)

// t0 is 09:00 in Urad Middle Banner (UTC+8).
var t0 = time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)

var (
	clinician = typev1.Role_ROLE_CLINICIAN
	tech      = typev1.Role_ROLE_LAB_TECHNOLOGIST
	admin     = typev1.Role_ROLE_ADMIN
)

// center is a fake center's event feed: the events a test appends, served
// over gRPC as the lab's or imaging's WatchEvents with cursors "1", "2", ...
type center struct {
	mu      sync.Mutex
	events  []*typev1.Event
	changed chan struct{}
	// afters are the cursors streams were opened after.
	afters []string
	// down makes the center refuse every stream.
	down bool
}

func newCenter() *center { return &center{changed: make(chan struct{})} }

// add appends events; each gets the next cursor.
func (c *center) add(evs ...*typev1.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		ev = proto.CloneOf(ev)
		ev.Cursor = strconv.Itoa(len(c.events) + 1)
		c.events = append(c.events, ev)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *center) watch(ctx context.Context, after string, send func(*typev1.Event) error) error {
	c.mu.Lock()
	c.afters = append(c.afters, after)
	down := c.down
	c.mu.Unlock()
	if down {
		return status.Error(codes.Unavailable, "center down")
	}
	next := 0
	if after != "" {
		n, err := strconv.Atoi(after)
		if err != nil {
			return err
		}
		next = n
	}
	for {
		c.mu.Lock()
		pending := c.events[min(next, len(c.events)):]
		wait, down := c.changed, c.down
		c.mu.Unlock()
		if down {
			return status.Error(codes.Unavailable, "center down")
		}
		for _, ev := range pending {
			if err := send(ev); err != nil {
				return err
			}
			next++
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		}
	}
}

type fakeLab struct {
	labv1.UnimplementedLabServiceServer
	*center
}

func (f fakeLab) WatchEvents(req *labv1.WatchEventsRequest, stream grpc.ServerStreamingServer[labv1.WatchEventsResponse]) error {
	return f.watch(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&labv1.WatchEventsResponse{Event: ev})
	})
}

type fakeImaging struct {
	imagingv1.UnimplementedImagingServiceServer
	*center
}

func (f fakeImaging) WatchEvents(req *imagingv1.WatchEventsRequest, stream grpc.ServerStreamingServer[imagingv1.WatchEventsResponse]) error {
	return f.watch(stream.Context(), req.GetAfter(), func(ev *typev1.Event) error {
		return stream.Send(&imagingv1.WatchEventsResponse{Event: ev})
	})
}

// swappable lets a restarted service take the place of the first one.
type swappable struct {
	recognitionv1.RecognitionServiceServer
}

// fixture runs the directory, a fake lab and a fake imaging center and the
// recognition service on one test gRPC server, each service on its own
// bolt store, with a manual clock.
type fixture struct {
	*servertest.Env
	rec       recognitionv1.RecognitionServiceClient
	dir       directoryv1.DirectoryServiceClient
	lab       *center
	imaging   *center
	slot      *swappable
	svc       *recognition.Service
	st        store.Store
	path      string
	peers     *peer.Peers
	stop      context.CancelFunc
	done      chan struct{}
	cfg       recognition.Config
	openStore func(t testing.TB, path string) store.Store
	// batu and qiqige are treated at dls; wuyun only at wjh; nara is a
	// patient of another community.
	batu, qiqige, wuyun, nara string
}

// backend starts a store for a fixture and returns how to open it; the
// opener is called again on every restart.
type backend struct {
	name  string
	start func(t testing.TB) func(t testing.TB, path string) store.Store
}

// backends are the two stores: bolt in a temporary directory, and a
// private redis-server (skipped where redis-server is missing, unless
// MCC_TEST_REQUIRE_REDIS=1).
func backends() []backend {
	return []backend{
		{name: "bolt", start: func(testing.TB) func(testing.TB, string) store.Store {
			return func(t testing.TB, path string) store.Store {
				st, err := bolt.Open(path, bolt.Options{})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
		}},
		{name: "redis", start: func(t testing.TB) func(testing.TB, string) store.Store {
			client := goredis.NewClient(&goredis.Options{Addr: redistest.Start(t)})
			t.Cleanup(func() { client.Close() })
			prefix := redistest.Prefix(t)
			return func(t testing.TB, _ string) store.Store {
				st, err := redis.New(client, redis.Options{Prefix: prefix, Service: recognition.Name})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
		}},
	}
}

// onEveryStore runs test on a fixture of each backend.
func onEveryStore(t *testing.T, test func(t *testing.T, f *fixture)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { test(t, newFixtureOn(t, b)) })
	}
}

func newFixture(t testing.TB) *fixture { return newFixtureOn(t, backends()[0]) }

func newFixtureOn(t testing.TB, b backend) *fixture {
	t.Helper()
	dirStore, err := bolt.Open(filepath.Join(t.TempDir(), "directory.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dirStore.Close() })
	prot, err := pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(t0)
	dir := directory.New(dirStore, prot, clk)
	f := &fixture{
		openStore: b.start(t),
		lab:       newCenter(), imaging: newCenter(), slot: &swappable{}, path: filepath.Join(t.TempDir(), "recognition.db"),
		cfg: recognition.Config{Communities: community, RetryMax: 20 * time.Millisecond, AccessTTL: time.Minute},
	}
	policy := directory.Policy()
	policy.Merge(recognition.Policy())
	policy.Merge(lab.Policy())
	policy.Merge(imaging.Policy())
	f.Env = servertest.Start(t, clk, policy, func(s *grpc.Server) {
		dir.Register(s)
		labv1.RegisterLabServiceServer(s, fakeLab{center: f.lab})
		imagingv1.RegisterImagingServiceServer(s, fakeImaging{center: f.imaging})
		recognitionv1.RegisterRecognitionServiceServer(s, f.slot)
	})
	f.rec = recognitionv1.NewRecognitionServiceClient(f.Conn)
	f.dir = directoryv1.NewDirectoryServiceClient(f.Conn)
	f.peers = peer.New(recognition.Name, f.Keys, clk, map[string]*grpc.ClientConn{directory.Name: f.Conn, "lab": f.Conn, "imaging": f.Conn})
	f.community(t)
	f.open(t)
	return f
}

// open opens the store and starts the service, as a start of mcc does.
func (f *fixture) open(t testing.TB) {
	t.Helper()
	st := f.openStore(t, f.path)
	svc, err := recognition.New(recognition.Deps{Store: st, Clock: f.Clock, Peers: f.peers, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.st, f.svc = st, svc
	f.slot.RecognitionServiceServer = svc
	ctx, stop := context.WithCancel(context.Background())
	f.stop, f.done = stop, make(chan struct{})
	go func() {
		defer close(f.done)
		svc.Run(ctx)
	}()
	t.Cleanup(f.close)
}

// close stops the service and closes its store, once.
func (f *fixture) close() {
	if f.stop == nil {
		return
	}
	f.stop()
	<-f.done
	f.st.Close()
	f.stop = nil
}

// restart stops the service and opens it again on the same file.
func (f *fixture) restart(t testing.TB) {
	t.Helper()
	f.close()
	f.open(t)
}

// community builds a county hospital with the centers, two township
// centers, a village clinic, and patients; and a patient of another
// community.
func (f *fixture) community(t testing.TB) {
	t.Helper()
	ctx := f.As(t, community, "qrmyy", admin)
	for _, req := range []*directoryv1.CreateFacilityRequest{
		{FacilityId: "qrmyy", Facility: &directoryv1.Facility{DisplayName: "乌拉特中旗人民医院", Level: typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL}},
		{FacilityId: "dls", Facility: &directoryv1.Facility{DisplayName: "德岭山中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
		{FacilityId: "wjh", Facility: &directoryv1.Facility{DisplayName: "乌加河中心卫生院", Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER, Parent: "facilities/qrmyy"}},
		{FacilityId: "cun", Facility: &directoryv1.Facility{DisplayName: "嘎查卫生室", Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC, Parent: "facilities/dls"}},
	} {
		if _, err := f.dir.CreateFacility(ctx, req); err != nil {
			t.Fatalf("create %s: %v", req.GetFacilityId(), err)
		}
	}
	register := func(ctx context.Context, id, name string) string {
		resp, err := f.dir.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{ResidentId: directory.WithCheckDigit(id), DisplayName: name})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetPatient().GetName()
	}
	f.batu = register(f.doctor(t), "15082419580314201", "巴特尔")
	f.qiqige = register(f.doctor(t), "15082419670821302", "其其格")
	register(f.As(t, community, "cun", clinician), "15082419670821302", "其其格")
	f.wuyun = register(f.As(t, community, "wjh", clinician), "15082420120916202", "乌云")
	f.nara = register(f.As(t, elsewhere, "bym", clinician), "15082419900101301", "娜拉")
}

// The people of the tests.
func (f *fixture) doctor(t testing.TB) context.Context { return f.As(t, community, "dls", clinician) }
func (f *fixture) county(t testing.TB) context.Context { return f.As(t, community, "qrmyy", tech) }
func (f *fixture) admin(t testing.TB) context.Context  { return f.As(t, community, "qrmyy", admin) }

// labReport is a lab report event of the county lab for patient, with
// one result per code (value 4.2).
func labReport(t testing.TB, typ, barcode, patient string, version int32, released time.Time, codes ...string) *typev1.Event {
	t.Helper()
	r := &labv1.Report{
		Name: "reports/" + barcode, Patient: patient, RequestingFacility: "facilities/dls", LabFacility: "facilities/qrmyy",
		State: labv1.Report_STATE_FINAL, Version: version, VerifyTime: timestamppb.New(released),
	}
	if version > 1 {
		r.State = labv1.Report_STATE_AMENDED
		r.History = []*labv1.ReportVersion{{Version: 1, VerifyTime: timestamppb.New(released)}}
		r.VerifyTime = timestamppb.New(released.Add(time.Hour))
	}
	for _, code := range codes {
		r.Results = append(r.Results, &labv1.Result{Code: code, Value: 4.2 + float64(version-1), Unit: "mmol/L", Flag: labv1.Flag_FLAG_N})
	}
	return event(t, typ, r.GetName(), r)
}

// examReport is an imaging report event of the county's imaging center.
func examReport(t testing.TB, typ, id, patient, examType string, version int32, final time.Time) *typev1.Event {
	t.Helper()
	r := &typev1.ExamReport{
		Name: "reports/" + id, Exam: "exams/" + id, Center: typev1.Center_CENTER_IMAGING, Patient: patient,
		ExamType: &typev1.Code{System: "urn:mcc:exam-type", Code: examType}, RequestingFacility: "facilities/dls",
		CenterFacility: "facilities/qrmyy", State: typev1.Exam_STATE_FINAL, Version: version, FinalTime: timestamppb.New(final),
		Content: &typev1.ReportContent{Results: []*typev1.Code{{Code: "NORMAL", Display: "未见异常 normal"}}},
	}
	return event(t, typ, r.GetName(), r)
}

func event(t testing.TB, typ, resource string, snapshot proto.Message) *typev1.Event {
	t.Helper()
	ev, err := eventOf(typ, resource, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func eventOf(typ, resource string, snapshot proto.Message) (*typev1.Event, error) {
	any, err := anypb.New(snapshot)
	if err != nil {
		return nil, err
	}
	return &typev1.Event{Id: typ + "/" + resource + "/" + strconv.Itoa(int(time.Now().UnixNano())), Type: typ, Resource: resource, Snapshot: any}, nil
}

// waitIndexed waits until the source has taken its cursor to cursor.
func (f *fixture) waitIndexed(t testing.TB, source, cursor string) *recognitionv1.Source {
	t.Helper()
	// Benchmarks wait for many thousands of events on a busy machine.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := f.rec.ListSources(f.admin(t), &recognitionv1.ListSourcesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range resp.GetSources() {
			if s.GetName() == "sources/"+source && s.GetCursor() == cursor {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach cursor %s: %v", source, cursor, resp.GetSources())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// check checks items for patient as the dls doctor.
func (f *fixture) check(t testing.TB, patient string, items ...string) *recognitionv1.CheckRecognitionResponse {
	t.Helper()
	resp, err := f.rec.CheckRecognition(f.doctor(t), &recognitionv1.CheckRecognitionRequest{Patient: patient, Items: items, Purpose: "outpatient order"})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

var protoUnmarshal = proto.UnmarshalOptions{}
