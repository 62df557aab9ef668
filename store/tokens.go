package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/redis/go-redis/v9"
)

// TokenClass is the class a message was learned as.
type TokenClass byte

const (
	TokenNone TokenClass = 0   // not learned (or forgotten)
	TokenHam  TokenClass = 'h' // learned as ham
	TokenSpam TokenClass = 's' // learned as spam
)

// TokenCount is how many learned messages of each class held a token.
type TokenCount struct{ Ham, Spam uint32 }

// TokenStore is a store that keeps a learned classifier's model: for each
// token (a bucket number: the classifier hashes its tokens into a fixed
// number of buckets, which bounds the model's size), how many learned ham
// and spam messages held it; the number of learned messages of each class;
// and which messages were learned, by a key the classifier derives
// (Message-ID and body hash), with their class and time (a few dozen
// bytes each: not their tokens, which the caller derives again from the
// message to forget or move it, as SpamAssassin does).
//
// Both the embedded store and Redis implement it. A learn, move or forget
// is one atomic step (one Lua script on Redis, one Pebble batch under the
// model's lock on the embedded store): two relays learning at once, even
// the same message, leave counts that match the learned messages.
type TokenStore interface {
	// TokenLearn makes the message msg of model have class (TokenNone:
	// forget it), buckets being the message's tokens, and returns the
	// class it had before. Learning a message as the class it has changes
	// nothing; as another class, its buckets lose one of the old class
	// and gain one of the new. A count never goes below zero (a tokenizer
	// changed between learning and forgetting a message leaves the counts
	// it cannot undo).
	TokenLearn(ctx context.Context, model, msg string, class TokenClass, buckets []uint32, now time.Time) (prev TokenClass, err error)
	// TokenCounts returns the counts of each bucket (zero for unknown
	// ones), in the order given.
	TokenCounts(ctx context.Context, model string, buckets []uint32) ([]TokenCount, error)
	// TokenTotals returns the number of learned messages of each class.
	TokenTotals(ctx context.Context, model string) (ham, spam int, err error)
}

func checkTokenArgs(model, msg string, class TokenClass) error {
	if model == "" || strings.ContainsAny(model, "\x00{}:") {
		return fmt.Errorf("store: bad model name %q", model)
	}
	if msg == "" || strings.ContainsRune(msg, 0) {
		return errors.New("store: a learned message needs a key without NUL")
	}
	if class != TokenNone && class != TokenHam && class != TokenSpam {
		return fmt.Errorf("store: bad token class %q", class)
	}
	return nil
}

// sortedBuckets returns the distinct buckets in increasing order.
func sortedBuckets(b []uint32) []uint32 {
	s := slices.Clone(b)
	slices.Sort(s)
	return slices.Compact(s)
}

// Embedded key spaces of the model: bucket counts, learned messages,
// totals.
const (
	pfxTokenCount = "b\x00"
	pfxTokenMsg   = "m\x00"
	pfxTokenTotal = "n\x00"
)

// A learned message's value: its class, then the unix time it was learned
// (uvarint).
func encodeLearned(class TokenClass, now time.Time) []byte {
	return binary.AppendUvarint([]byte{byte(class)}, uint64(max(0, now.Unix())))
}

func decodeLearned(v []byte) TokenClass {
	if len(v) == 0 {
		return TokenNone
	}
	return TokenClass(v[0])
}

func decodeCount(v []byte) TokenCount {
	h, n := binary.Uvarint(v)
	if n <= 0 {
		return TokenCount{}
	}
	s, m := binary.Uvarint(v[n:])
	if m <= 0 {
		return TokenCount{}
	}
	return TokenCount{uint32(h), uint32(s)}
}

func (s *Embedded) getBytes(k []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: %w", err)
	}
	out := slices.Clone(v)
	closer.Close()
	return out, true, nil
}

// tokenModels are the models of an embedded store held in memory: only
// one process opens the store, so a copy loaded once and updated with
// every write stays true, and judging a message reads memory instead of
// seeking Pebble once per token (which cost ~1 ms a message). Memory is
// bounded by the classifier's bucket count (at most ~40 MB for 2^20 live
// buckets).
type tokenModels struct {
	mu     sync.Mutex
	models map[string]*tokenModel
}

type tokenModel struct {
	mu     sync.RWMutex
	loaded bool
	counts map[uint32]TokenCount
	total  TokenCount
}

