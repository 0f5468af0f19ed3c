// Package redis is the Store for the Kubernetes shape of MCC: every service
// keeps its state in a shared Redis (standalone, Sentinel or Cluster).
//
// Key layout. All keys of one partition carry one hash tag, made of the
// service and the partition, so that every script touches a single slot and
// runs unchanged on Redis Cluster:
//
//	<prefix>:{<service>/<partition>}:k:<key>   hash {v: version, d: data}
//	<prefix>:{<service>/<partition>}:idx       sorted set of keys, score 0, for List
//	<prefix>:{<service>/<partition>}:log       stream of events, ID 0-<seq>, field d
//	<prefix>:{<service>/<partition>}:seq       counter of the last event Seq
//	<prefix>:{<service>/<partition>}:tx:<id>   marker of a committed Txn, kept briefly
//	<prefix>:{<service>/<partition>}:trimmed   Seq through which the log was trimmed
//	<prefix>:partitions:{<service>}            set of the service's partitions
//
// Transactions are optimistic. Tx.Get reads straight from Redis and
// remembers the version it saw; writes are buffered in a store.WriteSet.
// One Lua script then checks every remembered version and, only if none
// changed, applies all writes, index changes and event appends. If a
// concurrent commit got there first, Txn runs fn again.
//
// It needs Redis 7.0 or later: the scripts declare their flags in a shebang
// line, so Redis refuses a write script up front when out of memory instead
// of failing it half-way.
package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/countymcc/mcc/services/internal/store"
)

// Options configures a Store.
type Options struct {
	// Prefix starts every key, so that several MCC deployments (or tests)
	// can share one Redis. Default "mcc".
	Prefix string
	// Service names the owning service, e.g. "directory". Each service has
	// its own key space.
	Service string
	// WaitReplicas, if positive, makes every commit wait until that many
	// replicas acknowledged it (Redis WAIT). A commit that is not
	// acknowledged in time returns an error wrapping store.ErrUnavailable:
	// it is applied on the primary, but could be lost in a failover.
	WaitReplicas int
	// WaitTimeout bounds that wait. Default one second. Keep it below the
	// client's read timeout.
	WaitTimeout time.Duration
}

// Tuning of the optimistic transaction loop and of WaitEvents.
const (
	// txnAttempts bounds how often Txn runs fn when concurrent commits keep
	// invalidating what it read.
	txnAttempts = 16
	// retryBase and retryCap shape the jittered backoff between attempts.
	retryBase = 500 * time.Microsecond
	retryCap  = 50 * time.Millisecond
	// commitAttempts bounds how often one commit is re-sent after Redis
	// could not be reached. Re-sending is safe: the commit's marker key
	// makes a second run a no-op.
	commitAttempts = 3
	// markerTTL is how long a committed Txn's marker lives. It only has to
	// outlast the client's and our own retries of that one commit.
	markerTTL = 2 * time.Minute
	// pollSlice bounds one blocking XREAD, so a WaitEvents poller notices
	// that nobody waits any more, or that the store closed, within it.
	pollSlice = time.Second
)

