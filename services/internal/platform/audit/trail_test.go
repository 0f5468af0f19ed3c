package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	storeredis "github.com/countymcc/mcc/services/internal/store/redis"
	"github.com/countymcc/mcc/services/internal/store/redistest"
)

// backends opens an empty store on every backend, for every test.
func backends() map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"bolt": func(t *testing.T) store.Store {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "audit.db"), bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
		"redis": func(t *testing.T) store.Store {
			client, err := storeredis.Dial(context.Background(), storeredis.ClientConfig{Addrs: []string{redistest.Start(t)}})
			if err != nil {
				t.Fatal(err)
			}
			st, err := storeredis.New(client, storeredis.Options{Prefix: redistest.Prefix(t), Service: "audit"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close(); client.Close() })
			return st
		},
	}
}

func forEachBackend(t *testing.T, test func(t *testing.T, st store.Store)) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) { test(t, open(t)) })
	}
}

var t0 = time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)

// record is the i-th test record: actor i%3, patient i%2, i minutes after
// t0.
func record(i int) *auditv1.AuditRecord {
	return &auditv1.AuditRecord{
		Time:     timestamppb.New(t0.Add(time.Duration(i) * time.Minute)),
		Subject:  fmt.Sprintf("doctor-%d", i%3),
		Facility: "facilities/dls",
		Method:   "/mcc.lab.v1.LabService/GetOrder",
		Patients: []string{fmt.Sprintf("patients/p%d", i%2)},
		Outcome:  "OK",
	}
}

// fill appends n records to community's chain, in batches of 4.
func fill(t *testing.T, tr *audit.Trail, community string, n int) {
	t.Helper()
	var batch []*auditv1.AuditRecord
	for i := 0; i < n; i++ {
		batch = append(batch, record(i))
		if len(batch) == 4 || i == n-1 {
			if err := tr.Append(context.Background(), community, batch); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
}

func wantOK(t *testing.T, tr *audit.Trail, community string, checked uint64) audit.Verification {
	t.Helper()
	v, err := tr.Verify(context.Background(), community)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() || v.Checked != checked {
		t.Fatalf("verify: %s, checked %d, want ok with %d", v, v.Checked, checked)
	}
	return v
}

func wantBad(t *testing.T, tr *audit.Trail, community string, seq uint64, problem string) {
	t.Helper()
	v, err := tr.Verify(context.Background(), community)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK() || v.Bad != seq || !strings.Contains(v.Problem, problem) {
		t.Fatalf("verify: %s, want %s: %s", v, audit.RecordName(seq), problem)
	}
}

func key(seq uint64) string { return fmt.Sprintf("r/%020d", seq) }

// put overwrites a record's stored bytes behind the trail's back.
func put(t *testing.T, st store.Store, community string, seq uint64, value []byte) {
	t.Helper()
	err := st.Txn(context.Background(), store.Partition(community), func(tx store.Tx) error { return tx.Put(key(seq), value) })
	if err != nil {
		t.Fatal(err)
	}
}

func stored(t *testing.T, st store.Store, community string, seq uint64) []byte {
	t.Helper()
	r, err := st.Get(context.Background(), store.Partition(community), key(seq))
	if err != nil {
		t.Fatal(err)
	}
	return r.Value
}

// TestTamperingIsDetected: the chain verifies as written, and each kind of
// tampering makes Verify name the first record concerned.
func TestTamperingIsDetected(t *testing.T) {
	forEachBackend(t, func(t *testing.T, st store.Store) {
		tr := audit.NewTrail(st)
		tamper := map[string]struct {
			do      func(t *testing.T, c string)
			bad     uint64
			problem string
		}{
			"edit one field": {func(t *testing.T, c string) {
				rec := &auditv1.AuditRecord{}
				proto.Unmarshal(stored(t, st, c, 5), rec)
				rec.Subject = "someone-else"
				b, _ := proto.Marshal(rec)
				put(t, st, c, 5, b)
			}, 5, "edited"},
			"edit and rehash one record": {func(t *testing.T, c string) {
				rec := &auditv1.AuditRecord{}
				proto.Unmarshal(stored(t, st, c, 5), rec)
				rec.Outcome = "PERMISSION_DENIED"
				rec.Hash, _ = audit.Hash(rec)
				b, _ := proto.Marshal(rec)
				put(t, st, c, 5, b)
			}, 6, "does not link"},
			"delete one record": {func(t *testing.T, c string) {
				store.Delete(context.Background(), st, store.Partition(c), key(5), 0)
			}, 5, "missing"},
			"delete the last record": {func(t *testing.T, c string) {
				store.Delete(context.Background(), st, store.Partition(c), key(10), 0)
			}, 10, "missing"},
			"swap two records": {func(t *testing.T, c string) {
				a, b := stored(t, st, c, 3), stored(t, st, c, 4)
				put(t, st, c, 3, b)
				put(t, st, c, 4, a)
			}, 3, "moved"},
		}
		for name, tt := range tamper {
			t.Run(name, func(t *testing.T) {
				c := strings.NewReplacer(" ", "-").Replace(name)
				fill(t, tr, c, 10)
				v := wantOK(t, tr, c, 10)
				if v.Head != 10 || len(v.HeadHash) != 32 {
					t.Fatalf("head %d %x", v.Head, v.HeadHash)
				}
				tt.do(t, c)
				wantBad(t, tr, c, tt.bad, tt.problem)
			})
		}
	})
}

// TestConcurrentWritersKeepOneChain: many callers in several writers (as
// several replicas would) append to one community; the chain has every
// record once, in one unbroken line.
func TestConcurrentWritersKeepOneChain(t *testing.T) {
	forEachBackend(t, func(t *testing.T, st store.Store) {
		tr := audit.NewTrail(st)
		writers := []*audit.Writer{audit.NewWriter(tr), audit.NewWriter(tr), audit.NewWriter(tr)}
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for i := 0; i < 60; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- writers[i%3].Write(context.Background(), "demo", record(i))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		wantOK(t, tr, "demo", 60)
	})
}

// TestAppendOutlastsLostRaces: when the store gives up on a transaction
// because other replicas kept committing first (ErrConflict), Append runs
// it again from the new head instead of failing the call.
func TestAppendOutlastsLostRaces(t *testing.T) {
	forEachBackend(t, func(t *testing.T, st store.Store) {
		racy := &losingStore{Store: st, losses: 3}
		tr := audit.NewTrail(racy)
		if err := audit.NewWriter(tr).Write(context.Background(), "demo", record(0)); err != nil {
			t.Fatalf("append after %d lost races: %v", 3, err)
		}
		if racy.losses != 0 {
			t.Errorf("%d lost races left: Append did not try again", racy.losses)
		}
		wantOK(t, audit.NewTrail(st), "demo", 1)
	})
}

// losingStore's first transactions fail as a store's do when other
// replicas kept committing first.
type losingStore struct {
	store.Store
	losses int
}

func (s *losingStore) Txn(ctx context.Context, p store.Partition, fn func(store.Tx) error) error {
	if s.losses > 0 {
		s.losses--
		return fmt.Errorf("lost the race for the head: %w", store.ErrConflict)
	}
	return s.Store.Txn(ctx, p, fn)
}

// TestPruneKeepsTheChainVerifiable: pruning deletes the old records and
// their index entries, and the rest still verifies from the anchor; a
// pruned record put back is detected.
func TestPruneKeepsTheChainVerifiable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, st store.Store) {
		tr := audit.NewTrail(st)
		ctx := context.Background()
		fill(t, tr, "demo", 10)
		old := stored(t, st, "demo", 2)
		n, err := tr.Prune(ctx, "demo", t0.Add(6*time.Minute))
		if err != nil || n != 6 {
			t.Fatalf("pruned %d, %v; want 6", n, err)
		}
		v := wantOK(t, tr, "demo", 4)
		if v.First != 7 || v.Head != 10 {
			t.Errorf("kept %d..%d, want 7..10", v.First, v.Head)
		}
		recs, _, err := tr.List(ctx, "demo", audit.Query{Patient: "patients/p0"}, 100, "")
		if err != nil || len(recs) != 2 || recs[0].GetSequence() != 7 {
			t.Errorf("after pruning, patient p0 has %d records from %v (%v), want 2 from 7", len(recs), recs, err)
		}
		// Appending goes on from the head.
		fill(t, tr, "demo", 1)
		wantOK(t, tr, "demo", 5)
		put(t, st, "demo", 2, old)
		wantBad(t, tr, "demo", 2, "older than the chain's anchor")
	})
}

