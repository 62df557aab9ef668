package classify

import (
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/store/storetest"
)

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// BenchmarkLearnCorpus learns the whole dev corpus (3,125 messages, as
// `sluice learn` does: parsing included) into an empty model, and reports
// the learning speed and the model's size: bytes on disk for the embedded
// store (write-ahead log included, after closing it), growth of Redis's
// used_memory for Redis.
func BenchmarkLearnCorpus(b *testing.B) {
	corpus := loadCorpus(b)
	rs := storetest.StartRedis(b)
	for _, name := range []string{"embedded", "redis"} {
		b.Run(name, func(b *testing.B) {
			var size int64
			for b.Loop() {
				b.StopTimer()
				var s store.Store
				var red *store.Redis
				var before int64
				dir := filepath.Join(b.TempDir(), "store")
				if name == "embedded" {
					emb, err := store.OpenEmbedded(dir)
					if err != nil {
						b.Fatal(err)
					}
					s = emb
				} else {
					rs.Stop() // an empty server: no persistence
					rs.Start()
					red = store.OpenRedis(store.RedisOptions{Addrs: []string{rs.Addr}})
					before, _ = red.MemoryUsage(bg)
					s = red
				}
				c, err := Open(s, Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for _, m := range corpus {
					if _, err := c.Learn(bg, m.raw, m.spam); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if red != nil {
					after, _ := red.MemoryUsage(bg)
					size = after - before
				}
				s.Close()
				if name == "embedded" {
					size = dirSize(b, dir)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(len(corpus)*b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(size), "model-bytes")
		})
	}
}

// BenchmarkSpamProbability judges dev corpus messages (already parsed, as
// the relay has them) with a model trained on the whole corpus: the cost
// the fact adds to a message.
func BenchmarkSpamProbability(b *testing.B) {
	corpus := loadCorpus(b)
	rs := storetest.StartRedis(b)
	for _, name := range []string{"embedded", "redis"} {
		b.Run(name, func(b *testing.B) {
			var s store.Store
			if name == "embedded" {
				emb, err := store.OpenEmbedded(filepath.Join(b.TempDir(), "store"))
				if err != nil {
					b.Fatal(err)
				}
				s = emb
			} else {
				s = store.OpenRedis(store.RedisOptions{Addrs: []string{rs.Addr}})
			}
			defer s.Close()
			c, err := Open(s, Options{})
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range corpus {
				if _, err := c.LearnParsed(bg, m.raw, m.p, m.spam); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.SpamProbability(bg, corpus[i%len(corpus)].p); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
