package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	platformaudit "github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	storeredis "github.com/countymcc/mcc/services/internal/store/redis"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

// TestAuditTrail plays a few real REST calls on patient data, reads them
// back as an auditor, verifies the chain, then edits one record directly in
// the store and checks that `mcc audit verify` fails naming it.
func TestAuditTrail(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		dir := t.TempDir()
		sys, stop := startStoppable(t, dir)
		bad := playAndCheck(t, sys)
		stop()
		verifyCommand(t, nil, "-data-dir="+dir)
		st, err := bolt.Open(filepath.Join(dir, "audit.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tamper(t, st, bad)
		st.Close()
		verifyCommand(t, []string{platformaudit.RecordName(bad), "edited"}, "-data-dir="+dir)
	})
	t.Run("redis", func(t *testing.T) {
		addr, prefix := redistest.Start(t), redistest.Prefix(t)
		sys := start(t, "-store=redis", "-redis-addr="+addr, "-redis.prefix="+prefix)
		bad := playAndCheck(t, sys)
		flags := []string{"-store=redis", "-redis-addr=" + addr, "-redis.prefix=" + prefix}
		verifyCommand(t, nil, flags...)
		auditor := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_AUDITOR)
		out, err := mcc(t, "audit", "verify", "-addr="+sys.grpc, "-token="+auditor)
		if err != nil || !strings.HasPrefix(out, "ok: ") {
			t.Errorf("mcc audit verify -addr: %v\n%s", err, out)
		}
		client, err := storeredis.Dial(context.Background(), storeredis.ClientConfig{Addrs: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		st, err := storeredis.New(client, storeredis.Options{Prefix: prefix, Service: "audit"})
		if err != nil {
			t.Fatal(err)
		}
		tamper(t, st, bad)
		verifyCommand(t, []string{platformaudit.RecordName(bad), "edited"}, flags...)
		// The running system's VerifyChain sees it too, over REST and
		// through `mcc audit verify -addr`.
		v := sys.do(t, "GET", "/v1/auditRecords:verify", auditor, "").want(t, 200)
		if v.body["valid"] != false || v.str(t, "badRecord") != platformaudit.RecordName(bad) {
			t.Errorf("online verification after tampering: %s", v.raw)
		}
		verifyCommand(t, []string{platformaudit.RecordName(bad), "edited"}, "-addr="+sys.grpc, "-token="+auditor)
	})
}

// playAndCheck makes REST calls on a patient, checks what the trail says
// about them, and returns the sequence of a record to tamper with.
func playAndCheck(t *testing.T, sys *system) uint64 {
	t.Helper()
	doc := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	auditor := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_AUDITOR)
	purpose := [2]string{"X-MCC-Purpose", "TREATMENT"}
	id := directory.WithCheckDigit("15082419580314201")
	reg := sys.doHeaders(t, "POST", "/v1/patients:register", doc, fmt.Sprintf(`{"residentId":%q,"displayName":"巴特尔"}`, id), purpose,
		[2]string{"X-Request-Id", "audit-e2e-1"}).want(t, 200)
	patient := reg.str(t, "patient.name")
	sys.doHeaders(t, "GET", "/v1/"+patient, doc, "", purpose).want(t, 200)
	sys.do(t, "GET", "/v1/patients", doc, "").want(t, 200)
	sys.do(t, "GET", "/v1/patients/00000000-0000-0000-0000-000000000000", doc, "").want(t, 404)
	sys.do(t, "GET", "/v1/facilities", doc, "").want(t, 200)

	var registered uint64
	t.Run("the patient's records, with the purpose from the REST header", func(t *testing.T) {
		list := sys.do(t, "GET", "/v1/auditRecords?patient="+patient, auditor, "").want(t, 200)
		var methods []string
		for i := range list.list(t, "auditRecords") {
			r := fmt.Sprintf("auditRecords.%d.", i)
			m := list.str(t, r+"method")
			methods = append(methods, m[strings.LastIndex(m, "/")+1:]+":"+list.str(t, r+"purpose")+":"+list.str(t, r+"outcome"))
			if list.str(t, r+"traceId") == "" || list.str(t, r+"subject") != "e2e" || list.str(t, r+"facility") != "facilities/dls" {
				t.Errorf("record %d lacks who or the trace: %s", i, list.raw)
			}
		}
		want := "RegisterPatient:TREATMENT:OK GetPatient:TREATMENT:OK ListPatients::OK"
		if strings.Join(methods, " ") != want {
			t.Errorf("records %v, want %s", methods, want)
		}
		if list.str(t, "auditRecords.0.requestId") != "audit-e2e-1" {
			t.Errorf("request ID not recorded: %s", list.raw)
		}
		fmt.Sscan(strings.TrimPrefix(list.str(t, "auditRecords.0.name"), "auditRecords/"), &registered)
	})
	t.Run("the failed read is recorded with its outcome", func(t *testing.T) {
		list := sys.do(t, "GET", "/v1/auditRecords?patient=patients/00000000-0000-0000-0000-000000000000", auditor, "").want(t, 200)
		if list.str(t, "auditRecords.0.outcome") != "NOT_FOUND" {
			t.Errorf("%s", list.raw)
		}
	})
	t.Run("by actor and time", func(t *testing.T) {
		now := time.Now().UTC()
		q := fmt.Sprintf("/v1/auditRecords?actor=e2e&startTime=%s&endTime=%s", now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
		list := sys.do(t, "GET", q, auditor, "").want(t, 200)
		if n := len(list.list(t, "auditRecords")); n < 4 {
			t.Errorf("%d records by the actor in the last hour, want at least 4: %s", n, list.raw)
		}
		sys.do(t, "GET", fmt.Sprintf("/v1/auditRecords?startTime=%s&endTime=%s", now.Format(time.RFC3339), now.Add(-time.Hour).Format(time.RFC3339)), auditor, "").
			want(t, 400).wantField(t, "end_time")
		sys.do(t, "GET", "/v1/auditRecords?pageToken=bm90LWEtdG9rZW4", auditor, "").want(t, 400).wantField(t, "page_token")
	})
	t.Run("export the patient's access history as NDJSON", func(t *testing.T) {
		r := sys.do(t, "GET", "/v1/"+patient+"/accessHistory:export", auditor, "").want(t, 200)
		dec := json.NewDecoder(strings.NewReader(r.raw))
		n := 0
		for {
			var line struct {
				Result struct {
					AuditRecord struct{ Patients []string } `json:"auditRecord"`
				} `json:"result"`
			}
			if err := dec.Decode(&line); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%v: %s", err, r.raw)
			}
			if len(line.Result.AuditRecord.Patients) == 0 || line.Result.AuditRecord.Patients[0] != patient {
				t.Errorf("an exported record is not the patient's: %+v", line)
			}
			n++
		}
		if n < 4 { // three calls and the auditor's list by patient
			t.Errorf("%d records exported: %s", n, r.raw)
		}
	})
	t.Run("a malformed purpose is 400", func(t *testing.T) {
		sys.doHeaders(t, "GET", "/v1/"+patient, doc, "", [2]string{"X-MCC-Purpose", "x\"; level=ERROR"}).want(t, 400)
	})
	t.Run("the chain verifies", func(t *testing.T) {
		v := sys.do(t, "GET", "/v1/auditRecords:verify", auditor, "").want(t, 200)
		if v.body["valid"] != true || v.str(t, "headSequence") == "" {
			t.Errorf("%s", v.raw)
		}
	})
	t.Run("no identifier in the trail", func(t *testing.T) {
		sys.wantNoPII(t, id, id[6:14], "巴特尔")
	})
	if registered == 0 {
		t.Fatal("no record to tamper with")
	}
	return registered
}

