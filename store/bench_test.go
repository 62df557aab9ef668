package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicemail/sluice/store/storetest"
)

// BenchmarkCounter is the per-message work: one update and the read of the
// hour and day windows of the sender's counter (one pipelined round trip on
// Redis), over 10,000 senders. On Redis one session alone is bound by the
// loopback round trip (redis-benchmark's PING with one client: ~17,000/s
// here); the relay's concurrent sessions share the server.
func BenchmarkCounter(b *testing.B) {
	emb, err := OpenEmbedded(filepath.Join(b.TempDir(), "store"))
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	rs := storetest.StartRedis(b)
	red := OpenRedis(RedisOptions{Addrs: []string{rs.Addr}})
	defer red.Close()
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:app-%05d", i)
	}
	windows := []time.Duration{time.Hour, 24 * time.Hour}
	for _, tc := range []struct {
		name string
		s    Store
	}{{"embedded", emb}, {"redis", red}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			now := time.Now()
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.s.Count(ctx, now.Add(time.Duration(i)*time.Millisecond), 1, keys[i%len(keys):i%len(keys)+1], windows); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		// As the relay runs it: many sessions at once (16 per core).
		b.Run(tc.name+"/sessions", func(b *testing.B) {
			ctx := context.Background()
			now := time.Now()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := tc.s.Count(ctx, now, 1, keys[i%len(keys):i%len(keys)+1], windows); err != nil {
						b.Error(err)
						return
					}
					i += 7
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkMemoryPerMillionKeys writes one event to each of 1,000,000
// counter keys and reports the store's size: the embedded store's files
// after a flush, Redis's used_memory.
func BenchmarkMemoryPerMillionKeys(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	now := time.Now()
	windows := []time.Duration{time.Hour}
	b.Run("embedded", func(b *testing.B) {
		for b.Loop() {
			dir := filepath.Join(b.TempDir(), "store")
			s, err := OpenEmbedded(dir)
			if err != nil {
				b.Fatal(err)
			}
			keys := make([]string, 1)
			for i := range n {
				keys[0] = fmt.Sprintf("user:app-%07d", i)
				if _, err := s.Count(ctx, now, 1, keys, windows); err != nil {
					b.Fatal(err)
				}
			}
			s.db.Flush()
			s.Close()
			b.ReportMetric(float64(dirSize(dir))/(1<<20), "MB/Mkeys")
		}
	})
	b.Run("redis", func(b *testing.B) {
		for b.Loop() {
			rs := storetest.StartRedis(b)
			s := OpenRedis(RedisOptions{Addrs: []string{rs.Addr}, Timeout: 10 * time.Second})
			before, _ := s.MemoryUsage(ctx)
			keys := make([]string, 1000)
			for i := 0; i < n; i += len(keys) {
				for j := range keys {
					keys[j] = fmt.Sprintf("user:app-%07d", i+j)
				}
				if _, err := s.Count(ctx, now, 1, keys, windows); err != nil {
					b.Fatal(err)
				}
			}
			after, _ := s.MemoryUsage(ctx)
			s.Close()
			rs.Stop()
			b.ReportMetric(float64(after-before)/(1<<20), "MB/Mkeys")
		}
	})
}

func dirSize(dir string) int64 {
	var total int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			total += info.Size()
		}
		return nil
	})
	return total
}

// BenchmarkListGet is a rule's in_list on the embedded store, over a list
// of 10,000 entries: a key on it (hit) and one not on it (miss, what
// nearly every message asks).
func BenchmarkListGet(b *testing.B) {
	s, err := OpenEmbedded(filepath.Join(b.TempDir(), "store"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, now := context.Background(), time.Now()
	for i := range 10000 {
		if err := s.ListAdd(ctx, Entry{List: "bounces", Key: fmt.Sprintf("gone-%05d@example.org", i), Added: now}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("hit", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if e, err := s.ListGet(ctx, "bounces", fmt.Sprintf("gone-%05d@example.org", i%10000), now); e == nil || err != nil {
				b.Fatal("missing", err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if e, err := s.ListGet(ctx, "bounces", fmt.Sprintf("here-%05d@example.org", i%10000), now); e != nil || err != nil {
				b.Fatal("found", err)
			}
		}
	})
}
