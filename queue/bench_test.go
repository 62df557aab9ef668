package queue

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSpool measures the spool alone on the relay's cycle of one
// message: a durable Put (what a 250 waits for), then its Remove once
// delivered. W writers run at once, as W SMTP sessions do. It reports
// commits/s, the bytes this process dirtied per message (/proc/self/io
// write_bytes: page-granular, journal writes not included) and the CPU
// time per message (user and system, all goroutines).
//
//	go test -run '^$' -bench BenchmarkSpool -benchtime 2000x ./queue/
func BenchmarkSpool(b *testing.B) {
	for _, size := range []int{1 << 10, 10 << 10, 100 << 10} {
		for _, w := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%dKB/w%d", size>>10, w), func(b *testing.B) {
				benchSpool(b, size, w)
			})
		}
	}
}

func benchSpool(b *testing.B, size, writers int) {
	sp, err := OpenSpool(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if c, ok := any(sp).(interface{ Close() error }); ok {
		defer c.Close()
	}
	msg := bytes.Repeat([]byte("0123456789abcde\n"), size/16)
	var next atomic.Int64
	var wg sync.WaitGroup
	before, cpu0 := writeBytes(b), cpuTime()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				id := fmt.Sprintf("B%012d", n)
				env := &Envelope{ID: id, From: "a@b.example", Rcpts: []RcptState{{Addr: "c@d.example", Status: StatusPending}}, Received: time.Now(), Size: len(msg)}
				if err := sp.Put(AreaQueue, env, msg); err != nil {
					b.Error(err)
					return
				}
				if err := sp.Remove(AreaQueue, id); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "commits/s")
	b.ReportMetric(float64(writeBytes(b)-before)/float64(b.N), "wbytes/msg")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeBytes is what this process has dirtied for storage so far.
func writeBytes(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
