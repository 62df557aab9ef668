package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/redis/go-redis/v9"
)

// Embedded: an index entry's key is pfxIndex, the name, NUL, its time
// (unix nanoseconds, big-endian, so keys sort by time) and its id; the
// value is its data.
const pfxIndex = "x\x00"

func indexPrefix(name string) []byte { return []byte(pfxIndex + name + "\x00") }

func indexKey(name string, e IndexEntry) []byte {
	k := binary.BigEndian.AppendUint64(indexPrefix(name), uint64(e.At.UnixNano()))
	return append(k, e.ID...)
}

// indexUpper is the first key after every key of name.
func indexUpper(name string) []byte {
	p := indexPrefix(name)
	p[len(p)-1] = 1
	return p
}

// embeddedIndex is what the process knows of one index: its entry count,
// counted once, then kept as entries are added and trimmed. Only one
// process opens an embedded store, so the count stays true.
type embeddedIndex struct {
	mu      sync.Mutex
	counted bool
	n       int
	ageTrim time.Time // entry time of the last trim by age
}

func (s *Embedded) index(name string) *embeddedIndex {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	if s.indexes == nil {
		s.indexes = map[string]*embeddedIndex{}
	}
	ix := s.indexes[name]
	if ix == nil {
		ix = &embeddedIndex{}
		s.indexes[name] = ix
	}
	return ix
}

func checkIndex(name string, e IndexEntry, max int) error {
	if name == "" || len(name) > 200 || strings.ContainsRune(name, 0) {
		return errors.New("store: an index needs a name without NUL")
	}
	if e.ID == "" || e.At.IsZero() || max < 1 {
		return fmt.Errorf("store: index %s: an entry needs an id and a time, the index a size", name)
	}
	return nil
}

// IndexAdd trims by count in batches of max/100 (one range deletion each,
// not one tombstone per entry at the head of the index, which every scan
// would have to step over), and by age at most once a minute of entry
// time.
func (s *Embedded) IndexAdd(_ context.Context, name string, e IndexEntry, max int, maxAge time.Duration) error {
	if err := checkIndex(name, e, max); err != nil {
		return err
	}
	ix := s.index(name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !ix.counted {
		n, err := s.indexCount(name)
		if err != nil {
			return err
		}
		ix.n, ix.counted = n, true
	}
	k := indexKey(name, e)
	_, closer, err := s.db.Get(k)
	switch {
	case err == nil:
		closer.Close() // the same entry again: replaced, not counted twice
	case errors.Is(err, pebble.ErrNotFound):
		ix.n++
	default:
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	if err := s.db.Set(k, e.Data, pebble.NoSync); err != nil {
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	if maxAge > 0 && e.At.Sub(ix.ageTrim) >= time.Minute {
		ix.ageTrim = e.At
		if err := s.indexTrim(ix, name, func(at time.Time, _ int) bool { return e.At.Sub(at) > maxAge }); err != nil {
			return err
		}
	}
	if ix.n > max {
		drop := ix.n - indexKeep(max)
		if err := s.indexTrim(ix, name, func(_ time.Time, i int) bool { return i < drop }); err != nil {
			return err
		}
	}
	return nil
}

// indexTrim deletes the oldest entries while old(time, position) holds.
func (s *Embedded) indexTrim(ix *embeddedIndex, name string, old func(time.Time, int) bool) error {
	lower := indexPrefix(name)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: indexUpper(name)})
	if err != nil {
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	n := 0
	var end []byte
	for ok := it.First(); ok; ok = it.Next() {
		at, _ := splitIndexKey(name, it.Key())
		if !old(at, n) {
			end = append([]byte(nil), it.Key()...)
			break
		}
		n++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	if n == 0 {
		return nil
	}
	if end == nil {
		end = indexUpper(name)
	}
	if err := s.db.DeleteRange(lower, end, pebble.NoSync); err != nil {
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	ix.n -= n
	return nil
}

func splitIndexKey(name string, k []byte) (time.Time, string) {
	k = k[len(indexPrefix(name)):]
	if len(k) < 8 {
		return time.Time{}, ""
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k))), string(k[8:])
}

func (s *Embedded) indexCount(name string) (int, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: indexPrefix(name), UpperBound: indexUpper(name)})
	if err != nil {
		return 0, fmt.Errorf("store: index %s: %w", name, err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, it.Close()
}

func (s *Embedded) IndexScan(_ context.Context, name string, from, to time.Time, fn func(IndexEntry) bool) error {
	lower, upper := indexPrefix(name), indexUpper(name)
	if !from.IsZero() {
		lower = binary.BigEndian.AppendUint64(indexPrefix(name), uint64(max(0, from.UnixNano())))
	}
	if !to.IsZero() {
		upper = binary.BigEndian.AppendUint64(indexPrefix(name), uint64(max(0, to.UnixNano()))+1)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	defer it.Close()
	for ok := it.Last(); ok; ok = it.Prev() {
		at, id := splitIndexKey(name, it.Key())
		if !fn(IndexEntry{At: at, ID: id, Data: append([]byte(nil), it.Value()...)}) {
			break
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: index %s: %w", name, err)
	}
	return nil
}

// Redis: an index is a sorted set scored by time in microseconds (exact
// in a float64 for the next 200 years), whose members are the entries'
// JSON; it expires maxAge after the last addition.
func indexSet(name string) string { return "sluice:x:{" + name + "}" }

func (s *Redis) IndexAdd(ctx context.Context, name string, e IndexEntry, max int, maxAge time.Duration) error {
	if err := checkIndex(name, e, max); err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	key := indexSet(name)
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, key, redis.Z{Score: float64(e.At.UnixMicro()), Member: b})
		if maxAge > 0 {
			p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(e.At.Add(-maxAge).UnixMicro(), 10))
			p.PExpire(ctx, key, maxAge)
		}
		p.ZRemRangeByRank(ctx, key, 0, int64(-max-1))
		return nil
	})
	return wrap(err)
}

// IndexScan reads in batches; each batch starts at the score where the
// last ended, skipping the entries of that score already seen, so entries
// added meanwhile (newer) or trimmed (older) shift nothing.
func (s *Redis) IndexScan(ctx context.Context, name string, from, to time.Time, fn func(IndexEntry) bool) error {
	const batch = 500
	lo, hi := "-inf", "+inf"
	if !from.IsZero() {
		lo = strconv.FormatInt(from.UnixMicro(), 10)
	}
	if !to.IsZero() {
		hi = strconv.FormatInt(to.UnixMicro(), 10)
	}
	var skip int64
	last := math.Inf(1)
	for {
		zs, err := s.c.ZRevRangeByScoreWithScores(ctx, indexSet(name), &redis.ZRangeBy{Min: lo, Max: hi, Offset: skip, Count: batch}).Result()
		if err != nil {
			return wrap(err)
		}
		for _, z := range zs {
			if z.Score == last {
				skip++
			} else {
				last, skip = z.Score, 1
			}
			m, _ := z.Member.(string)
			var e IndexEntry
			if json.Unmarshal([]byte(m), &e) != nil {
				continue
			}
			if !fn(e) {
				return nil
			}
		}
		if len(zs) < batch {
			return nil
		}
		hi = strconv.FormatFloat(last, 'f', 0, 64)
	}
}
