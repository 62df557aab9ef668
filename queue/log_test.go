package queue

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf is a log the test reads while the spool writes it.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitLog waits until the log holds want.
func waitLog(t *testing.T, l *logBuf, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// putKB puts n messages of about 1 KB, ids P000...
func putKB(t *testing.T, sp *Spool, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("P%03d", i)
		env := &Envelope{ID: id, From: "a@b.test", Rcpts: []RcptState{{Addr: "c@d.test", Status: StatusPending}}}
		if err := sp.Put(AreaQueue, env, bytes.Repeat([]byte("0123456789abcde\n"), 64)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestSegmentBytes: OpenSpool refuses a segment size below the minimum,
// and with the minimum the spool rolls segments, compacts the delivered
// ones and says so in its log.
func TestSegmentBytes(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenSpool(dir, SegmentBytes(MinSegmentBytes-1)); err == nil || !strings.Contains(err.Error(), "minimum") {
		t.Fatalf("segment size below the minimum: %v", err)
	}
	var lb logBuf
	sp, err := OpenSpool(dir, SegmentBytes(MinSegmentBytes), Logger(slog.New(slog.NewJSONHandler(&lb, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ids := putKB(t, sp, 60)
	segs, _ := segmentSeqs(sp.segDir)
	if len(segs) < 3 {
		t.Fatalf("60 KB in %d segments of 16 KB", len(segs))
	}
	for _, id := range ids {
		if err := sp.Remove(AreaQueue, id); err != nil {
			t.Fatal(err)
		}
	}
	waitLog(t, &lb, `"msg":"spool compaction done","segment":"0000000000000001.seg","deleted":true`)
	if !strings.Contains(lb.String(), `"msg":"spool compaction started","segment":"0000000000000001.seg"`) {
		t.Errorf("no start line:\n%s", lb.String())
	}
	if _, err := os.Stat(segPath(sp.segDir, 1)); !os.IsNotExist(err) {
		t.Errorf("segment 1 after its compaction: %v", err)
	}
}

// TestCompactionErrorLogged: a compaction that fails (here, its segment
// file was deleted by someone else) reaches no caller, so it is logged.
func TestCompactionErrorLogged(t *testing.T) {
	dir := t.TempDir()
	var lb logBuf
	sp, err := OpenSpool(dir, SegmentBytes(MinSegmentBytes), Logger(slog.New(slog.NewJSONHandler(&lb, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ids := putKB(t, sp, 40)
	if err := os.Remove(filepath.Join(dir, "seg", segName(1))); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := sp.Remove(AreaQueue, id); err != nil {
			t.Fatal(err)
		}
	}
	waitLog(t, &lb, `"msg":"spool compaction failed"`)
	if !strings.Contains(lb.String(), "0000000000000001.seg: no such file") {
		t.Errorf("the error does not say what failed:\n%s", lb.String())
	}
}