// namePattern is what Service may look like: like a partition name, it must
// be safe inside a hash tag.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Store is a store.Store in Redis.
type Store struct {
	client goredis.UniversalClient
	opts   Options

	closed atomic.Bool
	// done is closed by Close, to release WaitEvents.
	done chan struct{}
	// ctx is cancelled by Close, to stop the pollers.
	ctx    context.Context
	cancel context.CancelFunc

	// registered caches the partitions already added to the partition set,
	// so each process adds a partition once.
	registered sync.Map
	// mu guards feeds and orders Close against starting a poller.
	mu    sync.Mutex
	feeds map[store.Partition]*feed
	// pollers counts running pollers; Close waits for them, so no
	// goroutine of the Store still uses the client after Close.
	pollers sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// New returns a Store on client. The client stays the caller's: Close does
// not close it, so one client can serve the stores of several services.
func New(client goredis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redis: nil client")
	}
	if opts.Prefix == "" {
		opts.Prefix = "mcc"
	}
	if strings.ContainsAny(opts.Prefix, "{}") || len(opts.Prefix) > 64 {
		return nil, fmt.Errorf("redis: prefix %q: want at most 64 bytes and no braces", opts.Prefix)
	}
	if !namePattern.MatchString(opts.Service) {
		return nil, fmt.Errorf("redis: service name %q: want %s", opts.Service, namePattern)
	}
	if opts.WaitReplicas < 0 || opts.WaitTimeout < 0 {
		return nil, fmt.Errorf("redis: negative WaitReplicas or WaitTimeout in %+v", opts)
	}
	if opts.WaitReplicas > 0 {
		switch client.(type) {
		case *goredis.Client, *goredis.ClusterClient:
		default:
			return nil, fmt.Errorf("redis: WaitReplicas needs a *redis.Client or *redis.ClusterClient, not %T", client)
		}
		if opts.WaitTimeout == 0 {
			opts.WaitTimeout = time.Second
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		client: client,
		opts:   opts,
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
		feeds:  make(map[store.Partition]*feed),
	}, nil
}

// keys names the Redis keys of one partition.
type keys struct{ base string }

// keysOf returns the key names of partition p.
func (s *Store) keysOf(p store.Partition) keys {
	return keys{base: s.opts.Prefix + ":{" + s.opts.Service + "/" + string(p) + "}:"}
}

// The key names of a partition; see the package comment.
func (k keys) record(key string) string { return k.base + "k:" + key }
func (k keys) recordPrefix() string     { return k.base + "k:" }
func (k keys) index() string            { return k.base + "idx" }
func (k keys) log() string              { return k.base + "log" }
func (k keys) seq() string              { return k.base + "seq" }
func (k keys) marker(id string) string  { return k.base + "tx:" + id }
func (k keys) trimmed() string          { return k.base + "trimmed" }

// partitionSet is the set of the service's partitions. It lives outside
// every partition's hash tag, so it is written apart from the commit script
// (before it, so a committed partition is always listed).
func (s *Store) partitionSet() string {
	return s.opts.Prefix + ":partitions:{" + s.opts.Service + "}"
}

// register adds p to the partition set, once per process.
func (s *Store) register(ctx context.Context, p store.Partition) error {
	if _, ok := s.registered.Load(p); ok {
		return nil
	}
	if err := s.client.SAdd(ctx, s.partitionSet(), string(p)).Err(); err != nil {
		return wrap("register partition", err)
	}
	s.registered.Store(p, true)
	return nil
}

// Partitions lists the partition set.
func (s *Store) Partitions(ctx context.Context) ([]store.Partition, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("redis: partitions: %w", store.ErrClosed)
	}
	names, err := s.client.SMembers(ctx, s.partitionSet()).Result()
	if err != nil {
		return nil, wrap("partitions", err)
	}
	slices.Sort(names)
	out := make([]store.Partition, len(names))
	for i, n := range names {
		out[i] = store.Partition(n)
	}
	return out, nil
}

// Get returns the record at key, or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, p store.Partition, key string) (store.Record, error) {
	if err := s.check(ctx, p); err != nil {
		return store.Record{}, err
	}
	if err := store.ValidateKey(key); err != nil {
		return store.Record{}, err
	}
	rec, found, err := s.read(ctx, s.keysOf(p), key)
	if err != nil {
		return store.Record{}, err
	}
	if !found {
		return store.Record{}, fmt.Errorf("redis: get %q: %w", key, store.ErrNotFound)
	}
	return rec, nil
}

// read fetches one record.
func (s *Store) read(ctx context.Context, k keys, key string) (store.Record, bool, error) {
	vals, err := s.client.HMGet(ctx, k.record(key), "v", "d").Result()
	if err != nil {
		return store.Record{}, false, wrap("get", err)
	}
	if len(vals) != 2 || vals[0] == nil {
		return store.Record{}, false, nil
	}
	return parseRecord(key, vals[0], vals[1])
}

