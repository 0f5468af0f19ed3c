package audit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	platformaudit "github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/server"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	storeredis "github.com/countymcc/mcc/services/internal/store/redis"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

// BenchmarkSecurityOverhead measures what authentication, authorization and
// the audit trail cost on one create that touches patient data (directory
// RegisterPatient, 256 concurrent clients, bolt with fsync, the metrics
// interceptor as in production). The variants run side by side in rounds
// (off, auth, on, off, auth, on...), so the noise
// of the shared machine hits all of them alike, and each reports its
// throughput and the process CPU time per create.
//
//   - off: no token is checked, no policy applies and nothing is audited;
//     an interceptor puts a fixed caller into the context, as the
//     authentication interceptor would.
//   - auth: JWT verification and the role and scope policy, no audit.
//   - on: the production chain: JWT verification, the policy, and one
//     hash-chained audit record written (group commit, fsync) before the
//     call returns.
func BenchmarkSecurityOverhead(b *testing.B) {
	const rounds = 5
	for range rounds {
		for _, v := range []variant{off, authOnly, on} {
			b.Run(v.String(), func(b *testing.B) { benchRegister(b, v) })
		}
	}
}

// variant is what BenchmarkSecurityOverhead turns on.
type variant int

const (
	off variant = iota
	authOnly
	on
)

func (v variant) String() string { return [...]string{"off", "auth", "on"}[v] }

func benchRegister(b *testing.B, v variant) {
	clk := clock.NewManual(time.Now())
	dir := b.TempDir()
	open := func(name string) *bolt.Store {
		st, err := bolt.Open(filepath.Join(dir, name+".db"), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	protector, err := pii.NewProtector(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	svc := directory.New(open("directory"), protector, clk)
	const method = "/mcc.directory.v1.DirectoryService/RegisterPatient"
	caller := auth.Caller{Subject: "bench", Community: "demo", Facility: "facilities/dls", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
	policy := directory.Policy()
	var opts []servertest.Option
	switch v {
	case on:
		logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
		rec := platformaudit.NewRecorder(platformaudit.NewWriter(platformaudit.NewTrail(open("audit"))), clk, logger)
		opts = append(opts, servertest.WithAudit(rec))
	case off:
		// A method mapped to nil needs no token: authentication and
		// authorization are skipped for it.
		policy = auth.Policy{method: nil}
		fixed := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(auth.WithCaller(ctx, caller), req)
		})
		opts = append(opts, func(d *server.Deps) { d.Transport = append(d.Transport, fixed) })
	}
	opts = append(opts, func(d *server.Deps) {
		d.Metrics = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	})
	env := servertest.Start(b, clk, policy, svc.Register, opts...)
	tok, err := env.Keys.Issue(caller, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ctx := servertest.WithToken(context.Background(), tok)
	client := directoryv1.NewDirectoryServiceClient(env.Conn)
	born := time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)
	var n atomic.Int64
	b.SetParallelism(128) // 256 clients on 2 cores
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := directory.WithCheckDigit(fmt.Sprintf("150824%s%03d", born.AddDate(0, 0, int(i/1000)).Format("20060102"), i%1000))
			if _, err := client.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{ResidentId: id, DisplayName: "患者"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	// CPU per create, of the whole process (clients, server, stores): the
	// machine is shared, so wall-clock throughput varies with other load,
	// while the CPU a create costs does not, and it bounds the throughput
	// of a saturated server.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppend measures what storing audit records costs on bolt (fsync
// on), without the interceptor and the call, in batches of 1 and of 40
// (what the Writer's group commit gathers at 256 concurrent calls), as
// process CPU time per record: the record's encoding and hash, its key and
// three index entries, and its share of the commit.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 40} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			st, err := bolt.Open(filepath.Join(b.TempDir(), "audit.db"), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			trail := platformaudit.NewTrail(st)
			t0 := time.Now()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				recs := make([]*auditv1.AuditRecord, min(batch, b.N-i))
				for j := range recs {
					recs[j] = &auditv1.AuditRecord{
						Time:     timestamppb.New(t0.Add(time.Duration(i+j) * time.Millisecond)),
						Subject:  fmt.Sprintf("doctor-%d", (i+j)%3),
						Facility: "facilities/dls",
						Method:   "/mcc.directory.v1.DirectoryService/RegisterPatient",
						Patients: []string{fmt.Sprintf("patients/%016x", (i+j)*7919)},
						Outcome:  "OK",
					}
				}
				if err := trail.Append(context.Background(), "demo", recs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/record")
		})
	}
}

// BenchmarkAppendReplicas measures the audit chain's throughput on Redis
// when several replicas append to one community's chain: 64 concurrent
// calls spread over 1, 2 or 4 Writers (one per replica), each committing
// its queue as one transaction that a concurrent commit of another replica
// makes run again. It reports the records a second and the latency of one
// append, the time an audited call waits for its record.
func BenchmarkAppendReplicas(b *testing.B) {
	addr := redistest.Start(b)
	for _, replicas := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			client, err := storeredis.Dial(context.Background(), storeredis.ClientConfig{Addrs: []string{addr}})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			st, err := storeredis.New(client, storeredis.Options{Prefix: redistest.Prefix(b), Service: "audit"})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			trail := platformaudit.NewTrail(st)
			writers := make([]*platformaudit.Writer, replicas)
			for i := range writers {
				writers[i] = platformaudit.NewWriter(trail)
			}
			t0 := time.Now()
			var n atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(32) // 64 calls on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				defer func() {
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
				for pb.Next() {
					i := n.Add(1)
					start := time.Now()
					rec := &auditv1.AuditRecord{
						Time: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond)), Subject: "doctor",
						Facility: "facilities/dls", Method: "/mcc.directory.v1.DirectoryService/GetPatient",
						Patients: []string{fmt.Sprintf("patients/%016x", i)}, Outcome: "OK",
					}
					if err := writers[int(i)%replicas].Write(context.Background(), "demo", rec); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			slices.Sort(lat)
			for _, p := range []float64{0.50, 0.99} {
				b.ReportMetric(float64(lat[int(float64(len(lat)-1)*p)].Microseconds())/1000, fmt.Sprintf("p%.0f-ms", p*100))
			}
			v, err := trail.Verify(context.Background(), "demo")
			if err != nil || !v.OK() || v.Checked != uint64(b.N) {
				b.Fatalf("verify: %s, %v; want %d records", v, err, b.N)
			}
		})
	}
}
