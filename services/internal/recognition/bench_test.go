package recognition_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
)

// The benchmarks run over real gRPC (bufconn) with every production
// interceptor and the fsynced bolt store, with the directory on the same
// server for the check's access rule. They only run with -bench, and not
// with -short. MCC_BENCH_ENTRIES sets the registry's size (1,000,000 by
// default, about one county-year).

// benchItems are the lab items of the registry: a county's common panel.
var benchItems = []string{"2823-3", "2951-2", "2075-0", "2345-7", "22664-7", "14682-9", "1742-6", "1920-8", "14647-2", "14927-8",
	"718-7", "6690-2", "777-3", "4548-4", "2028-9", "2000-8", "1751-7", "2885-2", "14631-6", "5902-2"}

// checkedItems are the five items of every check.
var checkedItems = []string{"2823-3", "2951-2", "2075-0", "2345-7", "DX-CHEST"}

func benchEntries(b *testing.B) int {
	if testing.Short() {
		b.Skip("the 1M-entry registry takes minutes to build")
	}
	n := 1_000_000
	if s := os.Getenv("MCC_BENCH_ENTRIES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		n = v
	}
	return n
}

// rss says the process's resident set in MB: all of it, the anonymous
// part (the Go heap and stacks) and the file part (bolt's memory map).
func rss() string {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	mb := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mb[strings.TrimSuffix(f[0], ":")] = kb / 1024
		}
	}
	return fmt.Sprintf("%.0f MB (anonymous %.0f MB, file %.0f MB)", mb["VmRSS"], mb["RssAnon"], mb["RssFile"])
}

// labEvent is a final lab report event of the county with results for
// codes, released at released.
func labEvent(id, patient string, released time.Time, codes []string) *typev1.Event {
	r := &labv1.Report{
		Name: "reports/" + id, Patient: patient, RequestingFacility: "facilities/dls", LabFacility: "facilities/qrmyy",
		State: labv1.Report_STATE_FINAL, Version: 1, VerifyTime: timestamppb.New(released),
	}
	for _, c := range codes {
		r.Results = append(r.Results, &labv1.Result{Code: c, Value: 4.2, Unit: "mmol/L", Flag: labv1.Flag_FLAG_N})
	}
	ev, err := eventOf("report.final", r.GetName(), r)
	if err != nil {
		panic(err)
	}
	return ev
}

// load fills the registry with n entries through Ingest (the follower's
// path without the stream): each of the patients gets two potassium,
// sodium, chloride and glucose results and two chest films, the rest are
// five random results of synthetic patients over the past year. Events are
// made batch by batch, so the process's memory is the service's.
func load(b *testing.B, f *fixture, n int, patients []string) {
	b.Helper()
	ctx := context.Background()
	real := 4 * len(patients) // events: two lab reports and two films each
	total := real + (n-10*len(patients))/5
	eventAt := func(i int) *typev1.Event {
		if i < real {
			p, j := patients[i/4], i%4
			age := []time.Duration{24 * time.Hour, 40 * 24 * time.Hour}[j%2]
			if j < 2 {
				return labEvent(fmt.Sprintf("R%d-%d", i/4, j), p, t0.Add(-age), checkedItems[:4])
			}
			x, err := eventOf("report.final", fmt.Sprintf("reports/X%d-%d", i/4, j), &typev1.ExamReport{
				Name: fmt.Sprintf("reports/X%d-%d", i/4, j), Patient: p, ExamType: &typev1.Code{Code: "DX-CHEST"}, CenterFacility: "facilities/qrmyy",
				Version: 1, FinalTime: timestamppb.New(t0.Add(-age)), Content: &typev1.ReportContent{Results: []*typev1.Code{{Code: "NORMAL"}}},
			})
			if err != nil {
				panic(err)
			}
			return x
		}
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		codes := slices.Clone(benchItems)
		rng.Shuffle(len(codes), func(a, c int) { codes[a], codes[c] = codes[c], codes[a] })
		p := fmt.Sprintf("patients/s%06d", rng.IntN(max(n/5, 1)))
		return labEvent(fmt.Sprintf("S%07d", i), p, t0.Add(-time.Duration(rng.IntN(365*24))*time.Hour), codes[:5])
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	const batch = 256
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(batch)) - batch
				if i >= total {
					return
				}
				chunk := make([]*typev1.Event, 0, batch)
				for j := i; j < min(i+batch, total); j++ {
					ev := eventAt(j)
					ev.Cursor = strconv.Itoa(j + 1)
					chunk = append(chunk, ev)
				}
				if err := f.svc.Ingest(ctx, community, "lab", chunk); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// registerPatients registers n patients at dls.
func registerPatients(b *testing.B, f *fixture, n int) []string {
	b.Helper()
	out := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			ctx := f.doctor(b)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				resp, err := f.dir.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{
					ResidentId: directory.WithCheckDigit(fmt.Sprintf("15082419800101%03d", i)), DisplayName: "病人",
				})
				if err != nil {
					b.Error(err)
					return
				}
				out[i] = resp.GetPatient().GetName()
			}
		})
	}
	wg.Wait()
	return out
}

