package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store on a Redis server (or cluster) shared by relays.
type Redis struct {
	c redis.UniversalClient
}

// RedisOptions name the server.
type RedisOptions struct {
	Addrs    []string // one address, or several for a cluster
	Username string
	Password string
	DB       int
	// Timeout bounds each command, so a dead server fails fast and the
	// relay's failure policy applies (default 500ms).
	Timeout time.Duration
}

// OpenRedis connects to Redis. It does not fail when the server is down:
// commands fail (ErrUnavailable) until it is back, and the client
// reconnects on its own.
func OpenRedis(o RedisOptions) *Redis {
	if o.Timeout == 0 {
		o.Timeout = 500 * time.Millisecond
	}
	c := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: o.Addrs, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		MaxRetries: 1, PoolSize: 64,
	})
	return &Redis{c: c}
}

func (s *Redis) Close() error { return s.c.Close() }

func (s *Redis) Ping(ctx context.Context) error { return wrap(s.c.Ping(ctx).Err()) }

func wrap(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	return fmt.Errorf("%w: redis: %v", ErrUnavailable, err)
}

// Keys carry a hash tag ({...}) so that every script touches one slot of a
// Redis Cluster.
func counterKey(k string) string  { return "sluice:c:{" + NormalizeKey(k) + "}" }
func listHash(list string) string { return "sluice:l:{" + list + "}" }
func recordKey(kind, id string) string {
	return "sluice:r:{" + kind + ":" + id + "}"
}

// countScript adds ARGV[2] events at minute ARGV[1] to the hash KEYS[1]
// (field: minute, value: count), drops minutes older than ARGV[3] minutes,
// and returns the counts for the windows ARGV[4...] (in minutes), all in
// one atomic step.
var countScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local hist = tonumber(ARGV[3])
if n > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], n)
  redis.call('EXPIRE', KEYS[1], hist * 60 + 120)
end
local all = redis.call('HGETALL', KEYS[1])
local res = {}
for w = 4, #ARGV do res[w - 3] = 0 end
local old = {}
for i = 1, #all, 2 do
  local m = tonumber(all[i])
  local c = tonumber(all[i + 1])
  if m <= now - hist then
    old[#old + 1] = all[i]
  elseif m <= now then
    for w = 4, #ARGV do
      if m > now - tonumber(ARGV[w]) then res[w - 3] = res[w - 3] + c end
    end
  end
end
if n > 0 and #old > 0 then redis.call('HDEL', KEYS[1], unpack(old)) end
return res
`)

func (s *Redis) Count(ctx context.Context, now time.Time, n int, keys []string, windows []time.Duration) ([][]int, error) {
	args := []any{minuteOf(now), n, int64(History / time.Minute)}
	for _, w := range windows {
		args = append(args, windowMinutes(w))
	}
	run := func() ([]*redis.Cmd, error) {
		if len(keys) == 1 { // no pipeline for one command
			c := countScript.EvalSha(ctx, s.c, []string{counterKey(keys[0])}, args...)
			return []*redis.Cmd{c}, c.Err()
		}
		pipe := s.c.Pipeline()
		cmds := make([]*redis.Cmd, len(keys))
		for i, k := range keys {
			cmds[i] = countScript.EvalSha(ctx, pipe, []string{counterKey(k)}, args...)
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := countScript.Load(ctx, s.c).Err(); err != nil {
			return nil, wrap(err)
		}
		cmds, err = run()
	}
	if err != nil {
		return nil, wrap(err)
	}
	out := make([][]int, len(keys))
	for i, c := range cmds {
		vals, err := c.Int64Slice()
		if err != nil {
			return nil, wrap(err)
		}
		out[i] = make([]int, len(vals))
		for j, v := range vals {
			out[i][j] = int(v)
		}
	}
	return out, nil
}

func (s *Redis) ListAdd(ctx context.Context, e Entry) error {
	key, b, err := encodeEntry(e)
	if err != nil {
		return err
	}
	return wrap(s.c.HSet(ctx, listHash(e.List), key, b).Err())
}

func (s *Redis) ListRemove(ctx context.Context, list, key string) (bool, error) {
	n, err := s.c.HDel(ctx, listHash(list), NormalizeKey(key)).Result()
	return n > 0, wrap(err)
}

func (s *Redis) ListGet(ctx context.Context, list, key string, now time.Time) (*Entry, error) {
	v, err := s.c.HGet(ctx, listHash(list), NormalizeKey(key)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(err)
	}
	e, err := decodeEntry(list, key, []byte(v))
	if err != nil {
		return nil, err
	}
	if !e.Live(now) {
		if !e.Live(time.Now()) {
			s.c.HDel(ctx, listHash(list), e.Key) // expired for good: tidy up
		}
		return nil, nil
	}
	return e, nil
}

func (s *Redis) ListEntries(ctx context.Context, list string, now time.Time) ([]Entry, error) {
	all, err := s.c.HGetAll(ctx, listHash(list)).Result()
	if err != nil {
		return nil, wrap(err)
	}
	var out []Entry
	for _, v := range all {
		var e Entry
		if json.Unmarshal([]byte(v), &e) == nil && e.Live(now) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *Redis) Put(ctx context.Context, kind, id string, data []byte, ttl time.Duration) error {
	return wrap(s.c.Set(ctx, recordKey(kind, id), data, ttl).Err())
}

func (s *Redis) Get(ctx context.Context, kind, id string) ([]byte, error) {
	b, err := s.c.Get(ctx, recordKey(kind, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, wrap(err)
}

// MemoryUsage is the server's used_memory, for the benchmarks.
func (s *Redis) MemoryUsage(ctx context.Context) (int64, error) {
	info, err := s.c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no used_memory in INFO")
}

// distinctScript: ZADD member at minute ARGV[1] (unless ARGV[2] is ""),
// drop members older than ARGV[4] minutes, count those within ARGV[3].
var distinctScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local hist = tonumber(ARGV[4])
if ARGV[2] ~= "" then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - hist)
  redis.call('EXPIRE', KEYS[1], hist * 60 + 120)
end
return redis.call('ZCOUNT', KEYS[1], '(' .. (now - tonumber(ARGV[3])), now)
`)

func (s *Redis) Distinct(ctx context.Context, now time.Time, key, member string, window time.Duration) (int, error) {
	if member != "" {
		member = NormalizeKey(member)
	}
	n, err := distinctScript.Run(ctx, s.c, []string{"sluice:d:{" + NormalizeKey(key) + "}"},
		minuteOf(now), member, windowMinutes(window), int64(History/time.Minute)).Int()
	return n, wrap(err)
}
