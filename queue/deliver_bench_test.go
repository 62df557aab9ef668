package queue

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSMTPOut measures the SMTP side of delivery alone (no spool):
// 10 KB messages from 16 goroutines to a go-smtp sink on loopback, on
// pooled sessions (reused, pipelined) and on a new session per message
// (messages_per_connection: 1, as delivery was before sessions were
// pooled).
func BenchmarkSMTPOut(b *testing.B) {
	for _, perConn := range []int{1000, 1} {
		b.Run(fmt.Sprintf("messages_per_connection=%d", perConn), func(b *testing.B) {
			k := newBenchSink(b)
			cfg := smarthostConfig(k)
			cfg.MessagesPerConn = perConn
			rel := &testRelay{cfg: cfg, out: map[string][]string{}}
			d := NewDeliverer(DeliverOptions{Relay: rel, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			defer d.pool.closeAll()
			msg := []byte("Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 10240/80))
			env := &Envelope{ID: "B", From: "a@b.test", Received: time.Now()}
			b.SetBytes(int64(len(msg)))
			b.SetParallelism(8) // 16 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					out := d.deliver(cfg, env, msg, []string{"bob@example.org"})
					if !out["bob@example.org"].OK {
						b.Errorf("not delivered: %+v", out)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkLocalDelivery measures local delivery alone (no spool): 10 KB
// messages from 10 and 64 goroutines into one recipient's folder, fsync
// on, by group commit, with unnamed files linked into place and with
// named temporary files renamed. Set TMPDIR to the file system to
// measure (the figures in the package doc are from a journaled ext4).
func BenchmarkLocalDelivery(b *testing.B) {
	msg := []byte("Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 10240/80))
	for _, par := range []int{10, 64} {
		for _, named := range []bool{false, true} {
			b.Run(fmt.Sprintf("writers=%d/named=%v", par, named), func(b *testing.B) {
				dir := b.TempDir()
				w := newLocalWriter(true)
				w.named = named
				defer w.close()
				var n atomic.Int64
				b.SetParallelism((par + 1) / 2)
				cpu0 := cpuTime()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						env := &Envelope{ID: fmt.Sprintf("M%d", n.Add(1)), From: "a@b.test"}
						if r := w.deliver(dir, env, msg, "bob@example.org"); !r.OK {
							b.Errorf("not delivered: %+v", r)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
			})
		}
	}
}