// tamper changes who made the record seq, in place, as someone with write
// access to the store would.
func tamper(t *testing.T, st store.Store, seq uint64) {
	t.Helper()
	key := fmt.Sprintf("r/%020d", seq)
	err := st.Txn(context.Background(), "demo", func(tx store.Tx) error {
		r, err := tx.Get(key)
		if err != nil {
			return err
		}
		rec := &auditv1.AuditRecord{}
		if err := proto.Unmarshal(r.Value, rec); err != nil {
			return err
		}
		rec.Subject = "someone-else"
		b, err := proto.Marshal(rec)
		if err != nil {
			return err
		}
		return tx.Put(key, b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// verifyCommand runs `mcc audit verify` and checks it succeeds (want nil)
// or fails with output and error containing every string of want.
func verifyCommand(t *testing.T, want []string, flags ...string) {
	t.Helper()
	out, err := mcc(t, append([]string{"audit", "verify"}, flags...)...)
	if want == nil {
		if err != nil || !strings.Contains(out, "community demo: ok") {
			t.Fatalf("mcc audit verify: %v\n%s", err, out)
		}
		return
	}
	if err == nil {
		t.Fatalf("mcc audit verify passed a tampered chain:\n%s", out)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) || !strings.Contains(out, w) {
			t.Errorf("mcc audit verify: %v\n%s\nwant %q in both", err, out, w)
		}
	}
}