// BenchmarkCheckRecognition1M measures CheckRecognition of 5 items against
// a registry of MCC_BENCH_ENTRIES entries: latency percentiles at one
// client and throughput at 32, and the process's RSS.
func BenchmarkCheckRecognition1M(b *testing.B) {
	n := benchEntries(b)
	f := newFixture(b)
	f.close() // no follower: the registry is loaded directly
	f.open(b)
	patients := registerPatients(b, f, 1000)
	start := time.Now()
	load(b, f, n, patients)
	loaded := time.Since(start)
	runtime.GC()
	info, err := os.Stat(f.path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d entries in %s (%.0f entries/s); file %.0f MB; RSS %s", n, loaded.Round(time.Second), float64(n)/loaded.Seconds(), float64(info.Size())/(1<<20), rss())
	// The checks run on a service started again on the loaded file, as
	// after a restart: its RSS is what serving a 1M registry costs.
	f.restart(b)
	runtime.GC()
	debug.FreeOSMemory()
	b.Logf("restarted: RSS %s", rss())
	check := func(ctx context.Context, i int) error {
		resp, err := f.rec.CheckRecognition(ctx, &recognitionv1.CheckRecognitionRequest{Patient: patients[i%len(patients)], Items: checkedItems, Purpose: "benchmark"})
		if err == nil && len(resp.GetItems()[0].GetRecognizable()) != 1 {
			err = fmt.Errorf("%d recognizable potassium results, want 1", len(resp.GetItems()[0].GetRecognizable()))
		}
		return err
	}
	one := func(b *testing.B) {
		ctx := f.doctor(b)
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			t := time.Now()
			if err := check(ctx, i); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		b.StopTimer()
		slices.Sort(lat)
		pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000 }
		b.ReportMetric(pct(0.50), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
	}
	many := func(b *testing.B) {
		ctx := f.doctor(b)
		var next atomic.Int64
		b.SetParallelism(16) // 32 goroutines on this 2-core machine
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := check(ctx, int(next.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
	}
	b.Run("clients=1", one)
	b.Run("clients=32", many)
	b.Logf("RSS after the checks: %s", rss())
	// The same with the check records committed in groups, off the
	// answer's path (-recognition.check-log-delay=5ms).
	f.cfg.CheckLogDelay = 5 * time.Millisecond
	f.restart(b)
	b.Run("clients=1/check-log-delay=5ms", one)
	b.Run("clients=32/check-log-delay=5ms", many)
	b.Logf("RSS after the checks: %s", rss())
}

// BenchmarkIngest measures the registry's ingest from a center's feed over
// gRPC: b.N final lab reports of 5 results each, from the fake lab's
// WatchEvents stream to the entries and the moved cursor.
func BenchmarkIngest(b *testing.B) {
	if testing.Short() {
		b.Skip("benchmark")
	}
	f := newFixture(b)
	evs := make([]*typev1.Event, b.N)
	for i := range evs {
		evs[i] = labEvent(fmt.Sprintf("I%07d", i), fmt.Sprintf("patients/i%06d", i%50000), t0.Add(-time.Hour), benchItems[i%4:i%4+5])
	}
	b.ReportAllocs()
	b.ResetTimer()
	f.lab.add(evs...)
	f.waitIndexed(b, "lab", strconv.Itoa(b.N))
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
	b.ReportMetric(5*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkLongHistory measures what a long history of one item costs: a
// patient with 1, 100 or 1,000 weekly potassium results (1,000 is twenty
// years of them), all in one item bucket. For each,
// side by side, a check of that item (one client) and the ingest of an
// amended version of the newest report, which rewrites the bucket and
// leaves its size as it was.
func BenchmarkLongHistory(b *testing.B) {
	if testing.Short() {
		b.Skip("benchmark")
	}
	const potassium = "2823-3"
	for _, history := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			f := newFixture(b)
			f.close() // no follower: the registry is loaded directly
			f.open(b)
			patient := registerPatients(b, f, 1)[0]
			ctx := context.Background()
			cursor := 0
			ingest := func(released time.Time) {
				cursor++
				ev := labEvent(fmt.Sprintf("H%d", cursor), patient, released, []string{potassium})
				ev.Cursor = strconv.Itoa(cursor)
				if err := f.svc.Ingest(ctx, community, "lab", []*typev1.Event{ev}); err != nil {
					b.Fatal(err)
				}
			}
			for i := history; i > 0; i-- {
				ingest(t0.Add(-time.Duration(7*i-6) * 24 * time.Hour))
			}
			doctor := f.doctor(b)
			b.Run("check", func(b *testing.B) {
				b.ReportAllocs()
				for range b.N {
					resp, err := f.rec.CheckRecognition(doctor, &recognitionv1.CheckRecognitionRequest{Patient: patient, Items: []string{potassium}, Purpose: "benchmark"})
					if err != nil {
						b.Fatal(err)
					}
					if len(resp.GetItems()[0].GetRecognizable()) == 0 {
						b.Fatal("the newest potassium result is not recognizable")
					}
				}
			})
			b.Run("ingest", func(b *testing.B) {
				b.ReportAllocs()
				for i := range b.N {
					cursor++
					ev := labEvent(fmt.Sprintf("H%d", history), patient, t0.Add(-24*time.Hour), []string{potassium})
					amended := &labv1.Report{}
					if err := ev.GetSnapshot().UnmarshalTo(amended); err != nil {
						b.Fatal(err)
					}
					amended.Version = int32(i + 2)
					ev, err := eventOf("report.amended", amended.GetName(), amended)
					if err != nil {
						b.Fatal(err)
					}
					ev.Cursor = strconv.Itoa(cursor)
					if err := f.svc.Ingest(ctx, community, "lab", []*typev1.Event{ev}); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				// Every amendment was applied: the newest entry is at the
				// last version.
				resp, err := f.rec.CheckRecognition(doctor, &recognitionv1.CheckRecognitionRequest{Patient: patient, Items: []string{potassium}, Purpose: "benchmark"})
				if err != nil {
					b.Fatal(err)
				}
				got, err := f.rec.GetResult(doctor, &recognitionv1.GetResultRequest{Name: resp.GetItems()[0].GetRecognizable()[0].GetResult()})
				if err != nil || got.GetResult().GetReportVersion() != int32(b.N+1) {
					b.Fatalf("the newest entry is at version %d (%v), want %d", got.GetResult().GetReportVersion(), err, b.N+1)
				}
			})
		})
	}
}
