package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/countymcc/mcc/services/internal/store"
)

// commitScript applies one transaction atomically, or nothing.
//
//	KEYS  seq, idx, log, marker, then one record key per change
//	ARGV  marker TTL in ms, number of changes, number of events,
//	      then per change: key, base version, op (r: read only, p: put,
//	      d: delete), new version, data; then the events' data
//
// It returns 1 when committed, 0 when a version no longer matches (nothing
// written), and 2 when the marker shows this very commit already ran (a
// client retried it after losing the reply); it then refreshes the marker,
// so a WAIT that follows covers a write at least as recent as the commit.
//
// All checks come before the first write: Redis does not roll a script
// back, so a script that fails half-way would leave half a transaction.
// The check that the stream ends at the counter guards the one write that
// could still fail (XADD with an ID not above the stream's last).
var commitScript = goredis.NewScript(`#!lua
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('PEXPIRE', KEYS[4], ARGV[1])
  return 2
end
local nrec = tonumber(ARGV[2])
local nev = tonumber(ARGV[3])
local writes = nev > 0
for i = 1, nrec do
  local a = 3 + (i - 1) * 5
  local have = redis.call('HGET', KEYS[4 + i], 'v') or '0'
  if have ~= ARGV[a + 2] then
    return 0
  end
  if ARGV[a + 3] ~= 'r' then
    writes = true
  end
end
if nev > 0 then
  local counter = redis.call('GET', KEYS[1]) or '0'
  local tail = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  local last = '0'
  if #tail > 0 then
    last = string.match(tail[1][1], '^0%-(%d+)$') or tail[1][1]
  end
  if last ~= counter then
    return redis.error_reply('MCCLOG event log ' .. KEYS[3] .. ' ends at ' .. last .. ' but its counter is at ' .. counter)
  end
end
if not writes then
  return 1
end
for i = 1, nrec do
  local a = 3 + (i - 1) * 5
  local op = ARGV[a + 3]
  if op == 'p' then
    redis.call('HSET', KEYS[4 + i], 'v', ARGV[a + 4], 'd', ARGV[a + 5])
    redis.call('ZADD', KEYS[2], 0, ARGV[a + 1])
  elseif op == 'd' then
    redis.call('DEL', KEYS[4 + i])
    redis.call('ZREM', KEYS[2], ARGV[a + 1])
  end
end
local first = 3 + nrec * 5
for j = 1, nev do
  local seq = redis.call('INCR', KEYS[1])
  redis.call('XADD', KEYS[3], string.format('0-%d', seq), 'd', ARGV[first + j])
end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
return 1
`)

// Results of commitScript.
const (
	conflicted  = 0
	committed   = 1
	recommitted = 2
)

// argsPerWrite is the number of commitScript arguments per change.
const argsPerWrite = 5

// commitRetryBase and commitRetryCap shape the backoff before re-sending a
// commit that could not reach Redis: long enough for a Sentinel or Cluster
// failover to make progress.
const (
	commitRetryBase = 100 * time.Millisecond
	commitRetryCap  = time.Second
)

// Txn runs fn against a WriteSet that reads through to Redis and commits
// what it wrote with one script. When a concurrent commit changed a key fn
// read, it runs fn again, up to txnAttempts times with jittered backoff,
// and then returns store.ErrConflict.
func (s *Store) Txn(ctx context.Context, p store.Partition, fn func(tx store.Tx) error) error {
	if err := s.check(ctx, p); err != nil {
		return err
	}
	k := s.keysOf(p)
	for attempt := 1; ; attempt++ {
		ws := store.NewWriteSet(func(key string) (store.Record, bool, error) { return s.read(ctx, k, key) })
		if err := fn(ws); err != nil {
			_, _, _ = ws.Commit()
			return err
		}
		changes, events, err := ws.Commit()
		if err != nil {
			return err
		}
		if len(changes) == 0 && len(events) == 0 {
			return nil
		}
		if err := s.register(ctx, p); err != nil {
			return err
		}
		res, err := s.commit(ctx, k, changes, events)
		if err != nil {
			return err
		}
		if res != conflicted {
			return nil
		}
		if attempt == txnAttempts {
			return fmt.Errorf("redis: txn on %s: lost %d races in a row: %w", p, attempt, store.ErrConflict)
		}
		if err := sleep(ctx, backoff(attempt-1, retryBase, retryCap)); err != nil {
			return err
		}
		if s.closed.Load() {
			return fmt.Errorf("redis: txn: %w", store.ErrClosed)
		}
	}
}

