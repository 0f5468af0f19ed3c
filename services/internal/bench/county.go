package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// county is the community the load plays in: one county hospital (hub)
// hosting the lab, imaging and ECG centers, and N township health centers,
// each with its registered patients and a clinician. Tokens are issued with
// the community's signing key, as `mcc token` does.
type county struct {
	http    *http.Client
	baseURL string
	lab     labv1.LabServiceClient
	rec     *Recorder
	run     string // makes barcodes and request IDs unique to this run
	seq     atomic.Int64

	patients int // per town

	admin, labEntry, labVerify, hubClinician string
	towns                                    []town
}

// town is one township health center.
type town struct {
	id, clinician string
	// patients are the town's registered patients; each scenario picks
	// one, so that results and checks spread as over a real population.
	patients []string
	// feedCursor is the facility's feed position, polled by one client at
	// a time.
	mu         sync.Mutex
	feedCursor string
}

const hub = "bhub"

func newCounty(srv *server, conn *grpc.ClientConn, hc *http.Client, facilities, patients int, rec *Recorder) (*county, error) {
	keys, _, err := auth.LoadKeys(filepath.Join(srv.dataDir, "signing.key"), false, clock.System{})
	if err != nil {
		return nil, fmt.Errorf("signing key of the server: %w", err)
	}
	issue := func(subject, facility string, role typev1.Role) (string, error) {
		return keys.Issue(auth.Caller{Subject: subject, Community: "demo", Facility: "facilities/" + facility, Roles: []typev1.Role{role}}, 24*time.Hour)
	}
	c := &county{patients: patients, http: hc, baseURL: srv.httpURL, lab: labv1.NewLabServiceClient(conn), rec: rec, run: fmt.Sprintf("%x", time.Now().UnixNano()%0xffffff)}
	for _, t := range []struct {
		dst     *string
		subject string
		facilty string
		role    typev1.Role
	}{
		{&c.admin, "bench-admin", hub, typev1.Role_ROLE_ADMIN},
		{&c.labEntry, "bench-lab-wang", hub, typev1.Role_ROLE_LAB_TECHNOLOGIST},
		{&c.labVerify, "bench-lab-liu", hub, typev1.Role_ROLE_LAB_TECHNOLOGIST},
		{&c.hubClinician, "bench-doc-hub", hub, typev1.Role_ROLE_CLINICIAN},
	} {
		if *t.dst, err = issue(t.subject, t.facilty, t.role); err != nil {
			return nil, err
		}
	}
	c.towns = make([]town, facilities)
	for i := range c.towns {
		c.towns[i].id = fmt.Sprintf("bt%04d", i)
		if c.towns[i].clinician, err = issue("bench-doc-"+c.towns[i].id, c.towns[i].id, typev1.Role_ROLE_CLINICIAN); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// setup creates the facilities and patients; what exists already (a second
// run against the same server) is kept.
func (c *county) setup(ctx context.Context) error {
	err := c.do(ctx, "", "POST", "/v1/facilities?facility_id="+hub, c.admin, `{"displayName":"县人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`, nil)
	if err != nil && !isConflict(err) {
		return fmt.Errorf("hub: %w", err)
	}
	for i := range c.towns {
		t := &c.towns[i]
		body := fmt.Sprintf(`{"displayName":"乡镇卫生院 %d","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/%s",
			"centers":[{"center":"CENTER_LAB","facility":"facilities/%[2]s"},{"center":"CENTER_IMAGING","facility":"facilities/%[2]s"},{"center":"CENTER_ECG","facility":"facilities/%[2]s"}]}`, i, hub)
		if err := c.do(ctx, "", "POST", "/v1/facilities?facility_id="+t.id, c.admin, body, nil); err != nil && !isConflict(err) {
			return fmt.Errorf("facility %s: %w", t.id, err)
		}
		t.patients = t.patients[:0]
		for j := range c.patients {
			var reg struct {
				Patient struct{ Name string } `json:"patient"`
			}
			// A resident ID number of the banner (150824), born on a
			// day of its own, with a valid check digit.
			born := time.Date(1940, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i*c.patients+j)
			rid := directory.WithCheckDigit(fmt.Sprintf("150824%s%03d", born.Format("20060102"), (i*c.patients+j)%1000))
			if err := c.do(ctx, "", "POST", "/v1/patients:register", t.clinician, fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, rid), &reg); err != nil {
				return fmt.Errorf("patient of %s: %w", t.id, err)
			}
			t.patients = append(t.patients, reg.Patient.Name)
		}
	}
	return nil
}

// httpError is a REST call's non-2xx answer.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

func isConflict(err error) bool {
	he, ok := err.(*httpError)
	return ok && he.status == http.StatusConflict
}

// do makes one REST call and, if op is not empty, records it. out, if not
// nil, receives the JSON answer.
func (c *county) do(ctx context.Context, op, method, path, token, body string, out any) error {
	start := time.Now()
	err := c.call(ctx, method, path, token, body, out)
	if op != "" {
		c.rec.Record("rest "+op, time.Since(start), err)
	}
	return err
}

func (c *county) call(ctx context.Context, method, path, token, body string, out any) error {
	return c.callURL(ctx, method, c.baseURL+path, token, body, out)
}

func (c *county) callURL(ctx context.Context, method, url, token, body string, out any) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &httpError{status: resp.StatusCode, body: string(bytes.TrimSpace(data[:min(len(data), 300)]))}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// grpcCall records one gRPC call.
func (c *county) grpcCall(op string, fn func() error) error {
	start := time.Now()
	err := fn()
	c.rec.Record("grpc "+op, time.Since(start), err)
	return err
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func (c *county) town() *town { return &c.towns[rand.IntN(len(c.towns))] }

// patient is one of the town's patients.
func (t *town) patient() string { return t.patients[rand.IntN(len(t.patients))] }

func (c *county) next() string { return fmt.Sprintf("%s%07d", c.run, c.seq.Add(1)) }

// labTests are the tests of every bench order: potassium and sodium, with
// normal results, so no critical-value loop starts.
var labTests = []string{"2823-3", "2951-2"}

// orderJSON is the REST body of a lab order of patient; orderProto is the
// same order for gRPC. The baseline echoes messages of the same size.
func orderJSON(patient string) string {
	return fmt.Sprintf(`{"patient":%q,"tests":["2823-3","2951-2"],"priority":"PRIORITY_ROUTINE","clinicalNote":"乏力三天，复查电解质"}`, patient)
}

func orderProto(patient string) *labv1.Order {
	return &labv1.Order{Patient: patient, Tests: labTests, Priority: labv1.Priority_PRIORITY_ROUTINE, ClinicalNote: "乏力三天，复查电解质"}
}

// createOrderREST places one order over REST and returns its name.
func (c *county) createOrderREST(ctx context.Context, t *town) (string, error) {
	var out struct {
		Order struct{ Name string } `json:"order"`
	}
	err := c.do(ctx, "lab.createOrder", "POST", "/v1/lab/orders?requestId="+c.next(), t.clinician, orderJSON(t.patient()), &out)
	return out.Order.Name, err
}

// createOrderGRPC places one order over gRPC and returns its name.
func (c *county) createOrderGRPC(ctx context.Context, t *town) (string, error) {
	var name string
	err := c.grpcCall("lab.createOrder", func() error {
		resp, err := c.lab.CreateOrder(withToken(ctx, t.clinician), &labv1.CreateOrderRequest{Order: orderProto(t.patient()), RequestId: c.next()})
		name = resp.GetOrder().GetName()
		return err
	})
	return name, err
}

// labREST plays one order from the township to a verified report over
// REST: order, collection, dispatch, reception, testing, entry by one
// technologist and verification by another.
func (c *county) labREST(ctx context.Context) error {
	t := c.town()
	order, err := c.createOrderREST(ctx, t)
	if err != nil {
		return err
	}
	bc := "B" + c.next()
	steps := []struct{ op, path, token, body string }{
		{"lab.createSpecimen", "/v1/lab/specimens?barcode=" + bc, t.clinician, fmt.Sprintf(`{"order":%q,"tests":["2823-3","2951-2"],"volumeMl":3}`, order)},
		{"lab.dispatchSpecimen", "/v1/lab/specimens/" + bc + ":dispatch", t.clinician, `{"courier":"物流 老张"}`},
		{"lab.receiveSpecimen", "/v1/lab/specimens/" + bc + ":receive", c.labEntry, `{"temperatureCelsius":12}`},
		{"lab.startTesting", "/v1/lab/specimens/" + bc + ":startTesting", c.labEntry, `{}`},
		{"lab.enterResults", "/v1/lab/reports/" + bc + ":enterResults", c.labEntry, `{"results":[{"code":"2823-3","value":4.1,"unit":"mmol/L"},{"code":"2951-2","value":139,"unit":"mmol/L"}]}`},
		{"lab.verifyReport", "/v1/lab/reports/" + bc + ":verify", c.labVerify, `{}`},
	}
	for _, s := range steps {
		if err := c.do(ctx, s.op, "POST", s.path, s.token, s.body, nil); err != nil {
			return err
		}
	}
	return nil
}

// labGRPC is labREST over gRPC.
func (c *county) labGRPC(ctx context.Context) error {
	t := c.town()
	order, err := c.createOrderGRPC(ctx, t)
	if err != nil {
		return err
	}
	bc := "G" + c.next()
	spec, rep := "specimens/"+bc, "reports/"+bc
	town, entry, verify := withToken(ctx, t.clinician), withToken(ctx, c.labEntry), withToken(ctx, c.labVerify)
	temp := 12.0
	steps := []struct {
		op string
		fn func() error
	}{
		{"lab.createSpecimen", func() error {
			_, err := c.lab.CreateSpecimen(town, &labv1.CreateSpecimenRequest{Barcode: bc, Specimen: &labv1.Specimen{Order: order, Tests: labTests, VolumeMl: 3}})
			return err
		}},
		{"lab.dispatchSpecimen", func() error {
			_, err := c.lab.DispatchSpecimen(town, &labv1.DispatchSpecimenRequest{Name: spec, Courier: "物流 老张"})
			return err
		}},
		{"lab.receiveSpecimen", func() error {
			_, err := c.lab.ReceiveSpecimen(entry, &labv1.ReceiveSpecimenRequest{Name: spec, TemperatureCelsius: &temp})
			return err
		}},
		{"lab.startTesting", func() error {
			_, err := c.lab.StartTesting(entry, &labv1.StartTestingRequest{Name: spec})
			return err
		}},
		{"lab.enterResults", func() error {
			_, err := c.lab.EnterResults(entry, &labv1.EnterResultsRequest{Name: rep, Results: []*labv1.ResultInput{
				{Code: "2823-3", Value: 4.1, Unit: "mmol/L"}, {Code: "2951-2", Value: 139, Unit: "mmol/L"}}})
			return err
		}},
		{"lab.verifyReport", func() error {
			_, err := c.lab.VerifyReport(verify, &labv1.VerifyReportRequest{Name: rep})
			return err
		}},
	}
	for _, s := range steps {
		if err := c.grpcCall(s.op, s.fn); err != nil {
			return err
		}
	}
	return nil
}

// ecg requests a 12-lead ECG reading.
func (c *county) ecg(ctx context.Context) error {
	t := c.town()
	body := fmt.Sprintf(`{"patient":%q,"examType":{"code":"ECG-12"},"priority":"EXAM_PRIORITY_ROUTINE","clinicalNote":"胸闷一周"}`, t.patient())
	return c.do(ctx, "ecg.createExam", "POST", "/v1/ecg/exams?requestId="+c.next(), t.clinician, body, nil)
}

// imaging requests the reading of a chest film; the study is checked in
// the PACS (the tool's own QIDO-RS stand-in when it started the server).
func (c *county) imaging(ctx context.Context) error {
	t := c.town()
	body := fmt.Sprintf(`{"patient":%q,"examType":{"code":"DX-CHEST"},"priority":"EXAM_PRIORITY_ROUTINE","clinicalNote":"咳嗽两周","study":{"studyInstanceUid":"2.25.%d"}}`, t.patient(), c.seq.Add(1))
	return c.do(ctx, "imaging.createExam", "POST", "/v1/imaging/exams?requestId="+c.next(), t.clinician, body, nil)
}

// referral sends an up-referral to the county hospital, which triages it
// (accepts it with an appointment).
func (c *county) referral(ctx context.Context) error {
	t := c.town()
	body := fmt.Sprintf(`{"direction":"DIRECTION_UP","patient":%q,"targetFacility":"facilities/%s","targetDepartment":"神经内科",
		"reason":"反复头晕","diagnosis":{"code":"I63.900x001","display":"脑梗死"},"urgency":"URGENCY_ROUTINE",
		"clinicalSummary":"高血压病史十年，近一周头晕加重。"}`, t.patient(), hub)
	var out struct {
		Referral struct{ Name, Etag string } `json:"referral"`
	}
	if err := c.do(ctx, "referral.create", "POST", "/v1/referrals?requestId="+c.next(), t.clinician, body, &out); err != nil {
		return err
	}
	accept := fmt.Sprintf(`{"etag":%q,"mode":"MODE_OUTPATIENT","department":"神经内科","appointmentTime":%q}`,
		out.Referral.Etag, time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339))
	return c.do(ctx, "referral.triage", "POST", "/v1/"+out.Referral.Name+":accept", c.hubClinician, accept, nil)
}

// feed polls a township's feed once, without waiting, from its cursor.
func (c *county) feed(ctx context.Context) error {
	t := c.town()
	if !t.mu.TryLock() {
		t = c.town() // another client polls that one; take any other
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	var out struct {
		NextCursor string `json:"nextCursor"`
	}
	if err := c.do(ctx, "feed.poll", "GET", "/v1/feed?pageSize=100&after="+url.QueryEscape(t.feedCursor), t.clinician, "", &out); err != nil {
		return err
	}
	if out.NextCursor != "" {
		t.feedCursor = out.NextCursor
	}
	return nil
}

// recognitionItems are what a township clinician is about to order: the
// electrolytes and MCV the lab scenarios report, a chest film and an ECG.
const recognitionItems = `["2823-3","2951-2","787-2","DX-CHEST","ECG-12"]`

// recognition asks, before ordering, which of five items have a result of
// the patient that can be used instead (结果互认); the lab scenarios'
// verified reports feed the registry meanwhile.
func (c *county) recognition(ctx context.Context) error {
	t := c.town()
	body := fmt.Sprintf(`{"patient":%q,"items":%s,"purpose":"outpatient order"}`, t.patient(), recognitionItems)
	return c.do(ctx, "recognition.check", "POST", "/v1/recognition/checks", t.clinician, body, nil)
}
