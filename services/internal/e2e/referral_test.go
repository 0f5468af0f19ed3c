package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/referral"
)

// county is a community set up over REST for the referral tests: two county
// hospitals, two township centers, a doctor at the first township, and two
// of its patients, one also known to the county hospital.
type county struct {
	sys *system
	// tokens by "facility/role".
	tokens   map[string]string
	patients map[string]string
}

func newCounty(t *testing.T, sys *system) *county {
	t.Helper()
	c := &county{sys: sys, tokens: map[string]string{}, patients: map[string]string{}}
	admin := c.token(t, "qrmyy", typev1.Role_ROLE_ADMIN)
	for _, f := range []string{
		`qrmyy|{"displayName":"乌拉特中旗人民医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`,
		`mzyy|{"displayName":"乌拉特中旗蒙中医医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`,
		`dls|{"displayName":"德岭山中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`,
		`wjh|{"displayName":"乌加河中心卫生院","level":"FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER","parent":"facilities/qrmyy"}`,
	} {
		id, body, _ := strings.Cut(f, "|")
		sys.do(t, "POST", "/v1/facilities?facility_id="+id, admin, body).want(t, 200)
	}
	sys.do(t, "POST", "/v1/practitioners?practitioner_id=doc-dls-han", admin, `{"displayName":"韩医生","facility":"facilities/dls","roles":["ROLE_CLINICIAN"]}`).want(t, 200)
	dls := c.token(t, "dls", typev1.Role_ROLE_CLINICIAN)
	for key, p := range map[string]string{"batu": "15082419580314201|巴特尔", "qiqige": "15082419670821302|其其格"} {
		id, name, _ := strings.Cut(p, "|")
		reg := sys.do(t, "POST", "/v1/patients:register", dls, fmt.Sprintf(`{"residentId":%q,"displayName":%q}`, directory.WithCheckDigit(id), name)).want(t, 200)
		c.patients[key] = reg.str(t, "patient.name")
	}
	sys.do(t, "POST", "/v1/patients:match", c.token(t, "qrmyy", typev1.Role_ROLE_CLINICIAN), fmt.Sprintf(`{"residentId":%q}`, directory.WithCheckDigit("15082419580314201"))).want(t, 200)
	return c
}

func (c *county) token(t *testing.T, facility string, role typev1.Role) string {
	key := facility + "/" + role.String()
	if tok, ok := c.tokens[key]; ok {
		return tok
	}
	tok := c.sys.token(t, "demo", facility, time.Hour, role)
	c.tokens[key] = tok
	return tok
}

func (c *county) dls(t *testing.T) string   { return c.token(t, "dls", typev1.Role_ROLE_CLINICIAN) }
func (c *county) qrmyy(t *testing.T) string { return c.token(t, "qrmyy", typev1.Role_ROLE_CLINICIAN) }

// up is the JSON of an up-referral of batu from dls to qrmyy.
func (c *county) up(extra string) string {
	return fmt.Sprintf(`{"direction":"DIRECTION_UP","patient":%q,"targetFacility":"facilities/qrmyy","targetDepartment":"神经内科",
		"reason":"反复头晕","diagnosis":{"code":"I63.900x001","display":"脑梗死"},"urgency":"URGENCY_ROUTINE",
		"clinicalSummary":"高血压病史十年，近一周头晕加重。"%s}`, c.patients["batu"], extra)
}

// down is the JSON of a down-referral of batu from qrmyy to dls with three
// follow-up tasks; the phone call is due on arrival.
func (c *county) down() string {
	return fmt.Sprintf(`{"direction":"DIRECTION_DOWN","patient":%q,"targetFacility":"facilities/dls","reason":"病情稳定，转回康复",
		"urgency":"URGENCY_ROUTINE","dischargeSummary":"脑梗死恢复期。","receivingPractitioner":"practitioners/doc-dls-han",
		"carePlan":{"kind":"KIND_REHABILITATION","summary":"康复训练","tasks":[
		  {"type":"TYPE_PHONE_CALL","dueInDays":0,"description":"电话随访"},
		  {"type":"TYPE_VISIT","dueInDays":7,"description":"上门随访"},
		  {"type":"TYPE_TEST","dueInDays":30,"description":"复查血脂"}]}}`, c.patients["batu"])
}

