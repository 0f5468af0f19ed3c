package directory_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
)

// BenchmarkCreateFacility measures CreateFacility over real gRPC (bufconn),
// with auth, validation, the event append and the fsynced bolt store, at 1
// and 64 concurrent clients.
func BenchmarkCreateFacility(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			f := newFixture(b)
			benchCreate(b, f, clients)
		})
	}
}

func benchCreate(b *testing.B, f *fixture, clients int) {
	ctx := f.As(b, community, "qrmyy", admin)
	var n atomic.Int64
	b.SetParallelism((clients + 1) / 2)
	if clients == 1 {
		b.SetParallelism(1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("f%08d", n.Add(1))
			_, err := f.client.CreateFacility(ctx, &directoryv1.CreateFacilityRequest{FacilityId: id, Facility: &directoryv1.Facility{DisplayName: "卫生室", Level: typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC}})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkRegisterPatient measures RegisterPatient, which also checks the
// ID number, seals two identifiers and writes four keys.
func BenchmarkRegisterPatient(b *testing.B) {
	f := newFixture(b)
	ctx := f.As(b, community, "dls", clinician)
	born := time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)
	var n atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := directory.WithCheckDigit(fmt.Sprintf("150824%s%03d", born.AddDate(0, 0, int(i/1000)).Format("20060102"), i%1000))
			_, err := f.client.RegisterPatient(ctx, &directoryv1.RegisterPatientRequest{ResidentId: id, DisplayName: "患者"})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}