// commit runs commitScript for one attempt, re-sending it if Redis could
// not be reached; the marker makes a re-sent commit that already ran a
// no-op. It then waits for replicas if configured.
func (s *Store) commit(ctx context.Context, k keys, changes []store.Change, events [][]byte) (int64, error) {
	id := rand.Text()
	rkeys := make([]string, 0, 4+len(changes))
	rkeys = append(rkeys, k.seq(), k.index(), k.log(), k.marker(id))
	args := make([]any, 0, 3+argsPerWrite*len(changes)+len(events))
	args = append(args, markerTTL.Milliseconds(), len(changes), len(events))
	for _, c := range changes {
		op, value := "r", []byte(nil)
		switch {
		case !c.Written:
		case c.Deleted:
			op = "d"
		default:
			op, value = "p", c.Value
		}
		rkeys = append(rkeys, k.record(c.Key))
		args = append(args, c.Key, strconv.FormatUint(c.Base, 10), op, strconv.FormatUint(c.Version, 10), value)
	}
	for _, e := range events {
		args = append(args, e)
	}

	for attempt := 1; ; attempt++ {
		res, err := s.commitOnce(ctx, rkeys, args)
		if err == nil || !errors.Is(err, store.ErrUnavailable) || attempt == commitAttempts || errors.Is(err, errReplicas) {
			return res, err
		}
		if cc, ok := s.client.(*goredis.ClusterClient); ok {
			cc.ReloadState(ctx)
		}
		if serr := sleep(ctx, backoff(attempt, commitRetryBase, commitRetryCap)); serr != nil {
			return 0, err
		}
	}
}

// errReplicas reports a commit applied on the primary that too few replicas
// acknowledged in time.
var errReplicas = errors.New("too few replicas acknowledged the write")

// commitOnce sends commitScript once and, if WaitReplicas is set, WAITs on
// the same connection: WAIT covers the writes of its own connection only.
func (s *Store) commitOnce(ctx context.Context, rkeys []string, args []any) (int64, error) {
	if s.opts.WaitReplicas == 0 {
		res, err := commitScript.Run(ctx, s.client, rkeys, args...).Int64()
		return res, wrap("commit", err)
	}
	node, err := s.primaryFor(ctx, rkeys[0])
	if err != nil {
		return 0, err
	}
	conn := node.Conn()
	defer conn.Close()
	res, err := commitScript.Run(ctx, conn, rkeys, args...).Int64()
	if err != nil || res == conflicted {
		return res, wrap("commit", err)
	}
	n, err := conn.Wait(ctx, s.opts.WaitReplicas, s.opts.WaitTimeout).Result()
	if err != nil {
		return res, wrap("commit: wait for replicas", err)
	}
	if n < int64(s.opts.WaitReplicas) {
		return res, fmt.Errorf("redis: commit: %d of %d replicas within %v: %w: %w",
			n, s.opts.WaitReplicas, s.opts.WaitTimeout, store.ErrUnavailable, errReplicas)
	}
	return res, nil
}

// primaryFor returns the client of the primary that owns key.
func (s *Store) primaryFor(ctx context.Context, key string) (*goredis.Client, error) {
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, wrap("commit: find primary", err)
		}
		return node, nil
	case *goredis.Client:
		return c, nil
	}
	return nil, fmt.Errorf("redis: commit: WaitReplicas with a %T", s.client)
}
