package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Embedded is the Store in a local Pebble database.
type Embedded struct {
	db    *pebble.DB
	locks [256]sync.Mutex // counters are read-modify-write: one lock per key stripe

	indexMu sync.Mutex
	indexes map[string]*embeddedIndex

	tokens tokenModels // the classifier's models, in memory (tokens.go)

	// listed holds a hash of every list key stored since open: ListGet
	// answers a key whose hash is missing without reading the database.
	// Most lookups miss (a sender on no block list, a recipient who never
	// bounced), and each read cost 8% of the relay's CPU in local runs of
	// bench/postfix.sh. A removal leaves its hash: a stale one costs a
	// read, never a wrong answer. The embedded store has one process, so
	// nothing writes a list behind its back.
	listMu   sync.RWMutex
	listed   map[uint64]struct{}
	listSeed maphash.Seed
}

// Key spaces.
const (
	pfxCounter = "c\x00"
	pfxList    = "l\x00"
	pfxRecord  = "r\x00"
)

// OpenEmbedded opens (or creates) the store in dir, readable by its owner
// only. Only one process can have it open: another gets ErrLocked.
func OpenEmbedded(dir string) (*Embedded, error) {
	if _, err := MakePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}, FS: privateFS{vfs.Default}})
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("store: %s: %w", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", dir, err)
	}
	s := &Embedded{db: db, listed: map[uint64]struct{}{}, listSeed: maphash.MakeSeed()}
	if err := s.loadListed(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", dir, err)
	}
	return s, nil
}

// loadListed fills listed from the lists on disk.
func (s *Embedded) loadListed() error {
	prefix := []byte(pfxList)
	upper := append([]byte(pfxList[:len(pfxList)-1]), pfxList[len(pfxList)-1]+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		s.listed[maphash.Bytes(s.listSeed, it.Key())] = struct{}{}
	}
	return it.Error()
}