func (c *county) create(t *testing.T, token, body string) response {
	t.Helper()
	return c.sys.do(t, "POST", "/v1/referrals", token, body).want(t, 200)
}

// act posts a custom method (`accept`, `arrive`, ...) on a referral.
func (c *county) act(t *testing.T, name, verb, token, body string) response {
	t.Helper()
	return c.sys.do(t, "POST", "/v1/"+name+":"+verb, token, body)
}

func appointment(in time.Duration) string {
	return time.Now().Add(in).UTC().Format(time.RFC3339)
}

func acceptBody(etag string, in time.Duration) string {
	return fmt.Sprintf(`{"etag":%q,"mode":"MODE_OUTPATIENT","department":"神经内科","appointmentTime":%q}`, etag, appointment(in))
}

func actions(t *testing.T, r response) []string {
	var out []string
	for _, a := range r.list(t, "referral.allowedActions") {
		out = append(out, a.(string))
	}
	return out
}

// TestReferralOverREST plays the "done when": an up-referral
// accepted, arrived and completed; a rejected one; a green channel entered
// afterwards; a down-referral with three follow-up tasks, one missed and
// reported.
func TestReferralOverREST(t *testing.T) {
	for _, backend := range backends() {
		t.Run(backend.name, func(t *testing.T) {
			sys := start(t, append(backend.flags(t), "-referral.follow-up-grace=0s", "-referral.scan-interval=100ms")...)
			testReferralOverREST(t, sys)
		})
	}
}

