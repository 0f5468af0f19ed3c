package lab_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
)

// The benchmarks run over real gRPC (bufconn) with every production
// interceptor and the fsynced bolt store, with the directory on the same
// server for the order's peer calls.

// BenchmarkCreateOrder measures CreateOrder, which first reads the patient
// and the facility from the directory over gRPC, at 1 and 32 clients.
func BenchmarkCreateOrder(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			f := newFixture(b)
			ctx := f.doctor(b)
			clientsOf(b, clients)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_, err := f.lab.CreateOrder(ctx, &labv1.CreateOrderRequest{Order: &labv1.Order{Patient: f.batu, Tests: []string{"2823-3", "2951-2", "2345-7"}, Priority: labv1.Priority_PRIORITY_ROUTINE}})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
		})
	}
}

// clientsOf sets the goroutines of RunParallel to about clients on this
// 2-core machine (exactly 1 for 1), and starts the timer.
func clientsOf(b *testing.B, clients int) {
	b.SetParallelism(max(clients/2, 1))
	if clients == 1 {
		b.SetParallelism(1)
	}
	b.ReportAllocs()
	b.ResetTimer()
}

// prepare drives n specimens of 20-test orders to state in parallel and
// returns their barcodes.
func prepare(b *testing.B, f *fixture, n int, tests []string, state labv1.Specimen_State, enter bool) []string {
	b.Helper()
	barcodes := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				barcodes[i] = fmt.Sprintf("BN%07d", i)
				o := f.order(b, f.batu, labv1.Priority_PRIORITY_ROUTINE, tests...)
				f.toState(b, o, barcodes[i], state)
				if enter {
					var results []*labv1.ResultInput
					for _, code := range tests {
						results = append(results, &labv1.ResultInput{Code: code, Value: 4, Unit: unitOf[code]})
					}
					if _, err := f.lab.EnterResults(f.wang(b), &labv1.EnterResultsRequest{Name: "reports/" + barcodes[i], Results: results}); err != nil {
						b.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return barcodes
}

// twentySerumTests are 20 tests of one serum tube: electrolytes, renal,
// glucose, liver, lipids and troponin.
var twentySerumTests = []string{"2823-3", "2951-2", "2075-0", "2028-9", "2000-8", "22664-7", "14682-9", "2345-7", "1742-6", "1920-8",
	"6768-6", "2324-2", "14631-6", "2885-2", "1751-7", "14647-2", "14927-8", "14646-4", "22748-8", "89579-7"}

var unitOf = map[string]string{
	"2823-3": "mmol/L", "2951-2": "mmol/L", "2075-0": "mmol/L", "2028-9": "mmol/L", "2000-8": "mmol/L", "22664-7": "mmol/L",
	"14682-9": "umol/L", "2345-7": "mmol/L", "1742-6": "U/L", "1920-8": "U/L", "6768-6": "U/L", "2324-2": "U/L", "14631-6": "umol/L",
	"2885-2": "g/L", "1751-7": "g/L", "14647-2": "mmol/L", "14927-8": "mmol/L", "14646-4": "mmol/L", "22748-8": "mmol/L", "89579-7": "ng/L",
}

// BenchmarkReceiveSpecimen measures the reception of specimens in transit:
// the transport check against the catalog, the order's move to in
// progress, two events, at 16 clients.
func BenchmarkReceiveSpecimen(b *testing.B) {
	f := newFixture(b)
	barcodes := prepare(b, f, b.N, []string{"2823-3", "2951-2"}, labv1.Specimen_STATE_IN_TRANSIT, false)
	ctx := f.wang(b)
	var next atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if _, err := f.lab.ReceiveSpecimen(ctx, &labv1.ReceiveSpecimenRequest{Name: "specimens/" + barcodes[i]}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "receptions/s")
}

// BenchmarkVerifyReport20 measures the verification of a report of 20
// results: the report, its specimen and its order change, statistics facts
// are written, four events appended, in one transaction, at 1 and 16
// clients.
func BenchmarkVerifyReport20(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			f := newFixture(b)
			barcodes := prepare(b, f, b.N, twentySerumTests, labv1.Specimen_STATE_IN_TESTING, true)
			ctx := f.liu(b)
			var next atomic.Int64
			clientsOf(b, clients)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					r, err := f.lab.VerifyReport(ctx, &labv1.VerifyReportRequest{Name: "reports/" + barcodes[i]})
					if err != nil {
						b.Error(err)
						return
					}
					if len(r.GetReport().GetResults()) != 20 {
						b.Errorf("%d results", len(r.GetReport().GetResults()))
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
		})
	}
}
