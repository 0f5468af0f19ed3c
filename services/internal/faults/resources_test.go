//go:build faults

package faults

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/mcctest"
)

// TestAbusiveClients aims three kinds of abuse at one mcc at once: 300
// slow-loris connections trickling their request headers, 500 township
// long polls of the feed held open, and oversize messages over REST and
// gRPC. Meanwhile an ordinary client keeps reading and writing. Every one
// of its calls must succeed, the slow-loris connections must be closed by
// the server, the oversize messages refused, and the process's memory stay
// under the 300 MB the load targets allow.
func TestAbusiveClients(t *testing.T) {
	bin := mcctest.Build(t)
	dir := t.TempDir()
	m := startMCC(t, bin, dir, "-store=bolt")
	pid := m.Cmd.Process.Pid
	ctx := adminContext(t, dir)
	c := mcctest.DialDirectory(t, m.GRPC)
	base := "http://" + m.HTTP
	admin := token(t, dir, "qrmyy", typev1.Role_ROLE_ADMIN)
	if _, err := writeFacility(ctx, c, "qrmyy", 0); err != nil {
		t.Fatal(err)
	}
	idle := rss(t, pid)

	stop := make(chan struct{})
	var abuse sync.WaitGroup

	// Slow loris: each connection sends a byte of its request header every
	// half second and never finishes it.
	const lorises = 300
	var closedByServer atomic.Int64
	for i := range lorises {
		abuse.Add(1)
		go func() {
			defer abuse.Done()
			conn, err := net.Dial("tcp", m.HTTP)
			if err != nil {
				return
			}
			defer conn.Close()
			header := fmt.Sprintf("GET /v1/facilities HTTP/1.1\r\nHost: x\r\nX-Loris-%d: ", i) + strings.Repeat("a", 1000)
			for _, b := range []byte(header) {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{b}); err != nil {
					closedByServer.Add(1)
					return
				}
			}
		}()
	}

	// A flood of long polls, each on its own connection, each waiting up
	// to 20 s for an event that does not come: 500 townships at once. Each
	// poll starts without a cursor, so every 20 s all of them read every
	// service's events from the oldest at the same moment; before direct
	// reads were shared and bounded (feed.directReads), that herd alone
	// took the process from 50 MB to 340 MB with 150 polls.
	const polls = 500
	var pollErrors, pollsDone atomic.Int64
	pollClient := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxConnsPerHost: polls, MaxIdleConnsPerHost: polls}}
	for i := range polls {
		abuse.Add(1)
		go func() {
			defer abuse.Done()
			tok := token(t, dir, fmt.Sprintf("town%03d", i%100), typev1.Role_ROLE_CLINICIAN)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", base+"/v1/feed?wait=20s&pageSize=100", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := pollClient.Do(req)
				if err != nil {
					pollErrors.Add(1)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				resp.Body.Close()
				pollsDone.Add(1)
			}
		}()
	}

	// Oversize messages: an 8 MiB REST body (the limit is 4 MiB) and an
	// 8 MiB gRPC message (the limit is 4 MiB), again and again.
	var oversizeREST, oversizeGRPC atomic.Int64
	big := bytes.Repeat([]byte("x"), 8<<20)
	abuse.Add(1)
	go func() {
		defer abuse.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("POST", base+"/v1/facilities?facility_id=big", bytes.NewReader(append(append([]byte(`{"displayName":"`), big...), `"}`...)))
			req.Header.Set("Authorization", "Bearer "+admin)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				if resp.StatusCode == http.StatusRequestEntityTooLarge {
					oversizeREST.Add(1)
				} else {
					t.Errorf("oversize REST body: %d, want 413", resp.StatusCode)
				}
				resp.Body.Close()
			}
			_, err := c.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: "big", Facility: &directoryv1.Facility{DisplayName: string(big)}})
			if status.Code(err) == codes.ResourceExhausted {
				oversizeGRPC.Add(1)
			} else {
				t.Errorf("oversize gRPC message: %v, want ResourceExhausted", err)
			}
		}
	}()

	// The ordinary client, for 25 s: a write over gRPC, a read over REST.
	var peak int64
	var calls int
	var worst time.Duration
	l := newLedger()
	normal := &http.Client{Timeout: 10 * time.Second}
	for i, end := 0, time.Now().Add(25*time.Second); time.Now().Before(end); i++ {
		start := time.Now()
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := writeFacility(callCtx, c, fmt.Sprintf("ok%05d", i), 0)
		cancel()
		if err != nil {
			t.Fatalf("ordinary write %d failed under abuse: %v", i, err)
		}
		l.ack(fmt.Sprintf("ok%05d", i), v)
		req, _ := http.NewRequest("GET", base+"/v1/facilities/qrmyy", nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := normal.Do(req)
		if err != nil {
			t.Fatalf("ordinary read %d failed under abuse: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("ordinary read %d: %d", i, resp.StatusCode)
		}
		calls += 2
		worst = max(worst, time.Since(start))
		peak = max(peak, rss(t, pid))
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	abuse.Wait()

	if n := closedByServer.Load(); n < lorises*9/10 {
		t.Errorf("only %d of %d slow-loris connections were closed by the server", n, lorises)
	}
	if oversizeREST.Load() == 0 || oversizeGRPC.Load() == 0 {
		t.Errorf("oversize messages refused: %d REST, %d gRPC; want some of each", oversizeREST.Load(), oversizeGRPC.Load())
	}
	if peak > 300<<20 {
		t.Errorf("RSS peaked at %d MB under abuse, want at most 300 MB", peak>>20)
	}
	if lost := checkLedger(t, ctx, c, l); lost > 0 {
		t.Errorf("%d ordinary writes lost", lost)
	}
	t.Logf("FIGURES resources: %d slow-loris connections (%d closed by the server), %d long polls open (%d answered, %d failed), %d oversize REST bodies refused 413, %d oversize gRPC messages refused ResourceExhausted; the ordinary client made %d calls, all answered, slowest write+read pair %s; RSS idle %d MB, peak %d MB",
		lorises, closedByServer.Load(), polls, pollsDone.Load(), pollErrors.Load(), oversizeREST.Load(), oversizeGRPC.Load(), calls, worst.Round(time.Millisecond), idle>>20, peak>>20)
}
