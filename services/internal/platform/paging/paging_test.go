package paging_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"

	"errors"
)

func TestTokenRoundTrip(t *testing.T) {
	tok := paging.Encode("fac/dls", "f1")
	if got, err := paging.Decode(tok, "f1"); err != nil || got != "fac/dls" {
		t.Fatalf("Decode = %q, %v", got, err)
	}
	for name, bad := range map[string]string{"other filter": tok, "garbage": "%%%", "short": "AQ", "made up": paging.Encode("x", "f1")[:5] + "AAAA"} {
		t.Run(name, func(t *testing.T) {
			if _, err := paging.Decode(bad, "f2"); !errors.Is(err, apierr.ErrInvalidArgument) {
				t.Errorf("accepted: %v", err)
			}
		})
	}
	if got, err := paging.Decode("", "f1"); err != nil || got != "" {
		t.Errorf("empty token: %q %v", got, err)
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[int32]int{0: paging.Default, -3: paging.Default, 7: 7, 5000: paging.Max} {
		if got := paging.Size(in); got != want {
			t.Errorf("Size(%d) = %d, want %d", in, got, want)
		}
	}
}

// TestScanBoundsWork checks that a filter matching almost nothing returns a
// short page with a token instead of reading the whole partition, and that
// following the tokens still finds everything.
func TestScanBoundsWork(t *testing.T) {
	ctx := context.Background()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 12000
	for start := 0; start < n; start += 1000 {
		err := s.Txn(ctx, "p", func(tx store.Tx) error {
			for i := start; i < start+1000; i++ {
				if err := tx.Create(fmt.Sprintf("k/%05d", i), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	wanted := map[string]bool{"k/00007": true, "k/11999": true}
	var found []string
	calls := 0
	for after := ""; ; calls++ {
		var last string
		last, err = paging.Scan(ctx, s, "p", "k/", after, 10, func(r store.Record) (bool, error) {
			if wanted[r.Key] {
				found = append(found, r.Key)
				return true, nil
			}
			return false, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if last == "" {
			break
		}
		after = last
	}
	if len(found) != 2 || calls < 2 {
		t.Errorf("found %v in %d calls; want both keys over at least 2 bounded calls", found, calls)
	}
}
