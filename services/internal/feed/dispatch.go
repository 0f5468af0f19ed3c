package feed

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	"github.com/countymcc/mcc/services/internal/store"
)

// subKey names one subscription of one community.
type subKey struct {
	p  store.Partition
	id string
}

// trimInterval is how often old delivery log entries are removed.
const trimInterval = time.Hour

// dispatch runs one worker per subscription of every community until ctx
// ends. It looks for subscriptions every ScanInterval, and at once when
// this process changed one; it also removes what deleted subscriptions
// left, and trims old log entries.
func (s *Service) dispatch(ctx context.Context) error {
	holder := uuid.NewString()
	running := map[subKey]bool{}
	exited := make(chan subKey)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(s.cfg.ScanInterval)
	defer tick.Stop()
	var trimmed time.Time
	for {
		subs, err := s.allSubscriptions(ctx)
		if err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "feed: listing subscriptions", "error", err.Error())
		}
		for _, k := range subs {
			if running[k] {
				continue
			}
			running[k] = true
			w := &worker{s: s, p: k.p, id: k.id, holder: holder}
			wg.Go(func() {
				w.run(ctx)
				select {
				case exited <- k:
				case <-ctx.Done():
				}
			})
		}
		if err := s.cleanup(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "feed: removing deleted subscriptions", "error", err.Error())
		}
		if time.Since(trimmed) >= trimInterval {
			if err := s.trimLogs(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "feed: trimming delivery logs", "error", err.Error())
			}
			trimmed = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case k := <-exited:
			delete(running, k)
		case <-tick.C:
		case <-s.kick:
		}
	}
}

// scanPage is how many keys one List of a background scan reads.
const scanPage = 500

// allSubscriptions lists every subscription of every community.
func (s *Service) allSubscriptions(ctx context.Context) ([]subKey, error) {
	parts, err := s.store.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	var out []subKey
	for _, p := range parts {
		for r, err := range store.Scan(ctx, s.store, p, subscriptions.Prefix, "", scanPage) {
			if err != nil {
				return out, err
			}
			out = append(out, subKey{p: p, id: strings.TrimPrefix(r.Key, subscriptions.Prefix)})
		}
	}
	return out, nil
}

// cleanup removes everything deleted subscriptions left behind, from
// their tombstones: log, index, queue, state, lease and secret.
func (s *Service) cleanup(ctx context.Context) error {
	parts, err := s.store.Partitions(ctx)
	if err != nil {
		return err
	}
	for _, p := range parts {
		var gone []string
		for r, err := range store.Scan(ctx, s.store, p, "gone/", "", scanPage) {
			if err != nil {
				return err
			}
			gone = append(gone, strings.TrimPrefix(r.Key, "gone/"))
		}
		for _, id := range gone {
			if err := s.removeAll(ctx, p, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeAll deletes what subscription id left in p, the tombstone last, so
// an interrupted cleanup is finished at the next scan.
func (s *Service) removeAll(ctx context.Context, p store.Partition, id string) error {
	for _, prefix := range []string{logPrefix(id), "dlvev/" + id + "/", redoPrefix(id)} {
		for {
			recs, _, err := s.store.List(ctx, p, prefix, "", scanPage)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				break
			}
			if err := s.deleteRecords(ctx, p, recs, false); err != nil {
				return err
			}
		}
	}
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		for _, k := range []string{secretKey(id), stateKey(id), leaseKey(id), redoSeqKey(id), goneKey(id)} {
			if err := tx.Delete(k, 0); err != nil {
				return err
			}
		}
		return nil
	})
}

// deleteRecords deletes recs in one transaction. With index set they are
// log entries, and the index entries pointing at them go too.
func (s *Service) deleteRecords(ctx context.Context, p store.Partition, recs []store.Record, index bool) error {
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		for _, r := range recs {
			if err := tx.Delete(r.Key, 0); err != nil {
				return err
			}
			if !index {
				continue
			}
			d := &feedv1.Delivery{}
			if proto.Unmarshal(r.Value, d) != nil || d.GetEventId() == "" {
				continue
			}
			id := strings.SplitN(strings.TrimPrefix(r.Key, "dlv/"), "/", 2)[0]
			idx, err := tx.Get(logIndexKey(id, d.GetEventId()))
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if string(idx.Value) == r.Key {
				if err := tx.Delete(idx.Key, 0); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// trimLogs removes the delivery log entries older than LogRetention.
// Entries sort newest first, so the old ones are the keys after the
// cutoff's.
func (s *Service) trimLogs(ctx context.Context) error {
	subs, err := s.allSubscriptions(ctx)
	if err != nil {
		return err
	}
	cutoff := s.clock.Now().Add(-s.cfg.LogRetention)
	for _, k := range subs {
		after := logPrefix(k.id) + invertedTime(cutoff) + "~"
		for {
			recs, more, err := s.store.List(ctx, k.p, logPrefix(k.id), after, scanPage)
			if err != nil {
				return err
			}
			if len(recs) > 0 {
				if err := s.deleteRecords(ctx, k.p, recs, true); err != nil {
					return err
				}
			}
			if !more {
				break
			}
		}
	}
	return nil
}
