package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// TestShutdownEndsWatchesAndLongPolls: a REST watch and a long poll open
// when mcc is told to stop are ended at once, the watch as a stream and the
// long poll with its page, so the stop does not wait out -shutdown-timeout
// and then cut the calls still running. Their audit records are committed.
func TestShutdownEndsWatchesAndLongPolls(t *testing.T) {
	const timeout = 60 * time.Second
	dir := t.TempDir()
	sys, stop := startStoppable(t, dir, "-shutdown-timeout="+timeout.String())
	tok := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	open := func(path string) <-chan string {
		ended := make(chan string, 1)
		go func() {
			req, _ := http.NewRequest("GET", sys.url+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ended <- err.Error()
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				ended <- err.Error()
				return
			}
			ended <- resp.Status + " " + string(body)
		}()
		return ended
	}
	watch := open("/v1/feed:watch")
	poll := open("/v1/feed?wait=50s")
	eventually(t, 10*time.Second, "the watch and the long poll to be open", func() bool {
		return strings.Contains(sys.do(t, "GET", "/metrics", "", "").want(t, 200).raw, "\nmcc_feed_waiting 2\n")
	})

	began := time.Now()
	stop()
	took := time.Since(began)
	if took > timeout/3 {
		t.Errorf("mcc took %v to stop with a watch and a long poll open, want far less than -shutdown-timeout %v", took, timeout)
	}
	if got := <-poll; !strings.HasPrefix(got, "200 ") || !strings.Contains(got, `"nextCursor"`) {
		t.Errorf("the long poll open at shutdown was answered %.300s, want 200 with its cursor", got)
	}
	// UNAVAILABLE (14), which clients retry: as the HTTP status (503) when
	// the stream had sent nothing yet, else as its last message.
	if got := <-watch; !strings.Contains(got, `"code":14`) {
		t.Errorf("the watch open at shutdown ended with %.300s, want UNAVAILABLE", got)
	}
	t.Logf("FIGURES shutdown with a REST watch and a long poll open: %v", took.Round(time.Millisecond))

	again := startIn(t, dir)
	trail, _ := again.auditTrail(t, "demo")
	for _, method := range []string{"/mcc.feed.v1.FeedService/Watch", "/mcc.feed.v1.FeedService/Poll"} {
		if !strings.Contains(trail, `"method":"`+method+`"`) {
			t.Errorf("no audit record of %s", method)
		}
	}
}

// TestShutdownDelayServesWhileNotReady: with -shutdown-delay, a stopping
// mcc answers /readyz 503 at once but goes on serving calls, long polls
// included, for the delay, so a load balancer can take it out first.
func TestShutdownDelayServesWhileNotReady(t *testing.T) {
	const delay = 5 * time.Second
	sys, stop := startStoppable(t, t.TempDir(), "-shutdown-delay="+delay.String())
	admin := sys.token(t, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN)
	sys.do(t, "GET", "/readyz", "", "").want(t, 200)

	began := time.Now()
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	eventually(t, delay, "/readyz to turn 503", func() bool {
		return sys.do(t, "GET", "/readyz", "", "").status == http.StatusServiceUnavailable
	})
	sys.do(t, "GET", "/v1/facilities", admin, "").want(t, 200)
	sys.do(t, "GET", "/v1/feed?wait=0.1s", admin, "").want(t, 200)
	<-stopped
	if took := time.Since(began); took < delay {
		t.Errorf("mcc stopped %v after it was told to, before its -shutdown-delay %v", took, delay)
	}
}