// parseRecord builds a record from the v and d fields of its hash.
func parseRecord(key string, v, d any) (store.Record, bool, error) {
	vs, ok1 := v.(string)
	ds, ok2 := d.(string)
	if !ok1 || !ok2 {
		return store.Record{}, false, fmt.Errorf("redis: record %q: malformed hash (%T, %T)", key, v, d)
	}
	version, err := strconv.ParseUint(vs, 10, 64)
	if err != nil {
		return store.Record{}, false, fmt.Errorf("redis: record %q: version: %w", key, err)
	}
	return store.Record{Key: key, Value: []byte(ds), Version: version}, true, nil
}

// listScript reads one page of a partition's index and the records it
// names, in one step, so a page is a consistent snapshot. It builds the
// record keys from ARGV; they share the index's hash tag, so they live in
// the same slot. KEYS[1] index; ARGV min, max, count, record key prefix.
var listScript = goredis.NewScript(`#!lua flags=no-writes
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, ARGV[3])
local out = {}
for _, m in ipairs(members) do
  local r = redis.call('HMGET', ARGV[4] .. m, 'v', 'd')
  if r[1] then
    out[#out + 1] = m
    out[#out + 1] = r[1]
    out[#out + 1] = r[2]
  end
end
return out
`)

// List returns up to limit records whose keys start with prefix and sort
// after `after`, in byte order.
func (s *Store) List(ctx context.Context, p store.Partition, prefix, after string, limit int) ([]store.Record, bool, error) {
	if err := s.check(ctx, p); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, fmt.Errorf("redis: list limit %d is not positive", limit)
	}
	lo := "-"
	switch {
	case after != "" && after >= prefix:
		lo = "(" + after
	case prefix != "":
		lo = "[" + prefix
	}
	hi := "+"
	if end, ok := prefixEnd(prefix); ok {
		hi = "(" + end
	}
	k := s.keysOf(p)
	res, err := listScript.Run(ctx, s.client, []string{k.index()}, lo, hi, limit+1, k.recordPrefix()).Slice()
	if err != nil {
		return nil, false, wrap("list", err)
	}
	if len(res)%3 != 0 {
		return nil, false, fmt.Errorf("redis: list: reply of %d items", len(res))
	}
	recs := make([]store.Record, 0, min(len(res)/3, limit))
	more := false
	for i := 0; i < len(res); i += 3 {
		key, _ := res[i].(string)
		if !strings.HasPrefix(key, prefix) || key <= after {
			return nil, false, fmt.Errorf("redis: list: key %q outside the range asked for", key)
		}
		if len(recs) == limit {
			more = true
			break
		}
		rec, _, err := parseRecord(key, res[i+1], res[i+2])
		if err != nil {
			return nil, false, err
		}
		recs = append(recs, rec)
	}
	return recs, more, nil
}

// prefixEnd returns the least string greater than every string that starts
// with prefix, or false if there is none (prefix is empty or all 0xff).
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// eventsScript reads events after a Seq, refusing when they were trimmed
// (after 0 reads from the oldest event kept).
// KEYS log, trim mark; ARGV after, count.
var eventsScript = goredis.NewScript(`#!lua flags=no-writes
local trimmed = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > 0 and tonumber(ARGV[1]) < trimmed then
  return redis.error_reply('MCCCOMPACTED events through ' .. trimmed .. ' were trimmed')
end
return redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
`)

// trimScript trims the log through ARGV[1], keeping the last event, and
// raises the trim mark. KEYS log, trim mark, seq counter.
var trimScript = goredis.NewScript(`#!lua
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local through = math.min(tonumber(ARGV[1]), last - 1)
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if through <= cur then
  return cur
end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('0-%d', through + 1))
redis.call('SET', KEYS[2], string.format('%d', through))
return through
`)

