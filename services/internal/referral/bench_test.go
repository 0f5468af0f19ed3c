package referral_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	"github.com/countymcc/mcc/services/internal/platform/timeid"
	"github.com/countymcc/mcc/services/internal/referral"
)

// stored is how many referrals the benchmarks run against.
const stored = 100_000

// BenchmarkReferral measures create, accept (triage) and the worklist over
// real gRPC (bufconn) with every production interceptor and the fsynced
// bolt store, with 100,000 referrals stored: a county's several years.
func BenchmarkReferral(b *testing.B) {
	f := newFixture(b, nil)
	seed(b, f, stored, 0)

	b.Run("create/clients=1", func(b *testing.B) { benchCreate(b, f, 1) })
	b.Run("create/clients=16", func(b *testing.B) { benchCreate(b, f, 16) })
	b.Run("accept", func(b *testing.B) {
		pending := seed(b, f, b.N, 1)
		ctx := f.as(b, "qrmyy", coordinator)
		appointment := timestamppb.New(f.Clock.Now().Add(24 * time.Hour))
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			_, err := f.client.AcceptReferral(ctx, &referralv1.AcceptReferralRequest{
				Name: pending[i], Mode: referralv1.Triage_MODE_OUTPATIENT, Department: "神经内科", AppointmentTime: appointment,
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepts/s")
	})
	b.Run("worklist", func(b *testing.B) {
		ctx := f.as(b, "qrmyy", clinician)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			resp, err := f.client.ListWorklist(ctx, &referralv1.ListWorklistRequest{Stage: referralv1.Stage_STAGE_TRIAGE})
			if err != nil {
				b.Fatal(err)
			}
			if len(resp.GetReferrals()) != 50 {
				b.Fatalf("a page of %d", len(resp.GetReferrals()))
			}
		}
	})
}

// BenchmarkWorklistSmallStore is the worklist query with 1,000 referrals
// stored, to compare with 100,000: the query reads one page of index keys
// and the referrals they name, whatever the store holds.
func BenchmarkWorklistSmallStore(b *testing.B) {
	f := newFixture(b, nil)
	seed(b, f, 1000, 0)
	ctx := f.as(b, "qrmyy", clinician)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := f.client.ListWorklist(ctx, &referralv1.ListWorklistRequest{Stage: referralv1.Stage_STAGE_TRIAGE}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchCreate(b *testing.B, f *fixture, clients int) {
	ctx := f.as(b, "dls", clinician)
	r := f.upReferral()
	var n atomic.Int64
	b.SetParallelism((clients + 1) / 2)
	if clients == 1 {
		b.SetParallelism(1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := f.client.CreateReferral(ctx, &referralv1.CreateReferralRequest{Referral: r, RequestId: fmt.Sprintf("bench-%d-%d", clients, n.Add(1))})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// seed stores n referrals directly and returns their names. With pending
// set, all are up-referrals to qrmyy waiting for triage; otherwise they
// spread over two county hospitals and three senders, a tenth waiting for
// triage, a tenth accepted and the rest completed, a third of the patients
// contracted.
func seed(b *testing.B, f *fixture, n int, pending int) []string {
	b.Helper()
	senders := []string{"facilities/dls", "facilities/wjh", "facilities/dls-wl"}
	targets := []string{"facilities/qrmyy", "facilities/mzyy"}
	base := f.upReferral()
	names := make([]string, n)
	rs := make([]*referralv1.Referral, n)
	created := f.Clock.Now().Add(-time.Duration(n) * time.Second)
	for i := range n {
		id, err := timeid.New(created.Add(time.Duration(i) * time.Second))
		if err != nil {
			b.Fatal(err)
		}
		r := proto.CloneOf(base)
		r.Name, r.SendingFacility, r.TargetFacility = "referrals/"+id, senders[i%3], targets[i%2]
		r.FamilyDoctorContract = i%3 == 0
		r.State = referralv1.Referral_STATE_COMPLETED
		switch {
		case pending > 0:
			r.TargetFacility, r.State = "facilities/qrmyy", referralv1.Referral_STATE_PENDING
		case i%10 == 0:
			r.State = referralv1.Referral_STATE_PENDING
		case i%10 == 1:
			r.State = referralv1.Referral_STATE_ACCEPTED
		}
		rs[i], names[i] = r, r.Name
	}
	if err := referral.Seed(context.Background(), f.store, community, rs); err != nil {
		b.Fatal(err)
	}
	return names
}