func testReferralOverREST(t *testing.T, sys *system) {
	c := newCounty(t, sys)
	dls, qrmyy := c.dls(t), c.qrmyy(t)
	coord := c.token(t, "mzyy", typev1.Role_ROLE_REFERRAL_COORDINATOR)

	t.Run("up-referral accepted, arrived and completed", func(t *testing.T) {
		r := c.create(t, dls, c.up(`,"familyDoctorContract":true`))
		name := r.str(t, "referral.name")
		if r.str(t, "referral.state") != "STATE_PENDING" || !slices.Equal(actions(t, r), []string{"ACTION_CANCEL"}) {
			t.Fatalf("created %s", r.raw)
		}
		work := sys.do(t, "GET", "/v1/referrals:worklist?stage=STAGE_TRIAGE", qrmyy, "").want(t, 200)
		if work.str(t, "referrals.0.name") != name || !slices.Contains(actionsAt(t, work, "referrals.0"), "ACTION_ACCEPT") {
			t.Fatalf("worklist %s", work.raw)
		}
		acc := c.act(t, name, "accept", qrmyy, acceptBody(r.str(t, "referral.etag"), 24*time.Hour)).want(t, 200)
		code := acc.str(t, "referral.triage.referralCode")
		if acc.str(t, "referral.state") != "STATE_ACCEPTED" || len(code) != 8 || acc.str(t, "referral.triage.appointmentTime") == "" {
			t.Fatalf("accepted %s", acc.raw)
		}
		arr := c.act(t, name, "arrive", qrmyy, fmt.Sprintf(`{"etag":%q,"referralCode":%q}`, acc.str(t, "referral.etag"), code)).want(t, 200)
		if arr.str(t, "referral.state") != "STATE_ARRIVED" {
			t.Fatalf("arrived %s", arr.raw)
		}
		done := c.act(t, name, "complete", qrmyy, `{"outcome":"住院治疗后好转出院"}`).want(t, 200)
		if done.str(t, "referral.state") != "STATE_COMPLETED" || len(done.list(t, "referral.timeline")) != 4 {
			t.Fatalf("completed %s", done.raw)
		}
		// The sender follows it too.
		if got := sys.do(t, "GET", "/v1/"+name, dls, "").want(t, 200); got.str(t, "referral.state") != "STATE_COMPLETED" {
			t.Errorf("sender sees %s", got.raw)
		}
	})

	t.Run("rejected with a coded reason", func(t *testing.T) {
		r := c.create(t, dls, c.up(""))
		name := r.str(t, "referral.name")
		rej := c.act(t, name, "reject", coord, `{"reason":"REJECT_REASON_NO_CAPACITY","note":"神经内科床位已满，建议转蒙中医医院"}`).want(t, 200)
		if rej.str(t, "referral.state") != "STATE_REJECTED" || rej.str(t, "referral.triage.rejectReason") != "REJECT_REASON_NO_CAPACITY" || len(actions(t, rej)) != 0 {
			t.Fatalf("rejected %s", rej.raw)
		}
	})

	t.Run("green channel entered afterwards", func(t *testing.T) {
		left := time.Now().Add(-20 * time.Minute).UTC().Format(time.RFC3339)
		r := c.create(t, dls, fmt.Sprintf(`{"direction":"DIRECTION_UP","greenChannel":true,"patient":%q,"targetFacility":"facilities/qrmyy",
			"reason":"胸痛两小时，疑似急性心梗","urgency":"URGENCY_EMERGENCY"}`, c.patients["qiqige"]))
		name := r.str(t, "referral.name")
		if r.str(t, "referral.state") != "STATE_GREEN_CHANNEL" || r.str(t, "referral.targetDepartment") != "急诊科" {
			t.Fatalf("green channel %s", r.raw)
		}
		// The receiver's duty department is told at once through its feed.
		evs := sys.do(t, "GET", "/v1/referral/events", qrmyy, "").want(t, 200)
		found := false
		for _, e := range evs.list(t, "events") {
			m := e.(map[string]any)
			found = found || m["type"] == "referral.green_channel" && m["resource"] == name
		}
		if !found {
			t.Fatalf("no green-channel event in %s", evs.raw)
		}
		arrivedAt := time.Now().Add(-5 * time.Minute).UTC().Format(time.RFC3339)
		c.act(t, name, "arrive", qrmyy, fmt.Sprintf(`{"arriveTime":%q}`, arrivedAt)).want(t, 200)
		c.act(t, name, "complete", qrmyy, `{}`).want(t, 400)
		filled := c.act(t, name, "backfill", dls, fmt.Sprintf(`{"diagnosis":{"code":"I21.9","display":"急性心肌梗死"},
			"clinicalSummary":"胸痛两小时，心电图ST段抬高，予阿司匹林300mg嚼服。","departureTime":%q}`, left)).want(t, 200)
		if filled.str(t, "referral.departureTime") != left || filled.str(t, "referral.arriveTime") != arrivedAt || filled.str(t, "referral.backfillTime") == "" {
			t.Fatalf("backfilled %s", filled.raw)
		}
		c.act(t, name, "complete", qrmyy, `{}`).want(t, 200)
	})

	t.Run("down-referral with three follow-up tasks, one missed and reported", func(t *testing.T) {
		r := c.create(t, qrmyy, c.down())
		name := r.str(t, "referral.name")
		arr := c.act(t, name, "arrive", dls, `{}`).want(t, 200)
		if arr.str(t, "referral.state") != "STATE_ARRIVED" || arr.get(t, "referral.followUps.scheduled") != float64(3) {
			t.Fatalf("arrived %s", arr.raw)
		}
		tasks := sys.do(t, "GET", "/v1/"+name+"/followUps", dls, "").want(t, 200)
		if n := len(tasks.list(t, "followUps")); n != 3 {
			t.Fatalf("%d tasks: %s", n, tasks.raw)
		}
		// The phone call was due on arrival and the grace period is zero
		// here: the deadline scanner reports it missed.
		eventually(t, 10*time.Second, "the missed report", func() bool {
			missed := sys.do(t, "GET", "/v1/referrals/-/followUps?state=STATE_MISSED", dls, "").want(t, 200)
			return missed.str(t, "followUps.0.name") == name+"/followUps/01"
		})
		visit, test := name+"/followUps/02", name+"/followUps/03"
		c.act(t, visit, "complete", dls, `{"outcome":"恢复良好"}`).want(t, 200)
		c.act(t, test, "complete", dls, `{"outcome":"血脂正常"}`).want(t, 200)
		got := sys.do(t, "GET", "/v1/"+name, qrmyy, "").want(t, 200)
		if got.get(t, "referral.followUps.missed") != float64(1) || got.get(t, "referral.followUps.done") != float64(2) {
			t.Fatalf("summary %s", got.raw)
		}
		c.act(t, name, "complete", dls, `{"outcome":"康复计划结束"}`).want(t, 200)
		evs := sys.do(t, "GET", "/v1/referral/events", qrmyy, "").want(t, 200)
		if !strings.Contains(evs.raw, `"referral.follow_up_missed"`) {
			t.Errorf("the sender's feed does not report the missed task: %s", evs.raw)
		}
	})

	t.Run("statistics", func(t *testing.T) {
		month := time.Now().In(time.FixedZone("CST", 8*3600)).Format("2006-01")
		st := sys.do(t, "GET", "/v1/referral/statistics?startMonth="+month+"&endMonth="+month, coord, "").want(t, 200)
		if st.get(t, "total.up") != float64(3) || st.get(t, "total.down") != float64(1) || st.get(t, "total.followUpsMissed") != float64(1) ||
			st.get(t, "total.acceptanceRate") != 0.5 || st.get(t, "total.completed") != float64(3) {
			t.Errorf("statistics %s", st.raw)
		}
	})

	t.Run("no patient name or ID number in logs or feed", func(t *testing.T) {
		evs := sys.do(t, "GET", "/v1/referral/events", coord, "").want(t, 200)
		for _, secret := range []string{"巴特尔", "其其格", directory.WithCheckDigit("15082419580314201"), "阿司匹林"} {
			if strings.Contains(sys.logs.String(), secret) || strings.Contains(evs.raw, secret) {
				t.Errorf("%q is in the logs or the feed", secret)
			}
		}
	})
}

