package queue

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSpoolKilled kills a process writing the spool under load with
// SIGKILL, again and again, with segments so small that compaction runs
// all the time: every message whose Put returned is there after each kill,
// once, whole and in the right area; every one whose Remove returned is
// gone. The writer is this test binary run again (see TestMain),
// telling on stdout what returned.
func TestSpoolKilled(t *testing.T) {
	dir := t.TempDir()
	acked := map[string]bool{}    // Put returned
	removing := map[string]bool{} // Remove called
	removed := map[string]bool{}  // Remove returned
	moving := map[string]bool{}   // Move to hold called
	moved := map[string]bool{}    // Move returned
	midCompaction, total := 0, 0
	for round := range 8 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SLUICE_SPOOL_CHILD="+dir, fmt.Sprintf("SLUICE_SPOOL_ROUND=%d", round))
		var out bytes.Buffer
		var omu sync.Mutex
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = pw, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		started := make(chan struct{})
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(pr)
			once := sync.Once{}
			for sc.Scan() {
				once.Do(func() { close(started) })
				omu.Lock()
				out.WriteString(sc.Text() + "\n")
				omu.Unlock()
			}
		}()
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatal("the writer did not start")
		}
		time.Sleep(time.Duration(150+rand.IntN(300)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		<-readDone
		compacting := false
		for _, line := range strings.Split(out.String(), "\n") {
			verb, id, _ := strings.Cut(line, " ")
			switch verb {
			case "A":
				acked[id] = true
			case "r":
				removing[id] = true
			case "R":
				removed[id] = true
			case "m":
				moving[id] = true
			case "M":
				moved[id] = true
			case "c":
				compacting = true
			case "C":
				compacting = false
			}
		}
		total++
		if compacting {
			midCompaction++
		}

		sp := mustOpen(t, dir, testOpts())
		have := map[string]string{}
		for _, area := range []string{AreaQueue, AreaHold} {
			ids, _ := sp.List(area)
			for _, id := range ids {
				if _, dup := have[id]; dup {
					t.Errorf("round %d: %s in both areas", round, id)
				}
				have[id] = area
				msg, err := sp.Message(area, id)
				env, eerr := sp.Envelope(area, id)
				if err != nil || eerr != nil || !bytes.Equal(msg, childContent(id)) || env.ID != id {
					t.Errorf("round %d: %s is not what was put: %v %v", round, id, err, eerr)
				}
			}
		}
		lost, back := 0, 0
		for id := range acked {
			area, ok := have[id]
			switch {
			case removed[id]:
				if ok {
					back++
				}
			case removing[id]:
			case !ok:
				lost++
				t.Errorf("round %d: %s lost", round, id)
			case moved[id] && area != AreaHold, !moving[id] && area != AreaQueue:
				t.Errorf("round %d: %s in %s", round, id, area)
			}
		}
		if back > 0 {
			t.Errorf("round %d: %d removed messages came back", round, back)
		}
		segs, _ := segmentSeqs(sp.segDir)
		t.Logf("round %d: %d acknowledged so far, %d in the spool, %d lost, killed mid-compaction: %v, segments %d..%d",
			round, len(acked), len(have), lost, compacting, segs[0], segs[len(segs)-1])
		sp.Close()
	}
	if len(acked) < 500 {
		t.Errorf("only %d messages acknowledged: the test did not load the spool", len(acked))
	}
	if midCompaction == 0 {
		t.Errorf("none of the %d kills came during a compaction", total)
	}
}

func childContent(id string) []byte {
	return bytes.Repeat([]byte(id+" 0123456789abcdef\r\n"), 40)
}

// TestMain runs the test binary as the writer TestSpoolKilled kills when
// it is started with SLUICE_SPOOL_CHILD, and as the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SLUICE_SPOOL_CHILD"); dir != "" {
		if err := spoolKilledChild(dir, os.Getenv("SLUICE_SPOOL_ROUND")); err != nil {
			fmt.Fprintln(os.Stderr, "spool writer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// spoolKilledChild writes to the spool in dir, compacting all the time,
// until it is killed (or a write fails).
func spoolKilledChild(dir, round string) error {
	var mu sync.Mutex
	say := func(verb, id string) {
		mu.Lock()
		os.Stdout.WriteString(verb + " " + id + "\n") // one write, whole in the pipe
		mu.Unlock()
	}
	o := defaults
	o.lockWait = 10 * time.Second
	o.segMax = 16 << 10 // about 16 messages: compaction all the time
	o.hook = func(e string) {
		if e == "compact-start" {
			say("c", "")
		} else {
			say("C", "")
		}
	}
	sp, err := openSpool(dir, o)
	if err != nil {
		return err
	}
	say("open", "")
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				id := fmt.Sprintf("R%sW%02dN%06d", round, w, n)
				env := &Envelope{ID: id, From: "a@b.test", Rcpts: []RcptState{{Addr: "c@d.test", Status: StatusPending}}}
				if err := sp.Put(AreaQueue, env, childContent(id)); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				say("A", id)
				switch n % 8 {
				case 0, 1, 2, 3, 4: // delivered at once
					say("r", id)
					sp.Remove(AreaQueue, id)
					say("R", id)
				case 5: // deferred
					env.Attempts = 1
					sp.Update(AreaQueue, env)
				case 6: // held
					say("m", id)
					sp.Move(AreaQueue, AreaHold, id)
					say("M", id)
				}
			}
		}()
	}
	wg.Wait()
	err, _ = failed.Load().(error)
	return err
}