// tokenModel returns the model, loaded from the store, read-locked (write-
// locked if write); unlock with the returned function.
func (s *Embedded) tokenModel(model string, write bool) (*tokenModel, func(), error) {
	s.tokens.mu.Lock()
	if s.tokens.models == nil {
		s.tokens.models = map[string]*tokenModel{}
	}
	m := s.tokens.models[model]
	if m == nil {
		m = &tokenModel{}
		s.tokens.models[model] = m
	}
	s.tokens.mu.Unlock()
	m.mu.Lock()
	if !m.loaded {
		if err := s.loadTokenModel(model, m); err != nil {
			m.mu.Unlock()
			return nil, nil, err
		}
		m.loaded = true
	}
	if write {
		return m, m.mu.Unlock, nil
	}
	m.mu.Unlock()
	m.mu.RLock()
	return m, m.mu.RUnlock, nil
}

func (s *Embedded) loadTokenModel(model string, m *tokenModel) error {
	m.counts = map[uint32]TokenCount{}
	prefix := []byte(pfxTokenCount + model + "\x00")
	upper := append(slices.Clone(prefix[:len(prefix)-1]), 1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) == len(prefix)+4 {
			m.counts[binary.BigEndian.Uint32(k[len(prefix):])] = decodeCount(it.Value())
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	v, _, err := s.getBytes([]byte(pfxTokenTotal + model))
	if err != nil {
		return err
	}
	m.total = decodeCount(v)
	return nil
}

func encodeCount(c TokenCount) []byte {
	return binary.AppendUvarint(binary.AppendUvarint(nil, uint64(c.Ham)), uint64(c.Spam))
}

// TokenLearn on the embedded store: the model's lock held, the whole
// change in one batch, then in memory.
func (s *Embedded) TokenLearn(_ context.Context, model, msg string, class TokenClass, buckets []uint32, now time.Time) (TokenClass, error) {
	if err := checkTokenArgs(model, msg, class); err != nil {
		return TokenNone, err
	}
	m, unlock, err := s.tokenModel(model, true)
	if err != nil {
		return TokenNone, err
	}
	defer unlock()
	mk := []byte(pfxTokenMsg + model + "\x00" + msg)
	old, _, err := s.getBytes(mk)
	if err != nil {
		return TokenNone, err
	}
	prev := decodeLearned(old)
	if prev == class {
		return prev, nil
	}
	// every bucket of the message moves the same way
	var dh, ds int64
	for c, n := range map[TokenClass]int64{prev: -1, class: 1} {
		switch c {
		case TokenHam:
			dh = n
		case TokenSpam:
			ds = n
		}
	}
	// in increasing key order, which the memtable inserts fastest
	buckets = sortedBuckets(buckets)
	next := make([]TokenCount, len(buckets))
	batch := s.db.NewBatch()
	defer batch.Close()
	key := []byte(pfxTokenCount + model + "\x00\x00\x00\x00\x00")
	for i, b := range buckets {
		c := m.counts[b]
		c = TokenCount{uint32(max(0, int64(c.Ham)+dh)), uint32(max(0, int64(c.Spam)+ds))}
		next[i] = c
		binary.BigEndian.PutUint32(key[len(key)-4:], b)
		var err error
		if c == (TokenCount{}) {
			err = batch.Delete(key, nil)
		} else {
			err = batch.Set(key, encodeCount(c), nil)
		}
		if err != nil {
			return TokenNone, fmt.Errorf("store: %w", err)
		}
	}
	tot := m.total
	bump := func(c TokenClass, n int) {
		if c == TokenHam {
			tot.Ham = uint32(max(0, int(tot.Ham)+n))
		} else if c == TokenSpam {
			tot.Spam = uint32(max(0, int(tot.Spam)+n))
		}
	}
	bump(prev, -1)
	bump(class, 1)
	if err := batch.Set([]byte(pfxTokenTotal+model), encodeCount(tot), nil); err != nil {
		return TokenNone, fmt.Errorf("store: %w", err)
	}
	if class == TokenNone {
		err = batch.Delete(mk, nil)
	} else {
		err = batch.Set(mk, encodeLearned(class, now), nil)
	}
	if err != nil {
		return TokenNone, fmt.Errorf("store: %w", err)
	}
	// Learning is bulk work driven by an operator or autolearn: like the
	// counters, it is not synced one message at a time (see the package
	// doc); the write-ahead log keeps the batch whole.
	if err := batch.Commit(pebble.NoSync); err != nil {
		return TokenNone, fmt.Errorf("store: %w", err)
	}
	for i, c := range next {
		if c == (TokenCount{}) {
			delete(m.counts, buckets[i])
		} else {
			m.counts[buckets[i]] = c
		}
	}
	m.total = tot
	return prev, nil
}

func (s *Embedded) TokenCounts(_ context.Context, model string, buckets []uint32) ([]TokenCount, error) {
	m, unlock, err := s.tokenModel(model, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([]TokenCount, len(buckets))
	for i, b := range buckets {
		out[i] = m.counts[b]
	}
	return out, nil
}

func (s *Embedded) TokenTotals(_ context.Context, model string) (int, int, error) {
	m, unlock, err := s.tokenModel(model, false)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	return int(m.total.Ham), int(m.total.Spam), nil
}

// Redis: a model is three hashes under one hash tag (one Cluster slot):
// the bucket counts (field: bucket in decimal; value: spam<<32 + ham, so
// that one HINCRBY moves a message's token from one class to the other),
// the learned messages (field: key; value: class, ':', unix time), and the
// totals (fields h and s).
func tokenKeys(model string) []string {
	p := "sluice:bayes:{" + model + "}:"
	return []string{p + "tok", p + "msg", p + "n"}
}

const spamUnit = 1 << 32

// tokenLearnScript: KEYS as tokenKeys; ARGV[1] the message key, ARGV[2]
// the new class ("h", "s" or "" to forget), ARGV[3] the new entry,
// ARGV[4...] the buckets. Returns the previous class ("" if none). A
// count below zero is set to zero; buckets whose counts reach zero are
// deleted, so the hash holds only live buckets.
var tokenLearnScript = redis.NewScript(`
local function unit(c)
  if c == 'h' then return 1 elseif c == 's' then return 4294967296 end
  return 0
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
local prev = ''
if old then prev = string.sub(old, 1, 1) end
if prev == ARGV[2] then return prev end
local d = unit(ARGV[2]) - unit(prev)
for i = 4, #ARGV do
  local v = redis.call('HINCRBY', KEYS[1], ARGV[i], d)
  local fix = v
  local r = v % 4294967296
  if r >= 2147483648 then fix = v - r + 4294967296 end
  if fix < 0 then fix = fix % 4294967296 end
  if fix <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  elseif fix ~= v then
    redis.call('HSET', KEYS[1], ARGV[i], fix)
  end
end
if prev ~= '' then
  if redis.call('HINCRBY', KEYS[3], prev, -1) < 0 then redis.call('HSET', KEYS[3], prev, 0) end
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return prev
`)

func (s *Redis) TokenLearn(ctx context.Context, model, msg string, class TokenClass, buckets []uint32, now time.Time) (TokenClass, error) {
	if err := checkTokenArgs(model, msg, class); err != nil {
		return TokenNone, err
	}
	cls, entry := "", ""
	if class != TokenNone {
		cls = string(rune(class))
		entry = cls + ":" + strconv.FormatInt(max(0, now.Unix()), 10)
	}
	buckets = sortedBuckets(buckets)
	args := make([]any, 0, 3+len(buckets))
	args = append(args, msg, cls, entry)
	for _, b := range buckets {
		args = append(args, strconv.FormatUint(uint64(b), 10))
	}
	prev, err := tokenLearnScript.Run(ctx, s.c, tokenKeys(model), args...).Text()
	if err != nil && !errors.Is(err, redis.Nil) {
		return TokenNone, wrap(err)
	}
	if prev == "" {
		return TokenNone, nil
	}
	return TokenClass(prev[0]), nil
}

func (s *Redis) TokenCounts(ctx context.Context, model string, buckets []uint32) ([]TokenCount, error) {
	out := make([]TokenCount, len(buckets))
	if len(buckets) == 0 {
		return out, nil
	}
	fields := make([]string, len(buckets))
	for i, b := range buckets {
		fields[i] = strconv.FormatUint(uint64(b), 10)
	}
	vals, err := s.c.HMGet(ctx, tokenKeys(model)[0], fields...).Result()
	if err != nil {
		return nil, wrap(err)
	}
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(str, 10, 64)
		if err != nil || n <= 0 {
			continue
		}
		out[i] = TokenCount{Ham: uint32(n % spamUnit), Spam: uint32(n / spamUnit)}
	}
	return out, nil
}

func (s *Redis) TokenTotals(ctx context.Context, model string) (int, int, error) {
	vals, err := s.c.HMGet(ctx, tokenKeys(model)[2], "h", "s").Result()
	if err != nil {
		return 0, 0, wrap(err)
	}
	n := [2]int{}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			n[i], _ = strconv.Atoi(str)
		}
	}
	return max(0, n[0]), max(0, n[1]), nil
}

var (
	_ TokenStore = (*Embedded)(nil)
	_ TokenStore = (*Redis)(nil)
)
