package sterilization_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
)

// parallel runs fn on every item with a few concurrent clients, as the
// CSSD's scanners would, for benchmark setups.
func parallel(b *testing.B, items []string, fn func(string) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) {
					return
				}
				if err := fn(items[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// packed requests and packs n packages of dls, named prefix-i.
func (f *fixture) packed(b *testing.B, prefix string, n int) []string {
	b.Helper()
	barcodes := make([]string, n)
	for i := range barcodes {
		barcodes[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	parallel(b, barcodes, func(barcode string) error {
		name := "packages/" + barcode
		if _, err := f.client.CreatePackage(f.dls, &sterilizationv1.CreatePackageRequest{Barcode: barcode, SetType: "setTypes/suture"}); err != nil {
			return err
		}
		if _, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: name}); err != nil {
			return err
		}
		if _, err := f.client.WashPackage(f.cssd, &sterilizationv1.WashPackageRequest{Name: name}); err != nil {
			return err
		}
		if _, err := f.client.DisinfectPackage(f.cssd, &sterilizationv1.DisinfectPackageRequest{Name: name}); err != nil {
			return err
		}
		_, err := f.client.PackPackage(f.cssd, &sterilizationv1.PackPackageRequest{Name: name, Material: nonwoven})
		return err
	})
	return barcodes
}

// BenchmarkScanStep measures one scan of the chain (washing a collected
// package) over gRPC with every interceptor, the directory-free step
// transaction, its event, and the fsynced bolt store: one client, as at one
// scanning station.
func BenchmarkScanStep(b *testing.B) {
	f := newFixture(b)
	barcodes := make([]string, b.N)
	for i := range barcodes {
		barcodes[i] = fmt.Sprintf("SCAN-%07d", i)
	}
	parallel(b, barcodes, func(barcode string) error {
		if _, err := f.client.CreatePackage(f.dls, &sterilizationv1.CreatePackageRequest{Barcode: barcode, SetType: "setTypes/suture"}); err != nil {
			return err
		}
		_, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: "packages/" + barcode})
		return err
	})
	b.ReportAllocs()
	b.ResetTimer()
	for _, barcode := range barcodes {
		if _, err := f.client.WashPackage(f.cssd, &sterilizationv1.WashPackageRequest{Name: "packages/" + barcode}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReleaseLoad200 measures the release of a load of 200 packages:
// one transaction that stores all 200, indexes them in the store's
// inventory and appends 201 events.
func BenchmarkReleaseLoad200(b *testing.B) {
	f := newFixture(b)
	b.ReportAllocs()
	for i := range b.N {
		b.StopTimer()
		barcodes := f.packed(b, fmt.Sprintf("REL%d", i), 200)
		load := f.startLoad(b, "gr1", barcodes...)
		if _, err := f.client.RecordLoadResults(f.cssd, &sterilizationv1.RecordLoadResultsRequest{Name: load.GetName(), Physical: pass, Chemical: pass}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := f.client.ReleaseLoad(f.cssd, &sterilizationv1.ReleaseLoadRequest{Name: load.GetName()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecall10k measures a BI failure on a sterilizer whose history
// since its last passing BI holds 10,000 packages in 50 loads of 200: most
// in store, a quarter dispatched and received at the clinic, a tenth used on
// patients. The measured call locks the sterilizer, recalls the 50 loads,
// locates all 10,000 packages and writes the report and the notices, in one
// transaction.
func BenchmarkRecall10k(b *testing.B) {
	const loads, perLoad = 50, 200
	f := newFixture(b)
	b.ReportAllocs()
	for i := range b.N {
		b.StopTimer()
		sterilizer := fmt.Sprintf("hist%d", i)
		if _, err := f.client.CreateSterilizer(f.cssd, &sterilizationv1.CreateSterilizerRequest{SterilizerId: sterilizer, Sterilizer: &sterilizationv1.Sterilizer{DisplayName: sterilizer, Type: sterilizationv1.Sterilizer_TYPE_GRAVITY}}); err != nil {
			b.Fatal(err)
		}
		var last string
		var out, used []string
		for l := range loads {
			barcodes := f.packed(b, fmt.Sprintf("H%d-%02d", i, l), perLoad)
			load := f.startLoad(b, sterilizer, barcodes...)
			f.release(b, load.GetName())
			last = load.GetName()
			out = append(out, barcodes[:perLoad/4]...)
			used = append(used, barcodes[:perLoad/10]...)
		}
		parallel(b, out, func(barcode string) error {
			if _, err := f.dispatchErr(barcode, ""); err != nil {
				return err
			}
			_, err := f.client.ReceivePackage(f.dls, &sterilizationv1.ReceivePackageRequest{Name: "packages/" + barcode})
			return err
		})
		parallel(b, used, func(barcode string) error {
			_, err := f.useErr(f.dls, barcode, f.dlsPatients[len(barcode)%2], "doc-dls")
			return err
		})
		b.StartTimer()
		resp, err := f.client.RecordBiologicalResult(f.cssd, &sterilizationv1.RecordBiologicalResultRequest{Name: last, Result: fail})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r, err := f.client.GetRecall(f.cssd, &sterilizationv1.GetRecallRequest{Name: resp.GetRecall()})
		if err != nil {
			b.Fatal(err)
		}
		if got := r.GetRecall(); got.GetPackages() != loads*perLoad || got.GetUsed() != int32(len(used)) || got.GetDispatched() != int32(len(out)-len(used)) {
			b.Fatalf("recall of %d packages (%d used, %d dispatched), want %d (%d, %d)", got.GetPackages(), got.GetUsed(), got.GetDispatched(), loads*perLoad, len(used), len(out)-len(used))
		}
		b.StartTimer()
	}
}