// TestList: by patient, by actor, by time range, combined, with pages.
func TestList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, st store.Store) {
		tr := audit.NewTrail(st)
		ctx := context.Background()
		fill(t, tr, "demo", 12)
		fill(t, tr, "other", 3)
		for _, tt := range []struct {
			name string
			q    audit.Query
			want []uint64
		}{
			{"all", audit.Query{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
			{"patient", audit.Query{Patient: "patients/p1"}, []uint64{2, 4, 6, 8, 10, 12}},
			{"actor", audit.Query{Actor: "doctor-0"}, []uint64{1, 4, 7, 10}},
			{"time", audit.Query{Start: t0.Add(3 * time.Minute), End: t0.Add(6 * time.Minute)}, []uint64{4, 5, 6}},
			{"patient and actor", audit.Query{Patient: "patients/p1", Actor: "doctor-0"}, []uint64{4, 10}},
			{"actor and time", audit.Query{Actor: "doctor-1", Start: t0.Add(4 * time.Minute)}, []uint64{5, 8, 11}},
			{"unknown patient", audit.Query{Patient: "patients/nobody"}, nil},
		} {
			t.Run(tt.name, func(t *testing.T) {
				var got []uint64
				token := ""
				for pages := 0; ; pages++ {
					recs, next, err := tr.List(ctx, "demo", tt.q, 2, token)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range recs {
						got = append(got, r.GetSequence())
					}
					if next == "" {
						break
					}
					if pages > 20 {
						t.Fatal("no end of pages")
					}
					token = next
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			})
		}
		t.Run("a token of another query is refused naming page_token", func(t *testing.T) {
			_, next, err := tr.List(ctx, "demo", audit.Query{Patient: "patients/p1"}, 2, "")
			if err != nil || next == "" {
				t.Fatal(next, err)
			}
			_, _, err = tr.List(ctx, "demo", audit.Query{Patient: "patients/p0"}, 2, next)
			st, _ := apierr.Status(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
				t.Errorf("got %v, want INVALID_ARGUMENT on page_token", err)
			}
		})
	})
}

// TestStoredBytesAreCanonical: a record is stored exactly as its
// deterministic encoding, and its hash is the one Hash computes.
func TestStoredBytesAreCanonical(t *testing.T) {
	forEachBackend(t, func(t *testing.T, st store.Store) {
		tr := audit.NewTrail(st)
		fill(t, tr, "demo", 2)
		b := stored(t, st, "demo", 2)
		rec := &auditv1.AuditRecord{}
		if err := proto.Unmarshal(b, rec); err != nil {
			t.Fatal(err)
		}
		again, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		h, _ := audit.Hash(rec)
		if string(again) != string(b) || string(h) != string(rec.GetHash()) {
			t.Errorf("stored %x\nwant   %x", b, again)
		}
	})
}
