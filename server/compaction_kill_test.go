package server

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// killable is a running `sluice serve` whose log the test reads as it is
// written: it follows the spool's compactions ("spool compaction started"
// then "spool compaction done", queue.Logger) and, once armed, kills the
// relay with SIGKILL as soon as a compaction starts.
type killable struct {
	cmd  *exec.Cmd
	done chan struct{} // the log reached EOF: the process is gone

	mu           sync.Mutex
	armed        bool
	inCompaction bool   // a start logged and no end yet
	seg          string // the segment of the last start
	live         int    // the messages it had to copy
	compactions  int    // starts seen
	failures     []string
}

func startKillable(t *testing.T, bin, cfgPath, addr string) *killable {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(cfgPath), "sluice.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &killable{cmd: exec.Command(bin, "serve", "--config", cfgPath), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		defer close(p.done)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			logf.WriteString(line + "\n")
			p.follow(line)
		}
	}()
	// Listening means recovery is over: the spool is open.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := smtp.Dial(addr); err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			t.Fatalf("sluice serve did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// follow reads one log line. The relay writes each record with one write
// before it goes on, so at the kill the log ends where the relay was.
func (p *killable) follow(line string) {
	if !strings.Contains(line, `"msg":"spool `) {
		return
	}
	var rec struct {
		Msg     string `json:"msg"`
		Segment string `json:"segment"`
		Live    int    `json:"live_messages"`
		Err     string `json:"err"`
	}
	if json.Unmarshal([]byte(line), &rec) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch rec.Msg {
	case "spool compaction started":
		p.inCompaction, p.seg, p.live = true, rec.Segment, rec.Live
		p.compactions++
		if p.armed {
			p.cmd.Process.Signal(syscall.SIGKILL)
			p.armed = false
		}
	case "spool compaction done":
		p.inCompaction = false
	case "spool compaction failed", "spool background sync failed":
		p.inCompaction = false
		p.failures = append(p.failures, line)
	}
}

// TestKillDuringCompaction kills the relay with SIGKILL 10 times while
// clients keep sending, each time as a spool compaction starts, with
// segments so small (16 KiB, a few messages) that compaction runs all the
// time: every message that got a 250 reaches the sink, and the log shows
// that kills landed while a compaction was under way.
func TestKillDuringCompaction(t *testing.T) {
	bin := sluiceBinary(t)
	k := newSink(t)
	cfgPath, addr, _ := writeProcConfig(t, k, "rules: []\n", "spool:\n  segment_bytes: 16384\n")
	spoolSegs := filepath.Join(filepath.Dir(cfgPath), "state", "spool", "seg")
	p := startKillable(t, bin, cfgPath, addr)

	stop := make(chan struct{})
	body := strings.Repeat("Twenty-nine bytes of padding.\r\n", 64) // 2 KB: a segment holds a few
	var attempts int
	var acked map[string]bool
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		attempts, acked = keepSending(addr, "compact", body, 4, stop)
	}()

	midCompaction, midCopy, compactions := 0, 0, 0
	var failures []string
	for round := range 10 {
		time.Sleep(time.Duration(150+rand.IntN(250)) * time.Millisecond)
		p.mu.Lock()
		p.armed = true
		p.mu.Unlock()
		// The next compaction start kills it; if none comes, kill anyway.
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			p.cmd.Process.Kill()
		}
		p.cmd.Wait()
		<-p.done
		p.mu.Lock()
		in, seg, live := p.inCompaction, p.seg, p.live
		compactions += p.compactions
		failures = append(failures, p.failures...)
		p.mu.Unlock()
		if in {
			midCompaction++
			if live > 0 {
				midCopy++
			}
			// The segment still there: killed before its unlink.
			_, err := os.Stat(filepath.Join(spoolSegs, seg))
			t.Logf("round %d: killed compacting %s (%d live messages to copy; file still there: %v)", round, seg, live, err == nil)
		} else {
			t.Logf("round %d: killed outside a compaction", round)
		}
		p = startKillable(t, bin, cfgPath, addr)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-sent
	want := len(acked)
	if want < 100 {
		t.Fatalf("only %d messages acknowledged: the test did not load the relay", want)
	}
	o := awaitAcked(k, acked)
	lost := o.lost
	t.Logf("compaction kill test: %d attempts, %d acknowledged, %d delivered, losses %d, duplicates %d, delivered without a 250 (cut mid-reply) %d; %d compactions logged, %d of 10 kills mid-compaction (%d while copying live messages)",
		attempts, want, o.delivered, len(lost), o.dups, o.unacked, compactions, midCompaction, midCopy)
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages lost: %v", len(lost), lost)
	}
	if midCompaction == 0 {
		t.Errorf("none of the 10 kills landed during a compaction (%d compactions logged)", compactions)
	}
	// With the queue delivered, the last relay compacts away what the
	// killed ones left: the active segment and at most one sealed one stay.
	var segs []string
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		segs, _ = filepath.Glob(filepath.Join(spoolSegs, "*.seg"))
		if len(segs) <= 2 || time.Now().After(end) {
			break
		}
	}
	if len(segs) > 2 {
		t.Errorf("%d segments left after everything was delivered: %v", len(segs), segs)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	<-p.done
	failures = append(failures, p.failures...)
	for _, f := range failures {
		t.Errorf("logged: %s", f)
	}
}
