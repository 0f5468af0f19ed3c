// Package bench is `mcc bench`: a load tool that plays a county's day
// against a running mcc (or one it starts on a temporary data directory),
// through REST and gRPC, and reports each operation's throughput, latency
// percentiles and errors, the server's memory and CPU, and, with -baseline,
// the same calls against a bare gRPC and grpc-gateway echo as ratios.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
)

// Config is what `mcc bench` is told on its command line.
type Config struct {
	// HTTPURL, GRPCAddr and DataDir name a running mcc; empty HTTPURL
	// starts one.
	HTTPURL, GRPCAddr, DataDir string
	// PID is the running mcc's process, for its memory and CPU (0: not
	// reported).
	PID         int
	ServerFlags string
	Facilities  int
	Patients    int
	Concurrency int
	Duration    time.Duration
	Rate        float64
	Mix         string
	Baseline    bool
	Phase       time.Duration
	Rounds      int
	// StartupRecords, if positive, measures the start instead of the load:
	// that many records are stored first.
	StartupRecords int
}

// RegisterFlags registers the flags of `mcc bench`.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPURL, "http-url", "", "REST base URL of a running mcc, e.g. http://127.0.0.1:8080 (default: start one on a temporary bolt data directory)")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC address of the running mcc (with -http-url)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "data directory of the running mcc, for its signing key (with -http-url)")
	fs.IntVar(&c.PID, "pid", 0, "process ID of the running mcc, to report its memory and CPU (with -http-url)")
	fs.StringVar(&c.ServerFlags, "server-flags", "", "extra flags for the mcc the tool starts, space-separated")
	fs.IntVar(&c.Facilities, "facilities", 20, "township health centers in the community")
	fs.IntVar(&c.Patients, "patients", 25, "registered patients of each township health center")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "concurrent clients")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "length of the county-day mix (0: skip it)")
	fs.Float64Var(&c.Rate, "rate", 0, "scenarios started per second over all clients (0: closed loop, each client starts the next when one ends)")
	fs.StringVar(&c.Mix, "mix", "lab:3,labgrpc:1,imaging:1,ecg:1,referral:2,recognition:2,feed:4", "scenario weights: lab (REST order to verified report), labgrpc (the same over gRPC), imaging, ecg, referral (create and triage), recognition (a check of five items), feed (poll)")
	fs.BoolVar(&c.Baseline, "baseline", false, "also compare create lab order with a bare gRPC echo and a bare grpc-gateway echo, interleaved A B A B")
	fs.DurationVar(&c.Phase, "baseline.phase", 10*time.Second, "length of each baseline phase")
	fs.IntVar(&c.Rounds, "baseline.rounds", 2, "rounds of the baseline (each: echo then mcc, REST then gRPC)")
	fs.IntVar(&c.StartupRecords, "startup-records", 0, "measure the start instead: store this many lab orders (with their events) in a new data directory, then time mcc from its start to ready, and its idle memory")
}

// Run runs the benchmark cfg describes, writing the report to out. exe is
// the mcc executable, started as the server under test.
func Run(ctx context.Context, cfg Config, exe string, out io.Writer) error {
	if cfg.StartupRecords > 0 {
		return runStartup(ctx, cfg, exe, out)
	}
	mix, err := parseMix(cfg.Mix)
	if err != nil {
		return err
	}
	if cfg.Concurrency < 1 || cfg.Facilities < 1 || cfg.Patients < 1 || cfg.Rounds < 1 {
		return errors.New("-concurrency, -facilities, -patients and -baseline.rounds must be at least 1")
	}
	srv, cleanup, err := startServer(ctx, cfg, exe)
	if err != nil {
		return err
	}
	defer cleanup()
	if srv.ready > 0 {
		fmt.Fprintf(out, "mcc started in %s (ready at /readyz), pid %d, data %s\n", srv.ready.Round(time.Millisecond), srv.pid, srv.dataDir)
	}
	conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: cfg.Concurrency * 2, MaxIdleConnsPerHost: cfg.Concurrency * 2}}
	setupRec := NewRecorder()
	c, err := newCounty(srv, conn, hc, cfg.Facilities, cfg.Patients, setupRec)
	if err != nil {
		return err
	}
	if err := c.setup(ctx); err != nil {
		return fmt.Errorf("setting up the county: %w", err)
	}
	if srv.pid != 0 {
		time.Sleep(time.Second)
		if p, err := readProc(srv.pid); err == nil {
			fmt.Fprintf(out, "idle RSS after setup (%d facilities): %s\n", cfg.Facilities, mb(p.RSSBytes))
		}
	}
	if cfg.Duration > 0 {
		if err := runMix(ctx, cfg, c, srv, mix, out); err != nil {
			return err
		}
	}
	if cfg.Baseline {
		return runBaseline(ctx, cfg, c, srv, conn, out)
	}
	return nil
}