func actionsAt(t *testing.T, r response, path string) []string {
	var out []string
	for _, a := range r.list(t, path+".allowedActions") {
		out = append(out, a.(string))
	}
	return out
}

// TestReferralBadInputOverREST is the list of bad input and
// failure, through the gateway.
func TestReferralBadInputOverREST(t *testing.T) {
	sys := start(t)
	c := newCounty(t, sys)
	dls, qrmyy := c.dls(t), c.qrmyy(t)

	t.Run("every illegal transition", func(t *testing.T) {
		made := map[referralv1.Referral_State]response{}
		for _, mv := range referral.Machine.Illegal() {
			if mv.From == referralv1.Referral_STATE_EXPIRED {
				continue // TestReferralCodeExpiresOverREST walks these
			}
			t.Run(mv.String(), func(t *testing.T) {
				r, ok := made[mv.From]
				if !ok {
					r = c.inState(t, mv.From)
					made[mv.From] = r
				}
				c.illegal(t, r, mv.From, mv.To)
			})
		}
	})

	t.Run("actions the caller may not take", func(t *testing.T) {
		r := c.create(t, dls, c.up(""))
		name := r.str(t, "referral.name")
		c.act(t, name, "accept", dls, acceptBody("", time.Hour)).want(t, 403)
		c.act(t, name, "cancel", qrmyy, `{"reason":"x"}`).want(t, 403)
		c.act(t, name, "reject", c.token(t, "qrmyy", typev1.Role_ROLE_AUDITOR), `{"reason":"REJECT_REASON_OTHER","note":"x"}`).want(t, 403)
		c.act(t, name, "resubmit", c.token(t, "mzyy", typev1.Role_ROLE_REFERRAL_COORDINATOR), `{}`).want(t, 403)
		// A facility that is not a party does not see the referral at all.
		sys.do(t, "GET", "/v1/"+name, c.token(t, "wjh", typev1.Role_ROLE_CLINICIAN), "").want(t, 404)
		c.act(t, name, "accept", c.token(t, "wjh", typev1.Role_ROLE_CLINICIAN), acceptBody("99", time.Hour)).want(t, 404)
	})

	t.Run("a facility outside the community", func(t *testing.T) {
		other := sys.token(t, "elsewhere", "far", time.Hour, typev1.Role_ROLE_ADMIN)
		sys.do(t, "POST", "/v1/facilities?facility_id=far", other, `{"displayName":"外旗医院","level":"FACILITY_LEVEL_COUNTY_HOSPITAL"}`).want(t, 200)
		body := strings.Replace(c.up(""), "facilities/qrmyy", "facilities/far", 1)
		sys.do(t, "POST", "/v1/referrals", dls, body).want(t, 400).wantField(t, "referral.target_facility")
	})

	t.Run("bad ICD-10 code and attachment references", func(t *testing.T) {
		sys.do(t, "POST", "/v1/referrals", dls, strings.Replace(c.up(""), "I63.900x001", "I6", 1)).want(t, 400).wantField(t, "referral.diagnosis.code")
		sys.do(t, "POST", "/v1/referrals", dls, c.up(`,"attachments":[{"kind":"KIND_RESULT","ref":"orders/1"}]`)).want(t, 400).wantField(t, "referral.attachments[0].ref")
	})

	t.Run("attachments of another patient", func(t *testing.T) {
		// The check needs the recognition service, which does not exist
		// yet; TestAttachmentsAreCheckedWithRecognition covers it over gRPC
		// with a stand-in checker.
		t.Skip("needs the recognition service (issue 7): the referral service has no AttachmentChecker wired yet")
	})

	t.Run("two coordinators accept at once with the same etag", func(t *testing.T) {
		r := c.create(t, dls, c.up(""))
		name, etag := r.str(t, "referral.name"), r.str(t, "referral.etag")
		statuses := make([]int, 2)
		var wg sync.WaitGroup
		for i, facility := range []string{"qrmyy", "mzyy"} {
			tok := c.token(t, facility, typev1.Role_ROLE_REFERRAL_COORDINATOR)
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i] = c.act(t, name, "accept", tok, acceptBody(etag, time.Hour)).status
			}()
		}
		wg.Wait()
		slices.Sort(statuses)
		if !slices.Equal(statuses, []int{200, 409}) {
			t.Fatalf("statuses %v, want one 200 and one 409", statuses)
		}
		got := sys.do(t, "GET", "/v1/"+name, dls, "").want(t, 200)
		if n := len(got.list(t, "referral.timeline")); n != 2 {
			t.Errorf("%d timeline entries, want 2", n)
		}
	})
}

