package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
)

// benchSetting reads a positive integer setting of the feed benchmark from
// the environment.
func benchSetting(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// pollClient is one facility's HIS long-polling GET /v1/feed. It checks
// that the versions of its facility arrive one after the other, and records
// how long after its commit each event arrived.
type pollClient struct {
	facility string
	token    string
	version  atomic.Int64
	// Written only by the client's goroutine; read after it stops.
	latencies []time.Duration
	gaps      int
	dupes     int
	errors    int
}

func (c *pollClient) run(ctx context.Context, sys *system, client *http.Client) {
	cursor := ""
	for ctx.Err() == nil {
		q := url.Values{"after": {cursor}, "wait": {"25s"}, "pageSize": {"1000"}}
		req, _ := http.NewRequestWithContext(ctx, "GET", sys.url+"/v1/feed?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				c.errors++
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		var page struct {
			Events []struct {
				Resource     string    `json:"resource"`
				ResourceEtag string    `json:"resourceEtag"`
				Time         time.Time `json:"time"`
			} `json:"events"`
			NextCursor string `json:"nextCursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		now := time.Now()
		if err != nil || resp.StatusCode != 200 {
			c.errors++
			continue
		}
		for _, ev := range page.Events {
			v, _ := strconv.ParseInt(ev.ResourceEtag, 10, 64)
			switch cur := c.version.Load(); {
			case v <= cur:
				c.dupes++
				continue
			case v != cur+1:
				c.gaps++
			}
			c.version.Store(v)
			if v > 1 {
				c.latencies = append(c.latencies, now.Sub(ev.Time))
			}
		}
		cursor = page.NextCursor
	}
}

// BenchmarkFeedLongPoll runs MCC (-target=all, bolt) with 200 facilities
// long-polling their feed over REST while the directory commits 1,000
// events a second, each concerning one facility. It reports the
// commit-to-delivery latency and checks that every client saw every
// version of its facility, in order. It runs the scenario once, whatever
// b.N: run it with -benchtime=1x. MCC_BENCH_FEED_FACILITIES,
// MCC_BENCH_FEED_RATE and MCC_BENCH_FEED_SECONDS change the load, and
// MCC_BENCH_FEED_FLAGS adds mcc flags (-feed.cache-events=0).
func BenchmarkFeedLongPoll(b *testing.B) {
	facilities := benchSetting(b, "MCC_BENCH_FEED_FACILITIES", 200)
	rate := benchSetting(b, "MCC_BENCH_FEED_RATE", 1000)
	seconds := benchSetting(b, "MCC_BENCH_FEED_SECONDS", 20)
	sys, stop := startStoppable(b, b.TempDir(), strings.Fields(os.Getenv("MCC_BENCH_FEED_FLAGS"))...)
	defer stop()
	conn, err := grpc.NewClient(sys.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	dir := directoryv1.NewDirectoryServiceClient(conn)
	admin := servertest.WithToken(context.Background(), sys.token(b, "demo", "qrmyy", time.Hour, typev1.Role_ROLE_ADMIN))
	clients := make([]*pollClient, facilities)
	for i := range clients {
		id := fmt.Sprintf("f%03d", i)
		_, err := dir.CreateFacility(admin, &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{
			DisplayName: id, Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER,
		}})
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = &pollClient{facility: id, token: sys.token(b, "demo", id, 2*time.Hour, typev1.Role_ROLE_CLINICIAN)}
	}
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: facilities + 10, MaxConnsPerHost: facilities + 10}}
	ctx, cancel := context.WithCancel(context.Background())
	var polling sync.WaitGroup
	for _, c := range clients {
		polling.Go(func() { c.run(ctx, sys, httpClient) })
	}
	for _, c := range clients {
		for c.version.Load() < 1 {
			time.Sleep(10 * time.Millisecond)
		}
	}

	// The producer: each facility is updated by one worker, so its
	// versions commit in order; a ticker paces the whole at rate.
	const workers = 50
	jobs := make([]chan int, workers)
	acked := make([]atomic.Int64, facilities)
	var failed atomic.Int64
	var producing sync.WaitGroup
	for w := range jobs {
		jobs[w] = make(chan int, 1024)
		producing.Go(func() {
			for i := range jobs[w] {
				id := clients[i].facility
				n := acked[i].Load() + 1
				_, err := dir.UpdateFacility(admin, &directoryv1.UpdateFacilityRequest{Facility: &directoryv1.Facility{
					Name: "facilities/" + id, DisplayName: id + " #" + strconv.FormatInt(n, 10), Level: typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER,
				}})
				if err != nil {
					failed.Add(1)
					continue
				}
				acked[i].Store(n)
			}
		})
	}
	b.ResetTimer()
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	sent := 0
	for time.Since(start) < time.Duration(seconds)*time.Second {
		<-tick.C
		// A late tick sends what is due, so the average rate holds.
		for due := int(time.Since(start) * time.Duration(rate) / time.Second); sent < due; sent++ {
			i := sent % facilities
			jobs[i%workers] <- i
		}
	}
	tick.Stop()
	for _, j := range jobs {
		close(j)
	}
	producing.Wait()
	produced := time.Since(start)

	// Every client must reach the last version of its facility.
	deadline := time.Now().Add(60 * time.Second)
	for i, c := range clients {
		for c.version.Load() < acked[i].Load()+1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	cancel()
	polling.Wait()
	b.StopTimer()

	var all []time.Duration
	var total, lost, gaps, dupes, errs int64
	for i, c := range clients {
		all = append(all, c.latencies...)
		total += acked[i].Load()
		lost += acked[i].Load() + 1 - c.version.Load()
		gaps += int64(c.gaps)
		dupes += int64(c.dupes)
		errs += int64(c.errors)
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))]
	}
	b.ReportMetric(float64(total)/produced.Seconds(), "events/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(gaps), "gaps")
	b.Logf("%d facilities, %d events in %v (%d failed writes), %d delivered: p50 %v, p90 %v, p99 %v, max %v; lost %d, gaps %d, duplicates %d, poll errors %d",
		facilities, total, produced.Round(time.Millisecond), failed.Load(), len(all), pct(0.50), pct(0.90), pct(0.99), all[len(all)-1], lost, gaps, dupes, errs)
	if lost != 0 || gaps != 0 {
		b.Errorf("%d events lost and %d gaps", lost, gaps)
	}
}