// startServer returns the mcc under test and a function that releases it.
func startServer(ctx context.Context, cfg Config, exe string) (*server, func(), error) {
	if cfg.HTTPURL != "" {
		return &server{httpURL: strings.TrimSuffix(cfg.HTTPURL, "/"), grpcAddr: cfg.GRPCAddr, dataDir: cfg.DataDir, pid: cfg.PID}, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "mcc-bench-")
	if err != nil {
		return nil, nil, err
	}
	pacs, err := startPACS()
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	// The gateway's per-client rate limit is off: the tool is one client
	// far faster than a clinic. Every other protection stays on.
	flags := append([]string{"-gateway.rate-limit=0", "-log-level=warn", "-imaging.dicomweb-url=" + pacs.url}, strings.Fields(cfg.ServerFlags)...)
	srv, err := startChild(ctx, exe, dir, flags...)
	if err != nil {
		pacs.close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return srv, func() {
		if err := srv.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "mcc bench:", err)
		}
		pacs.close()
		os.RemoveAll(dir)
	}, nil
}

// scenario is one weighted kind of work a client does.
type scenario struct {
	name   string
	weight int
	run    func(*county, context.Context) error
}

var scenarios = map[string]func(*county, context.Context) error{
	"lab":         (*county).labREST,
	"labgrpc":     (*county).labGRPC,
	"imaging":     (*county).imaging,
	"ecg":         (*county).ecg,
	"referral":    (*county).referral,
	"recognition": (*county).recognition,
	"feed":        (*county).feed,
}

func parseMix(s string) ([]scenario, error) {
	var out []scenario
	for _, part := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), ":")
		weight, err := strconv.Atoi(w)
		run, known := scenarios[name]
		if !ok || err != nil || weight < 0 || !known {
			return nil, fmt.Errorf("-mix: %q is not name:weight with a known name (%s)", part, strings.Join(scenarioNames(), ", "))
		}
		if weight > 0 {
			out = append(out, scenario{name: name, weight: weight, run: run})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-mix: no scenario has a weight")
	}
	return out, nil
}

func scenarioNames() []string {
	var names []string
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func pick(mix []scenario) scenario {
	total := 0
	for _, s := range mix {
		total += s.weight
	}
	n := rand.IntN(total)
	for _, s := range mix {
		if n < s.weight {
			return s
		}
		n -= s.weight
	}
	return mix[len(mix)-1]
}

// drive runs fn from concurrency clients for d: in a closed loop, or, with
// rate > 0, started at that rate over all clients.
func drive(ctx context.Context, concurrency int, rate float64, d time.Duration, fn func(context.Context)) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ticks <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		ticks = t.C
	}
	// Calls run to their end after the deadline, so none is counted as a
	// failure only because the run ended.
	calls := context.WithoutCancel(ctx)
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if ticks != nil {
					select {
					case <-ticks:
					case <-ctx.Done():
						return
					}
				}
				fn(calls)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// sampler reads the server's RSS every 200 ms and keeps the peak.
type sampler struct {
	pid   int
	stop  chan struct{}
	done  chan struct{}
	peak  int64
	start procStats
}

