package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/lab"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

// runStartup stores cfg.StartupRecords lab orders, each with its creation
// event, in the lab's bolt file of a new data directory, then starts mcc on
// it and reports how long it took to be ready and its idle memory. The
// orders are written as the lab writes them (key ord/{id}, the encoded
// Order, and an order.created event in the same transaction), without their
// index keys: start-up reads neither.
func runStartup(ctx context.Context, cfg Config, exe string, out io.Writer) error {
	dir, err := os.MkdirTemp("", "mcc-bench-startup-")
	if err != nil {
		return err
	}
	defer func() {
		if os.Getenv("MCC_BENCH_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(out, "kept", dir)
		}
	}()
	start := time.Now()
	if err := preload(ctx, filepath.Join(dir, "lab.db"), cfg.StartupRecords); err != nil {
		return err
	}
	fi, _ := os.Stat(filepath.Join(dir, "lab.db"))
	fmt.Fprintf(out, "stored %d lab orders with their events in %s (lab.db %s)\n", cfg.StartupRecords, time.Since(start).Round(time.Millisecond), mb(fi.Size()))
	for i := range 3 {
		srv, err := startChild(ctx, exe, dir, append([]string{"-log-level=warn"}, strings.Fields(cfg.ServerFlags)...)...)
		if err != nil {
			return err
		}
		time.Sleep(2 * time.Second)
		p, perr := readProc(srv.pid)
		if err := srv.stop(); err != nil {
			return err
		}
		if perr != nil {
			return perr
		}
		fmt.Fprintf(out, "start %d: ready in %s (process start to /readyz 200, target ≤ 2s: %s); idle RSS %s (target ≤ 80 MB: %s; anonymous %s, mapped files %s)\n",
			i+1, srv.ready.Round(time.Millisecond), verdict(srv.ready <= 2*time.Second), mb(p.RSSBytes), verdict(p.RSSBytes <= 80<<20), mb(p.AnonBytes), mb(p.FileBytes))
	}
	return nil
}

// preloadBatch is how many orders one transaction stores.
const preloadBatch = 5000

func preload(ctx context.Context, path string, n int) error {
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	actor := auth.Caller{Subject: "bench-doc", Community: "demo", Facility: "facilities/bt0000", Roles: []typev1.Role{typev1.Role_ROLE_CLINICIAN}}
	now := time.Now()
	for done := 0; done < n; {
		batch := min(preloadBatch, n-done)
		err := st.Txn(ctx, store.Partition("demo"), func(tx store.Tx) error {
			for range batch {
				id, err := uuid.NewV7()
				if err != nil {
					return err
				}
				o := orderProto("patients/" + id.String())
				o.Name = "orders/" + id.String()
				o.RequestingFacility, o.LabFacility, o.Clinician = "facilities/bt0000", "facilities/"+hub, "practitioners/bench-doc"
				o.State = labv1.Order_STATE_PLACED
				if err := lab.StoreOrder(tx, actor, now, o); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("preload: %w", err)
		}
		done += batch
	}
	return nil
}