// Events returns up to limit events with Seq > after, in order.
func (s *Store) Events(ctx context.Context, p store.Partition, after uint64, limit int) ([]store.Event, error) {
	if err := s.check(ctx, p); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("redis: events limit %d is not positive", limit)
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	k := s.keysOf(p)
	res, err := eventsScript.Run(ctx, s.client, []string{k.log(), k.trimmed()}, strconv.FormatUint(after, 10), limit).Slice()
	if err != nil {
		if strings.HasPrefix(err.Error(), "MCCCOMPACTED") {
			return nil, fmt.Errorf("redis: events of %s after %d: %s: %w", p, after, err.Error(), store.ErrCompacted)
		}
		return nil, wrap("events", err)
	}
	evs := make([]store.Event, 0, len(res))
	for _, entry := range res {
		e, ok := entry.([]any)
		if !ok || len(e) != 2 {
			return nil, fmt.Errorf("redis: events: malformed stream entry %v", entry)
		}
		id, _ := e[0].(string)
		seq, err := parseID(id)
		if err != nil {
			return nil, err
		}
		fields, _ := e[1].([]any)
		if len(fields) != 2 || fields[0] != "d" {
			return nil, fmt.Errorf("redis: event %s: no data field", id)
		}
		d, _ := fields[1].(string)
		evs = append(evs, store.Event{Seq: seq, Data: []byte(d)})
	}
	return evs, nil
}

// TrimEvents trims p's log through `through`, keeping the last event.
func (s *Store) TrimEvents(ctx context.Context, p store.Partition, through uint64) error {
	if err := s.check(ctx, p); err != nil {
		return err
	}
	k := s.keysOf(p)
	if err := trimScript.Run(ctx, s.client, []string{k.log(), k.trimmed(), k.seq()}, strconv.FormatUint(through, 10)).Err(); err != nil {
		return wrap("trim", err)
	}
	return nil
}

// parseID reads the Seq out of a stream entry ID "0-<seq>".
func parseID(id string) (uint64, error) {
	rest, ok := strings.CutPrefix(id, "0-")
	if !ok {
		return 0, fmt.Errorf("redis: event ID %q is not 0-<seq>", id)
	}
	seq, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis: event ID %q: %w", id, err)
	}
	return seq, nil
}

// lastSeq returns the Seq of p's last event, 0 if it has none.
func (s *Store) lastSeq(ctx context.Context, p store.Partition) (uint64, error) {
	v, err := s.client.Get(ctx, s.keysOf(p).seq()).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap("wait events", err)
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis: event counter %q: %w", v, err)
	}
	return seq, nil
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("redis: ping: %w", store.ErrClosed)
	}
	return wrap("ping", s.client.Ping(ctx).Err())
}

// Close stops the Store's pollers and makes later calls fail with
// store.ErrClosed. It leaves the client open. It may take up to one poll
// slice (a second) while a poller finishes its blocking read.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed.CompareAndSwap(false, true) {
		s.mu.Unlock()
		return fmt.Errorf("redis: close: %w", store.ErrClosed)
	}
	s.mu.Unlock()
	close(s.done)
	s.cancel()
	s.pollers.Wait()
	return nil
}

// check rejects calls on a closed store, with a done ctx or a bad partition.
func (s *Store) check(ctx context.Context, p store.Partition) error {
	if s.closed.Load() {
		return fmt.Errorf("redis: %w", store.ErrClosed)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	return ctx.Err()
}

// unavailablePrefixes are Redis error replies that mean the server cannot
// serve the command now (loading, failing over, out of memory, not
// authenticated), as opposed to a bug in the command.
var unavailablePrefixes = []string{
	"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK",
	"NOREPLICAS", "BUSY", "OOM", "NOAUTH", "WRONGPASS", "NOPERM",
}

// wrap adds context to a go-redis error. Context errors keep their kind;
// errors that mean Redis is unreachable or cannot serve now wrap
// store.ErrUnavailable; other server replies (a script bug, a key of the
// wrong type) stay plain.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		unavailable := false
		for _, p := range unavailablePrefixes {
			unavailable = unavailable || goredis.HasErrorPrefix(err, p)
		}
		if !unavailable {
			return fmt.Errorf("redis: %s: %w", op, err)
		}
	}
	return fmt.Errorf("redis: %s: %w: %w", op, store.ErrUnavailable, err)
}

// sleep waits d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff is the full-jitter delay before retry attempt n (n >= 1).
func backoff(n int, base, limit time.Duration) time.Duration {
	d := base << min(n, 20)
	if d > limit || d <= 0 {
		d = limit
	}
	return rand.N(d) + 1
}