func (s *Embedded) mayBeListed(k []byte) bool {
	s.listMu.RLock()
	_, ok := s.listed[maphash.Bytes(s.listSeed, k)]
	s.listMu.RUnlock()
	return ok
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

func (s *Embedded) Close() error { return s.db.Close() }

func (s *Embedded) Ping(context.Context) error { return nil }

func (s *Embedded) lock(key string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// buckets is a counter's value: (minute, count) pairs, oldest first.
type bucket struct {
	minute int64
	count  int64
}

func decodeBuckets(b []byte) []bucket {
	var out []bucket
	prev := int64(0)
	for len(b) > 0 {
		d, n := binary.Varint(b)
		if n <= 0 {
			return out
		}
		b = b[n:]
		c, m := binary.Uvarint(b)
		if m <= 0 {
			return out
		}
		b = b[m:]
		prev += d
		out = append(out, bucket{prev, int64(c)})
	}
	return out
}

func encodeBuckets(bs []bucket) []byte {
	out := make([]byte, 0, len(bs)*6)
	prev := int64(0)
	for _, b := range bs {
		out = binary.AppendVarint(out, b.minute-prev)
		out = binary.AppendUvarint(out, uint64(b.count))
		prev = b.minute
	}
	return out
}

func (s *Embedded) Count(_ context.Context, now time.Time, n int, keys []string, windows []time.Duration) ([][]int, error) {
	cur := minuteOf(now)
	out := make([][]int, len(keys))
	for i, k := range keys {
		key := pfxCounter + NormalizeKey(k)
		mu := s.lock(key)
		mu.Lock()
		bs, err := s.buckets(key)
		if err != nil {
			mu.Unlock()
			return nil, err
		}
		if n > 0 {
			// forget what is older than the history
			keep := 0
			for keep < len(bs) && bs[keep].minute <= cur-int64(History/time.Minute) {
				keep++
			}
			bs = bs[keep:]
			if l := len(bs); l > 0 && bs[l-1].minute == cur {
				bs[l-1].count += int64(n)
			} else {
				bs = append(bs, bucket{cur, int64(n)})
			}
			if err := s.db.Set([]byte(key), encodeBuckets(bs), pebble.NoSync); err != nil {
				mu.Unlock()
				return nil, fmt.Errorf("store: %w", err)
			}
		}
		mu.Unlock()
		out[i] = sumWindows(bs, cur, windows)
	}
	return out, nil
}

func sumWindows(bs []bucket, cur int64, windows []time.Duration) []int {
	counts := make([]int, len(windows))
	for wi, w := range windows {
		from := cur - windowMinutes(w)
		for j := len(bs) - 1; j >= 0 && bs[j].minute > from; j-- {
			if bs[j].minute <= cur {
				counts[wi] += int(bs[j].count)
			}
		}
	}
	return counts
}

func (s *Embedded) buckets(key string) ([]bucket, error) {
	v, closer, err := s.db.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer closer.Close()
	return decodeBuckets(v), nil
}

func listKey(list, key string) []byte {
	return []byte(pfxList + list + "\x00" + NormalizeKey(key))
}

func (s *Embedded) ListAdd(_ context.Context, e Entry) error {
	key, b, err := encodeEntry(e)
	if err != nil {
		return err
	}
	k := listKey(e.List, key)
	s.listMu.Lock() // before the write: a reader never misses a key that is stored
	s.listed[maphash.Bytes(s.listSeed, k)] = struct{}{}
	s.listMu.Unlock()
	return s.db.Set(k, b, pebble.Sync)
}

func (s *Embedded) ListRemove(_ context.Context, list, key string) (bool, error) {
	k := listKey(list, key)
	_, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	closer.Close()
	return true, s.db.Delete(k, pebble.Sync)
}

func (s *Embedded) ListGet(_ context.Context, list, key string, now time.Time) (*Entry, error) {
	k := listKey(list, key)
	if !s.mayBeListed(k) {
		return nil, nil
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer closer.Close()
	e, err := decodeEntry(list, key, v)
	if err != nil {
		return nil, err
	}
	if !e.Live(now) {
		return nil, nil
	}
	return e, nil
}

func (s *Embedded) ListEntries(_ context.Context, list string, now time.Time) ([]Entry, error) {
	prefix := []byte(pfxList + list + "\x00")
	upper := append(append([]byte{}, prefix[:len(prefix)-1]...), 1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer it.Close()
	var out []Entry
	for ok := it.First(); ok; ok = it.Next() {
		var e Entry
		if json.Unmarshal(it.Value(), &e) == nil && e.Live(now) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, it.Error()
}

// A record's value is its expiry (unix nanoseconds, 0: none) then the data.
func (s *Embedded) Put(_ context.Context, kind, id string, data []byte, ttl time.Duration) error {
	var exp int64
	if ttl > 0 {
		exp = time.Now().Add(ttl).UnixNano()
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(exp))
	return s.db.Set([]byte(pfxRecord+kind+"\x00"+id), append(v, data...), pebble.NoSync)
}

func (s *Embedded) Get(_ context.Context, kind, id string) ([]byte, error) {
	v, closer, err := s.db.Get([]byte(pfxRecord + kind + "\x00" + id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer closer.Close()
	if len(v) < 8 {
		return nil, nil
	}
	if exp := int64(binary.BigEndian.Uint64(v)); exp != 0 && time.Now().UnixNano() >= exp {
		return nil, nil
	}
	return append([]byte(nil), v[8:]...), nil
}

const pfxDistinct = "d\x00"

// A distinct set's value: for each member, the minute it was last seen
// (uvarint) and the member (uvarint length, bytes).
func (s *Embedded) Distinct(_ context.Context, now time.Time, key, member string, window time.Duration) (int, error) {
	k := pfxDistinct + NormalizeKey(key)
	cur := minuteOf(now)
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	v, closer, err := s.db.Get([]byte(k))
	seen := map[string]int64{}
	if err == nil {
		b := v
		for len(b) > 0 {
			m, n := binary.Uvarint(b)
			if n <= 0 {
				break
			}
			l, n2 := binary.Uvarint(b[n:])
			if n2 <= 0 || uint64(len(b[n+n2:])) < l {
				break
			}
			seen[string(b[n+n2:n+n2+int(l)])] = int64(m)
			b = b[n+n2+int(l):]
		}
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return 0, fmt.Errorf("store: %w", err)
	}
	if member != "" {
		seen[NormalizeKey(member)] = cur
		var out []byte
		for m, at := range seen {
			if at > cur-int64(History/time.Minute) {
				out = binary.AppendUvarint(out, uint64(at))
				out = binary.AppendUvarint(out, uint64(len(m)))
				out = append(out, m...)
			}
		}
		if err := s.db.Set([]byte(k), out, pebble.NoSync); err != nil {
			return 0, fmt.Errorf("store: %w", err)
		}
	}
	n := 0
	from := cur - windowMinutes(window)
	for _, at := range seen {
		if at > from && at <= cur {
			n++
		}
	}
	return n, nil
}