// TestReferralCodeExpiresOverREST runs with codes that last a second: an
// expired code is refused, the referral expires, and nothing moves it on.
func TestReferralCodeExpiresOverREST(t *testing.T) {
	sys := start(t, "-referral.code-ttl=1s", "-referral.scan-interval=100ms")
	c := newCounty(t, sys)
	r := c.inState(t, referralv1.Referral_STATE_ACCEPTED)
	name, code := r.str(t, "referral.name"), r.str(t, "referral.triage.referralCode")
	eventually(t, 10*time.Second, "the expiry", func() bool {
		return sys.do(t, "GET", "/v1/"+name, c.dls(t), "").want(t, 200).str(t, "referral.state") == "STATE_EXPIRED"
	})
	c.act(t, name, "arrive", c.qrmyy(t), fmt.Sprintf(`{"referralCode":%q}`, code)).want(t, 400)
	expired := sys.do(t, "GET", "/v1/"+name, c.dls(t), "").want(t, 200)
	for _, mv := range referral.Machine.Illegal() {
		if mv.From == referralv1.Referral_STATE_EXPIRED {
			t.Run(mv.String(), func(t *testing.T) { c.illegal(t, expired, mv.From, mv.To) })
		}
	}
}

// inState brings a new referral into st over REST.
func (c *county) inState(t *testing.T, st referralv1.Referral_State) response {
	t.Helper()
	dls, qrmyy := c.dls(t), c.qrmyy(t)
	switch st {
	case referralv1.Referral_STATE_SENT:
		return c.create(t, qrmyy, c.down())
	case referralv1.Referral_STATE_GREEN_CHANNEL:
		return c.create(t, dls, strings.Replace(c.up(`,"greenChannel":true`), "URGENCY_ROUTINE", "URGENCY_EMERGENCY", 1))
	}
	r := c.create(t, dls, c.up(""))
	name := r.str(t, "referral.name")
	switch st {
	case referralv1.Referral_STATE_PENDING:
		return r
	case referralv1.Referral_STATE_REJECTED:
		return c.act(t, name, "reject", qrmyy, `{"reason":"REJECT_REASON_NOT_INDICATED"}`).want(t, 200)
	case referralv1.Referral_STATE_RETURNED:
		return c.act(t, name, "return", qrmyy, `{"advice":"请补充头颅CT"}`).want(t, 200)
	case referralv1.Referral_STATE_CANCELLED:
		return c.act(t, name, "cancel", dls, `{"reason":"患者拒绝转诊"}`).want(t, 200)
	}
	r = c.act(t, name, "accept", qrmyy, acceptBody("", 500*time.Millisecond)).want(t, 200)
	if st == referralv1.Referral_STATE_ACCEPTED {
		return r
	}
	r = c.act(t, name, "arrive", qrmyy, fmt.Sprintf(`{"referralCode":%q}`, r.str(t, "referral.triage.referralCode"))).want(t, 200)
	if st == referralv1.Referral_STATE_ARRIVED {
		return r
	}
	return c.act(t, name, "complete", qrmyy, `{}`).want(t, 200)
}

