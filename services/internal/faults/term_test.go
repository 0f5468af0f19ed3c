//go:build faults

package faults

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/mcctest"
)

// TestSIGTERMDuringPatientStorm stops mcc (bolt) with SIGTERM at a random
// moment of a storm of patient registrations, with a gRPC and a REST watch
// open, three times, restarting it on the same data directory. Each stop
// ends far within -shutdown-timeout, the watches not holding it, and exits
// 0; after each restart every acknowledged registration is there, each
// with the audit record of its call, and the audit chain verifies.
func TestSIGTERMDuringPatientStorm(t *testing.T) {
	const timeout = 30 * time.Second
	bin := mcctest.Build(t)
	dir := t.TempDir()
	var (
		mu        sync.Mutex
		acked     []string
		attempted atomic.Int64
		born      atomic.Int64
		stops     []time.Duration
	)
	for round := 0; ; round++ {
		m := startMCC(t, bin, dir, "-store=bolt", "-shutdown-timeout="+timeout.String())
		grpcConn := mcctest.Dial(t, m.GRPC)
		conn := directoryv1.NewDirectoryServiceClient(grpcConn)
		if round > 0 {
			checkRegistrations(t, dir, conn, auditv1.NewAuditServiceClient(grpcConn), acked)
		}
		if round == 3 {
			break
		}
		doc := tokenContext(t, dir, "dls", typev1.Role_ROLE_CLINICIAN)
		watchCtx, endWatch := context.WithCancel(adminContext(t, dir))
		watch, err := conn.WatchEvents(watchCtx, &directoryv1.WatchEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				if _, err := watch.Recv(); err != nil {
					return
				}
			}
		}()
		// And one over REST, which the gateway holds open.
		req, err := http.NewRequestWithContext(watchCtx, "GET", "http://"+m.HTTP+"/v1/directory/events:watch", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token(t, dir, "qrmyy", typev1.Role_ROLE_ADMIN))
		go func() {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					// A new resident each time: born on a later day.
					birth := time.Date(1940, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(born.Add(1)))
					rid := directory.WithCheckDigit("150824" + birth.Format("20060102") + "001")
					attempted.Add(1)
					ctx, cancel := context.WithTimeout(doc, 10*time.Second)
					resp, err := conn.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{ResidentId: rid, DisplayName: "测试"})
					cancel()
					if err != nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					mu.Lock()
					acked = append(acked, resp.GetPatient().GetName())
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300*time.Millisecond + rand.N(1200*time.Millisecond))
		began := time.Now()
		m.Stop(timeout + 10*time.Second)
		took := time.Since(began)
		close(stop)
		wg.Wait()
		endWatch()
		stops = append(stops, took.Round(time.Millisecond))
		if code := m.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("round %d: mcc exited %d after SIGTERM; log:\n%s", round+1, code, m.LogTail())
		}
		if took > timeout/2 {
			t.Errorf("round %d: SIGTERM to exit took %v, want far less than -shutdown-timeout %v", round+1, took, timeout)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no registration was acknowledged: the test proved nothing")
	}
	t.Logf("FIGURES sigterm: 3 SIGTERMs under a registration storm with a gRPC and a REST watch open; SIGTERM to exit %v; registrations attempted %d, acknowledged %d, lost 0, each audited", stops, attempted.Load(), len(acked))
}

// checkRegistrations fails the test unless every patient in acked exists,
// has the audit record of its registration, and the chain verifies.
func checkRegistrations(t *testing.T, dir string, conn directoryv1.DirectoryServiceClient, trail auditv1.AuditServiceClient, acked []string) {
	t.Helper()
	auditor := tokenContext(t, dir, "qrmyy", typev1.Role_ROLE_AUDITOR)
	v, err := trail.VerifyChain(auditor, &auditv1.VerifyChainRequest{})
	if err != nil || !v.GetValid() {
		t.Fatalf("the audit chain after a SIGTERM: %v, %v", v, err)
	}
	recorded := map[string]bool{}
	for token := ""; ; {
		page, err := trail.ListAuditRecords(auditor, &auditv1.ListAuditRecordsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.GetAuditRecords() {
			if r.GetMethod() == directoryv1.DirectoryService_RegisterPatient_FullMethodName && r.GetOutcome() == "OK" {
				for _, p := range r.GetPatients() {
					recorded[p] = true
				}
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	doc := tokenContext(t, dir, "dls", typev1.Role_ROLE_CLINICIAN)
	lost, unaudited := 0, 0
	for _, name := range acked {
		if _, err := conn.GetPatient(doc, &directoryv1.GetPatientRequest{Name: name}); err != nil {
			lost++
		}
		if !recorded[name] {
			unaudited++
		}
	}
	if lost > 0 || unaudited > 0 {
		t.Fatalf("of %d acknowledged registrations, %d lost and %d without their audit record", len(acked), lost, unaudited)
	}
}
