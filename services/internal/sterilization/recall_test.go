package sterilization_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/testing/protocmp"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/sterilization"
)

const (
	inStore       = sterilizationv1.RecallItem_LOCATION_IN_STORE
	dispatchedLoc = sterilizationv1.RecallItem_LOCATION_DISPATCHED
	usedLoc       = sterilizationv1.RecallItem_LOCATION_USED
)

// TestRecallFindsEveryPackage: a BI failure recalls every package
// sterilized on the sterilizer since its last passing BI, and finds each
// one in store, at a clinic, or used on a patient, even one that has been
// collected again since.
func TestRecallFindsEveryPackage(t *testing.T) {
	f := newFixture(t)
	// Cycle 1 passed its BI: it is not recalled.
	old := f.stored(t, f.dls, "suture", "R-OLD")
	f.bi(t, old.GetName(), pass)
	// Cycle 2 is the one whose BI fails.
	dlsPackages := []string{"R-STORE", "R-DLS", "R-USED1", "R-BACK"}
	for _, b := range dlsPackages {
		f.request(t, f.dls, b, "suture")
	}
	for _, b := range []string{"R-WJH", "R-USED2"} {
		f.request(t, f.wjh, b, "suture")
	}
	all := append(dlsPackages, "R-WJH", "R-USED2")
	for _, b := range all {
		f.pack(t, b, nonwoven)
	}
	bad := f.startLoad(t, "pv1", all...)
	f.release(t, bad.GetName())
	for _, b := range all[1:] {
		f.dispatch(t, b, "")
	}
	f.receive(t, f.dls, "R-DLS")
	for _, u := range []struct{ barcode, patient string }{{"R-USED1", f.dlsPatients[0]}, {"R-BACK", f.dlsPatients[1]}} {
		f.receive(t, f.dls, u.barcode)
		f.use(t, f.dls, u.barcode, u.patient, "doc-dls")
	}
	f.receive(t, f.wjh, "R-USED2")
	f.use(t, f.wjh, "R-USED2", f.wjhPatient, "doc-wjh")
	if _, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: "packages/R-BACK"}); err != nil {
		t.Fatal(err)
	}
	f.dispatch(t, "R-OLD", "")
	// Cycle 3 is still running when the result arrives.
	f.request(t, f.dls, "R-RUN", "suture")
	f.pack(t, "R-RUN", nonwoven)
	running := f.startLoad(t, "pv1", "R-RUN")

	resp := f.bi(t, bad.GetName(), fail)
	if resp.GetRecall() == "" || resp.GetLoad().GetState() != sterilizationv1.Load_STATE_RECALLED {
		t.Fatalf("BI failure: %v", resp)
	}
	recall := resp.GetRecall()

	got, err := f.client.GetRecall(f.cssd, &sterilizationv1.GetRecallRequest{Name: recall})
	if err != nil {
		t.Fatal(err)
	}
	want := &sterilizationv1.Recall{
		Name: recall, Sterilizer: "sterilizers/pv1", FailedLoad: bad.GetName(), Facility: "facilities/qrmyy",
		Loads: []string{bad.GetName(), running.GetName()}, Packages: 7, InStore: 2, Dispatched: 2, Used: 3, ExposedPatients: 3,
		Facilities: []*sterilizationv1.RecallImpact{
			{Facility: "facilities/dls", InStore: 2, Dispatched: 1, Used: 2, ExposedPatients: 2},
			{Facility: "facilities/wjh", Dispatched: 1, Used: 1, ExposedPatients: 1},
		},
		Etag: "1",
	}
	if diff := cmp.Diff(want, got.GetRecall(), protocmp.Transform(), protocmp.IgnoreFields(&sterilizationv1.Recall{}, "create_time")); diff != "" {
		t.Errorf("recall (-want +got):\n%s", diff)
	}

	item := func(barcode string, cycle int32, load string, owner string, loc sterilizationv1.RecallItem_Location, where, patient, doc string) *sterilizationv1.RecallItem {
		it := &sterilizationv1.RecallItem{Recall: recall, Package: "packages/" + barcode, Cycle: cycle, Load: load, SetType: "setTypes/suture", Owner: "facilities/" + owner, Location: loc, Facility: "facilities/" + where}
		if patient != "" {
			it.Use = &sterilizationv1.Use{Patient: patient, Clinician: "practitioners/" + doc, Facility: "facilities/" + where, Procedure: &typev1.Code{System: "ICD-9-CM-3", Code: "86.59", Display: "皮肤缝合"}}
		}
		return it
	}
	items := func(ctx context.Context, location sterilizationv1.RecallItem_Location) []*sterilizationv1.RecallItem {
		resp, err := f.client.ListRecallItems(ctx, &sterilizationv1.ListRecallItemsRequest{Parent: recall, Location: location})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetItems()
	}
	b := bad.GetName()
	wantItems := []*sterilizationv1.RecallItem{
		item("R-BACK", 1, b, "dls", usedLoc, "dls", f.dlsPatients[1], "doc-dls"),
		item("R-DLS", 1, b, "dls", dispatchedLoc, "dls", "", ""),
		item("R-RUN", 1, running.GetName(), "dls", inStore, "qrmyy", "", ""),
		item("R-STORE", 1, b, "dls", inStore, "qrmyy", "", ""),
		item("R-USED1", 1, b, "dls", usedLoc, "dls", f.dlsPatients[0], "doc-dls"),
		item("R-USED2", 1, b, "wjh", usedLoc, "wjh", f.wjhPatient, "doc-wjh"),
		item("R-WJH", 1, b, "wjh", dispatchedLoc, "wjh", "", ""),
	}
	ignoreTime := protocmp.IgnoreFields(&sterilizationv1.Use{}, "time")
	if diff := cmp.Diff(wantItems, items(f.cssd, 0), protocmp.Transform(), ignoreTime); diff != "" {
		t.Errorf("recall items (-want +got):\n%s", diff)
	}
	// The patient-exposure list, and each clinic's own share.
	if diff := cmp.Diff([]*sterilizationv1.RecallItem{wantItems[0], wantItems[4], wantItems[5]}, items(f.cssd, usedLoc), protocmp.Transform(), ignoreTime); diff != "" {
		t.Errorf("exposure list (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantItems[5:], items(f.wjh, 0), protocmp.Transform(), ignoreTime); diff != "" {
		t.Errorf("wjh's items (-want +got):\n%s", diff)
	}
	if n := len(items(f.dls, 0)); n != 5 {
		t.Errorf("dls sees %d items, want 5", n)
	}
	mine, err := f.client.GetRecall(f.wjh, &sterilizationv1.GetRecallRequest{Name: recall})
	if err != nil {
		t.Fatal(err)
	}
	if r := mine.GetRecall(); r.GetPackages() != 2 || r.GetUsed() != 1 || len(r.GetFacilities()) != 1 {
		t.Errorf("wjh's view of the recall: %v", r)
	}
	_, err = f.client.GetRecall(f.bywl, &sterilizationv1.GetRecallRequest{Name: recall})
	servertest.WantCode(t, err, codes.NotFound)
	for clinic, ctx := range map[string]context.Context{"facilities/dls": f.dls, "facilities/wjh": f.wjh} {
		evs, err := f.client.ListEvents(ctx, &sterilizationv1.ListEventsRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		notified := 0
		for _, e := range evs.GetEvents() {
			if e.GetType() == "recall.notified" && e.GetResource() == recall {
				notified++
				if fmt.Sprint(e.GetFacilities()) != "["+clinic+"]" {
					t.Errorf("notice to %v", e.GetFacilities())
				}
			}
		}
		if notified != 1 {
			t.Errorf("%s got %d recall notices, want 1", clinic, notified)
		}
		list, err := f.client.ListRecalls(ctx, &sterilizationv1.ListRecallsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.GetRecalls()) != 1 || list.GetRecalls()[0].GetName() != recall {
			t.Errorf("%s lists recalls %v", clinic, list.GetRecalls())
		}
	}

	// Recalled packages cannot get out or be used; the package of the
	// passing cycle is untouched; the running load's package went back to
	// be reprocessed.
	_, err = f.dispatchErr("R-STORE", "")
	servertest.WantReason(t, err, sterilization.ReasonRecalled)
	_, err = f.useErr(f.dls, "R-DLS", f.dlsPatients[0], "doc-dls")
	servertest.WantReason(t, err, sterilization.ReasonRecalled)
	if p := f.get(t, "R-DLS"); p.GetRecall() != recall {
		t.Errorf("R-DLS shows recall %q", p.GetRecall())
	}
	if p := f.get(t, "R-OLD"); p.GetRecall() != "" || p.GetState() != sterilizationv1.Package_STATE_DISPATCHED {
		t.Errorf("the package of the passing cycle: %v", p)
	}
	if p := f.get(t, "R-RUN"); p.GetState() != sterilizationv1.Package_STATE_COLLECTED || p.GetCycle() != 2 {
		t.Errorf("the running load's package: %s, cycle %d", p.GetState(), p.GetCycle())
	}
	// A recalled package collected back is reprocessed into a clean cycle.
	if _, err := f.client.CollectPackage(f.cssd, &sterilizationv1.CollectPackageRequest{Name: "packages/R-STORE"}); err != nil {
		t.Fatal(err)
	}
	if p := f.get(t, "R-STORE"); p.GetRecall() != "" || p.GetCycle() != 2 {
		t.Errorf("after collection: recall %q, cycle %d", p.GetRecall(), p.GetCycle())
	}

	// The sterilizer is locked until three consecutive passing BI test
	// cycles; a failing one starts the count again and recalls nothing.
	st := f.sterilizer(t, "pv1")
	if st.GetLock().GetLoad() != bad.GetName() || st.GetLock().GetRecall() != recall {
		t.Fatalf("lock %v", st.GetLock())
	}
	f.request(t, f.dls, "R-NEXT", "suture")
	f.pack(t, "R-NEXT", nonwoven)
	_, err = f.client.CreateLoad(f.cssd, &sterilizationv1.CreateLoadRequest{Parent: "sterilizers/pv1", Program: "134℃", Packages: []string{"packages/R-NEXT"}})
	servertest.WantReason(t, err, sterilization.ReasonLocked)
	for i, result := range []sterilizationv1.Result{pass, fail, pass, pass, pass} {
		test := f.startLoad(t, "pv1")
		if r := f.bi(t, test.GetName(), result); r.GetRecall() != "" {
			t.Errorf("test cycle %d started recall %s", i, r.GetRecall())
		}
		locked := f.sterilizer(t, "pv1").GetLock() != nil
		if want := i < 4; locked != want {
			t.Errorf("after test cycle %d (%s): locked %t, want %t", i, result, locked, want)
		}
	}
	f.release(t, f.startLoad(t, "pv1", "R-NEXT").GetName())
	stats, err := f.client.GetStatistics(f.cssd, &sterilizationv1.GetStatisticsRequest{StartDay: "2026-11-23", EndDay: "2026-11-23"})
	if err != nil {
		t.Fatal(err)
	}
	if l := stats.GetLoads(); l.GetRecalls() != 1 || l.GetRecalledPackages() != 7 || l.GetBiologicalFailed() != 2 {
		t.Errorf("load statistics %v", l)
	}
}

func (f *fixture) sterilizer(t *testing.T, id string) *sterilizationv1.Sterilizer {
	t.Helper()
	resp, err := f.client.GetSterilizer(f.cssd, &sterilizationv1.GetSterilizerRequest{Name: "sterilizers/" + id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetSterilizer()
}

// TestRecallRacingDispatchesLetsNothingOut runs a BI failure at the same
// time as the dispatch of every package of its load, many times. Whatever
// the order, a package is either out and listed as dispatched by the
// recall (it left before the recall), or still in store, listed in store,
// and refused from then on: no recalled package ever gets out.
func TestRecallRacingDispatchesLetsNothingOut(t *testing.T) {
	f := newFixture(t)
	const rounds, perLoad = 8, 12
	for round := range rounds {
		barcodes := make([]string, perLoad)
		for i := range barcodes {
			barcodes[i] = fmt.Sprintf("RACE-%02d-%02d", round, i)
		}
		// Each round runs on a sterilizer of its own, since the failure
		// locks it.
		sterilizer := fmt.Sprintf("race%d", round)
		if _, err := f.client.CreateSterilizer(f.cssd, &sterilizationv1.CreateSterilizerRequest{SterilizerId: sterilizer, Sterilizer: &sterilizationv1.Sterilizer{DisplayName: sterilizer, Type: sterilizationv1.Sterilizer_TYPE_GRAVITY}}); err != nil {
			t.Fatal(err)
		}
		for _, b := range barcodes {
			f.request(t, f.dls, b, "suture")
			f.pack(t, b, nonwoven)
		}
		load := f.startLoad(t, sterilizer, barcodes...)
		f.release(t, load.GetName())

		var wg sync.WaitGroup
		results := make([]error, perLoad)
		var recall string
		wg.Go(func() { recall = f.bi(t, load.GetName(), fail).GetRecall() })
		for i, b := range barcodes {
			wg.Go(func() { _, results[i] = f.dispatchErr(b, "") })
		}
		wg.Wait()

		resp, err := f.client.ListRecallItems(f.cssd, &sterilizationv1.ListRecallItemsRequest{Parent: recall, PageSize: 100})
		if err != nil {
			t.Fatal(err)
		}
		where := map[string]sterilizationv1.RecallItem_Location{}
		for _, it := range resp.GetItems() {
			where[it.GetPackage()] = it.GetLocation()
		}
		out := 0
		for i, b := range barcodes {
			p := f.get(t, b)
			switch {
			case results[i] == nil:
				out++
				if where[p.GetName()] != dispatchedLoc || p.GetState() != sterilizationv1.Package_STATE_DISPATCHED {
					t.Errorf("round %d: %s was dispatched but the recall found it %s", round, b, where[p.GetName()])
				}
			default:
				servertest.WantReason(t, results[i], sterilization.ReasonRecalled)
				if where[p.GetName()] != inStore || p.GetState() != sterilizationv1.Package_STATE_STORED {
					t.Errorf("round %d: %s was refused but is %s, found %s", round, b, p.GetState(), where[p.GetName()])
				}
				_, err := f.dispatchErr(b, "")
				servertest.WantReason(t, err, sterilization.ReasonRecalled)
			}
		}
		if len(where) != perLoad {
			t.Errorf("round %d: the recall lists %d packages, want %d", round, len(where), perLoad)
		}
		t.Logf("round %d: %d of %d dispatched before the recall", round, out, perLoad)
	}
}