// illegal tries the REST call that would move r from one state to another
// and expects 400 with reason INVALID_TRANSITION and no change. States no
// call reaches (a referral is created in them, or a deadline moves it
// there) are refused by the machine itself, which the service tests check.
func (c *county) illegal(t *testing.T, r response, from, to referralv1.Referral_State) {
	t.Helper()
	name := r.str(t, "referral.name")
	sender, receiver := c.dls(t), c.qrmyy(t)
	if r.str(t, "referral.direction") == "DIRECTION_DOWN" {
		sender, receiver = receiver, sender
	}
	var got response
	switch to {
	case referralv1.Referral_STATE_PENDING:
		got = c.act(t, name, "resubmit", sender, `{}`)
	case referralv1.Referral_STATE_ACCEPTED:
		got = c.act(t, name, "accept", receiver, acceptBody("", 500*time.Millisecond))
	case referralv1.Referral_STATE_REJECTED:
		got = c.act(t, name, "reject", receiver, `{"reason":"REJECT_REASON_OUT_OF_SCOPE"}`)
	case referralv1.Referral_STATE_RETURNED:
		got = c.act(t, name, "return", receiver, `{"advice":"x"}`)
	case referralv1.Referral_STATE_ARRIVED:
		got = c.act(t, name, "arrive", receiver, fmt.Sprintf(`{"referralCode":%q}`, r.str(t, "referral.triage.referralCode")))
	case referralv1.Referral_STATE_COMPLETED:
		got = c.act(t, name, "complete", receiver, `{}`)
	case referralv1.Referral_STATE_CANCELLED:
		got = c.act(t, name, "cancel", sender, `{"reason":"x"}`)
	default:
		return
	}
	got.want(t, 400)
	if !strings.Contains(got.raw, `"reason":"INVALID_TRANSITION"`) {
		t.Errorf("%s -> %s: %s", from, to, got.raw)
	}
	now := c.sys.do(t, "GET", "/v1/"+name, sender, "").want(t, 200)
	if now.str(t, "referral.state") != from.String() {
		t.Errorf("state after a refused move: %s", now.str(t, "referral.state"))
	}
}
