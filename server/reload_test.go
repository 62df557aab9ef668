package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReloadUnderLoad edits the rules 20 times, the ways editors and
// Kubernetes do, some edits broken, while clients keep sending: no session
// fails because of a reload, no broken edit goes live, and each good edit is
// live within 1 s.
func TestReloadUnderLoad(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Delivery = Delivery{Mode: "local"}
	// The rules directory is a ConfigMap-style mount: rules.yaml is a
	// symlink into ..data, itself a symlink to a timestamped directory.
	dir := filepath.Join(cfg.StateDir, "rules.d")
	cfg.RulesDir = dir
	version := func(n int) string {
		return fmt.Sprintf("rules:\n  - probe: 'subject == \"probe\" => block 550 5.7.1 \"version %d\"'\n  - caps: 'subject_caps => +1'\n", n)
	}
	broken := []string{
		"rules:\n  - probe: 'subject == \"probe\" and => block 550'\n",                   // syntax error
		"rules:\n  - probe: 'size > \"big\" => +1'\n",                                    // type error
		"rules:\n  - probe: subject == \"probe\" => block 550 5.7.1 \"a: b\"\n",          // YAML error
		"rules:\n  - probe: 'subjet == \"probe\" => block 550 5.7.1 \"unknown fact\"'\n", // unknown name
	}
	if err := os.MkdirAll(filepath.Join(dir, "..v0"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "..v0", "rules.yaml"), []byte(version(0)), 0o644)
	os.Symlink("..v0", filepath.Join(dir, "..data"))
	os.Symlink("..data/rules.yaml", filepath.Join(dir, "rules.yaml"))
	// A second, plain file that editors change.
	plain := filepath.Join(dir, "20-extra.yaml")
	os.WriteFile(plain, []byte("rules: []\n"), 0o644)

	if err := cfg.finish(); err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, "", Options{Log: quietLog(t), Resolver: noPTR{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ls, err := srv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	go srv.Rules().Watch(ctx, 50*time.Millisecond, time.Second)
	time.Sleep(200 * time.Millisecond) // the watcher has added its directories
	r := &relay{srv: srv, addrs: map[string]string{}}
	for _, l := range ls {
		r.addrs[l.Mode] = l.Addr.String()
	}

	// Load: 4 clients sending on long sessions (several messages each, so
	// sessions span reloads).
	var sent, failed atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c := r.dialOK("submission")
				if c == nil {
					failed.Add(1)
					continue
				}
				if err := c.Auth(plainAuth("ops")); err != nil {
					failed.Add(1)
					failures.Store(err.Error(), true)
					c.Close()
					continue
				}
				for j := range 5 {
					_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", fmt.Sprintf("load %d %d %d", w, i, j)))
					if err != nil {
						failed.Add(1)
						failures.Store(err.Error(), true)
					} else {
						sent.Add(1)
					}
				}
				c.Quit()
			}
		}()
	}

	probe := func() string {
		c := r.dialOK("submission")
		if c == nil {
			return "dial failed"
		}
		defer c.Close()
		if err := c.Auth(plainAuth("ops")); err != nil {
			return err.Error()
		}
		_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "probe"))
		if err == nil {
			return "accepted"
		}
		_, _, text := smtpCode(err)
		return strings.TrimSpace(idInReply.ReplaceAllString(text, ""))
	}
	waitVersion := func(n int) time.Duration {
		start := time.Now()
		want := fmt.Sprintf("version %d", n)
		for time.Since(start) < 3*time.Second {
			if got := probe(); got == want {
				return time.Since(start)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("edit %d not live after 3s: probe says %q", n, probe())
		return 0
	}

	live := 0
	var worst time.Duration
	for edit := 1; edit <= 20; edit++ {
		good := edit%4 != 0
		content := version(edit)
		if !good {
			content = broken[(edit/4)%len(broken)]
		}
		cur, err := filepath.EvalSymlinks(filepath.Join(dir, "rules.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		switch edit % 5 {
		case 0: // write in place
			os.WriteFile(cur, []byte(content), 0o644)
			os.WriteFile(plain, []byte("rules: []\n# edit "+fmt.Sprint(edit)+"\n"), 0o644)
		case 1: // vim: swap file, write a new file, rename over, backup
			sw := filepath.Join(dir, ".20-extra.yaml.swp")
			os.WriteFile(sw, []byte("junk"), 0o644)
			tmp := cur + ".tmp"
			os.WriteFile(tmp, []byte(content), 0o644)
			os.Rename(cur, cur+"~")
			os.Rename(tmp, cur)
			os.Remove(sw)
		case 2, 3: // Kubernetes: a new timestamped dir, ..data swapped by rename
			nd := fmt.Sprintf("..v%d", edit)
			os.MkdirAll(filepath.Join(dir, nd), 0o755)
			os.WriteFile(filepath.Join(dir, nd, "rules.yaml"), []byte(content), 0o644)
			tmpLink := filepath.Join(dir, "..data_tmp")
			os.Symlink(nd, tmpLink)
			os.Rename(tmpLink, filepath.Join(dir, "..data"))
		case 4: // truncate, then write (a slow editor)
			os.WriteFile(cur, nil, 0o644)
			time.Sleep(5 * time.Millisecond)
			os.WriteFile(cur, []byte(content), 0o644)
		}
		if good {
			d := waitVersion(edit)
			if d > 500*time.Millisecond {
				t.Logf("edit %d (style %d) took %v", edit, edit%5, d)
			}
			worst = max(worst, d)
			live = edit
		} else {
			time.Sleep(400 * time.Millisecond) // debounce and reload have run
			if got := probe(); got != fmt.Sprintf("version %d", live) {
				t.Errorf("after broken edit %d the probe says %q, want version %d", edit, got, live)
			}
			if st := srv.Rules().Status(); st.OK {
				t.Errorf("broken edit %d: reload status OK", edit)
			}
		}
	}
	close(stop)
	wg.Wait()
	if worst > time.Second {
		t.Errorf("slowest good edit went live after %v, want under 1s", worst)
	}
	if failed.Load() > 0 {
		var msgs []string
		failures.Range(func(k, _ any) bool { msgs = append(msgs, k.(string)); return true })
		t.Errorf("%d sends failed during reloads: %v", failed.Load(), msgs)
	}
	st := srv.Rules().Status()
	t.Logf("%d messages sent under load, 0 failed; 15 good edits live within %v (worst); reloads %d, rejected %d", sent.Load(), worst, st.Reloads, st.Failures)
	if sent.Load() < 100 {
		t.Errorf("only %d messages under load", sent.Load())
	}
}