func startSampler(pid int) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	if pid == 0 {
		close(s.done)
		return s
	}
	s.start, _ = readProc(pid)
	go func() {
		defer close(s.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if p, err := readProc(pid); err == nil && p.RSSBytes > s.peak {
				s.peak = p.RSSBytes
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// end stops sampling and returns the peak RSS and the CPU seconds used.
func (s *sampler) end() (peak int64, cpu float64) {
	if s.pid == 0 {
		return 0, 0
	}
	close(s.stop)
	<-s.done
	p, _ := readProc(s.pid)
	return s.peak, p.CPUSecs - s.start.CPUSecs
}

func runMix(ctx context.Context, cfg Config, c *county, srv *server, mix []scenario, out io.Writer) error {
	fmt.Fprintf(out, "\ncounty-day mix: %d facilities, %d clients, %s, rate %s, mix %s\n", cfg.Facilities, cfg.Concurrency, cfg.Duration, rateText(cfg.Rate), cfg.Mix)
	c.rec = NewRecorder()
	smp := startSampler(srv.pid)
	elapsed := drive(ctx, cfg.Concurrency, cfg.Rate, cfg.Duration, func(ctx context.Context) {
		pick(mix).run(c, ctx) // each call is recorded, errors included
	})
	peak, cpu := smp.end()
	printSummaries(out, c.rec.Summaries(elapsed))
	ok, failed := c.rec.Total()
	fmt.Fprintf(out, "total: %d calls (%.1f /s), %d errors\n", ok+failed, float64(ok+failed)/elapsed.Seconds(), failed)
	if srv.pid != 0 {
		fmt.Fprintf(out, "server: peak RSS %s, CPU %.2f s = %.3f CPU s per 1,000 calls\n", mb(peak), cpu, cpu*1000/float64(max(ok+failed, 1)))
	}
	return ctx.Err()
}

func rateText(r float64) string {
	if r == 0 {
		return "closed loop"
	}
	return fmt.Sprintf("%.0f/s", r)
}

// runBaseline measures create lab order against the echo, over REST and
// gRPC, in rounds of four phases: echo REST, mcc REST, echo gRPC, mcc gRPC.
func runBaseline(ctx context.Context, cfg Config, c *county, srv *server, conn *grpc.ClientConn, out io.Writer) error {
	// One real order gives the echo its answer, so both carry the same
	// payloads.
	t := &c.towns[0]
	resp, err := c.lab.CreateOrder(withToken(ctx, t.clinician), &labv1.CreateOrderRequest{Order: orderProto(t.patient()), RequestId: c.next()})
	if err != nil {
		return fmt.Errorf("baseline: first order: %w", err)
	}
	e, err := startEcho(resp)
	if err != nil {
		return err
	}
	defer e.close()
	echoConn := e.conn
	type phase struct {
		name string
		rec  *Recorder
		took time.Duration
		// cpu and calls are the server's CPU seconds and calls (mcc phases).
		cpu   float64
		calls int64
		peak  int64
		fn    func(ctx context.Context, rec *Recorder)
	}
	echoREST := func(ctx context.Context, rec *Recorder) {
		t := c.town()
		start := time.Now()
		err := c.callURL(ctx, "POST", e.httpURL+"/v1/echo", "", orderJSON(t.patient()), nil)
		rec.Record("create lab order", time.Since(start), err)
	}
	phases := []*phase{
		{name: "REST echo (grpc-gateway)", fn: echoREST},
		{name: "REST mcc", fn: func(ctx context.Context, rec *Recorder) {
			t := c.town()
			start := time.Now()
			err := c.call(ctx, "POST", "/v1/lab/orders?requestId="+c.next(), t.clinician, orderJSON(t.patient()), nil)
			rec.Record("create lab order", time.Since(start), err)
		}},
		{name: "gRPC echo", fn: func(ctx context.Context, rec *Recorder) {
			t := c.town()
			start := time.Now()
			err := echoConn.Invoke(ctx, echoMethod, &labv1.CreateOrderRequest{Order: orderProto(t.patient()), RequestId: c.next()}, new(labv1.CreateOrderResponse))
			rec.Record("create lab order", time.Since(start), err)
		}},
		{name: "gRPC mcc", fn: func(ctx context.Context, rec *Recorder) {
			t := c.town()
			start := time.Now()
			_, err := c.lab.CreateOrder(withToken(ctx, t.clinician), &labv1.CreateOrderRequest{Order: orderProto(t.patient()), RequestId: c.next()})
			rec.Record("create lab order", time.Since(start), err)
		}},
	}
	for _, p := range phases {
		p.rec = NewRecorder()
	}
	fmt.Fprintf(out, "\nbaseline: create lab order, %d clients, %d rounds of %s phases (A B A B)\n", cfg.Concurrency, cfg.Rounds, cfg.Phase)
	for round := range cfg.Rounds {
		for _, p := range phases {
			rec := NewRecorder()
			smp := startSampler(srv.pid)
			took := drive(ctx, cfg.Concurrency, cfg.Rate, cfg.Phase, func(ctx context.Context) { p.fn(ctx, rec) })
			peak, cpu := smp.end()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ok, failed := rec.Total()
			s := rec.Summaries(took)[0]
			fmt.Fprintf(out, "  round %d %-26s %9.1f /s  p50 %s  p99 %s  errors %d\n", round+1, p.name, s.PerSecond, ms(s.P50), ms(s.P99), failed)
			p.rec.merge(rec)
			p.took += took
			if strings.Contains(p.name, "mcc") {
				p.cpu += cpu
				p.calls += ok + failed
				p.peak = max(p.peak, peak)
			}
		}
	}
	sums := make([]Summary, len(phases))
	for i, p := range phases {
		sums[i] = p.rec.Summaries(p.took)[0]
		sums[i].Op = p.name
	}
	printSummaries(out, sums)
	ratio := func(name string, mcc, echo Summary, minThroughput float64, maxP99 float64) {
		tr := mcc.PerSecond / echo.PerSecond
		pr := float64(mcc.P99) / float64(echo.P99)
		fmt.Fprintf(out, "%s: throughput %.2f× echo (target ≥ %.1f×: %s), p99 %.2f× echo", name, tr, minThroughput, verdict(tr >= minThroughput), pr)
		if maxP99 > 0 {
			fmt.Fprintf(out, " (target ≤ %.0f×: %s)", maxP99, verdict(pr <= maxP99))
		}
		fmt.Fprintln(out)
	}
	ratio("REST create lab order", sums[1], sums[0], 0.5, 2)
	ratio("gRPC create lab order", sums[3], sums[2], 0.4, 0)
	if srv.pid != 0 {
		for _, p := range []*phase{phases[1], phases[3]} {
			fmt.Fprintf(out, "server during %s: peak RSS %s, %.3f CPU s per 1,000 calls\n", p.name, mb(p.peak), p.cpu*1000/float64(max(p.calls, 1)))
		}
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
