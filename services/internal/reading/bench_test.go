package reading_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// BenchmarkCreateToFinal runs exams from the request to the released
// report over gRPC (a bufconn server with every interceptor) on the bolt
// store: request, material received, claim, preliminary report, review,
// release, six calls and six durable transactions an exam. It reports
// exams per second, one client at a time and with parallel clients whose
// commits bolt groups.
func BenchmarkCreateToFinal(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(map[int]string{1: "serial", 8: "parallel8"}[clients], func(b *testing.B) {
			c := newCenter(b)
			doctor, wu, ma := c.Doctor(b), c.wu(b), c.ma(b)
			var n atomic.Int64
			run := func() error {
				id := n.Add(1)
				e, err := c.API.CreateExam(doctor, &pathologyv1.CreateExamRequest{Exam: &typev1.Exam{
					Patient: c.Batu, ExamType: &typev1.Code{Code: "PATH-CYTOLOGY"}, Priority: typev1.ExamPriority_EXAM_PRIORITY_ROUTINE,
				}})
				if err != nil {
					return err
				}
				name := e.GetExam().GetName()
				spec := c.specimen()
				spec.Barcode = fmt.Sprintf("BENCH%06d", id)
				steps := []func(context.Context) error{
					func(context.Context) error {
						_, err := c.API.ReceiveSpecimens(wu, &pathologyv1.ReceiveSpecimensRequest{Name: name, Specimens: []*typev1.PathologySpecimen{spec}})
						return err
					},
					func(context.Context) error {
						_, err := c.API.AssignExam(wu, &pathologyv1.AssignExamRequest{Name: name})
						return err
					},
					func(context.Context) error {
						_, err := c.API.WriteReport(wu, &pathologyv1.WriteReportRequest{Name: name, Content: content()})
						return err
					},
					func(context.Context) error {
						_, err := c.API.ReviewReport(ma, &pathologyv1.ReviewReportRequest{Name: name})
						return err
					},
					func(context.Context) error {
						_, err := c.API.FinalizeReport(ma, &pathologyv1.FinalizeReportRequest{Name: name})
						return err
					},
				}
				for _, step := range steps {
					if err := step(context.Background()); err != nil {
						return err
					}
				}
				return nil
			}
			b.ResetTimer()
			start := time.Now()
			if clients == 1 {
				for range b.N {
					if err := run(); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(max(clients/runtime.GOMAXPROCS(0), 1))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := run(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "exams/s")
		})
	}
}
