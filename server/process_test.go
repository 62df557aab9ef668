package server

import (
	"fmt"
	"math/rand/v2"
	"net"
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

// These tests run the sluice binary as an operator does.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func sluiceBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "sluice")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/sluicemail/sluice/cmd/sluice").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	// A port the kernel hands out for port 0 comes from the ephemeral range
	// (32768 and up on Linux), where any process's next outgoing connection
	// may take it between this check and the listener that wants it. Ports
	// below that range are handed out only on request.
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// proc is a running `sluice serve`.
type proc struct {
	cmd  *exec.Cmd
	addr string
	log  *os.File
}

func startProc(t *testing.T, bin, cfgPath, addr string) *proc {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(filepath.Dir(cfgPath), "sluice.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, log: logf}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice serve did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeProcConfig(t *testing.T, k *sink, rules, extra string) (cfgPath, addr, subAddr string) {
	t.Helper()
	dir := t.TempDir()
	addr, subAddr = freePort(t), freePort(t)
	os.MkdirAll(filepath.Join(dir, "rules.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "rules.d", "rules.yaml"), []byte(rules), 0o644)
	cfg := fmt.Sprintf(`hostname: relay.test
listen:
  - {addr: "%s", mode: plain}
  - {addr: "%s", mode: submission}
state_dir: %s
rules_dir: %s
delivery:
  mode: smarthost
  smarthost: {addr: "%s", tls: none}
  retry: [100ms]
limits:
  shutdown_grace: 5s
accounts:
  - name: acme
    domains: [acme.test]
    users:
      - {name: billing, password_hash: "%s", domains: [acme.test], sender_domains: assigned}
%s`, addr, subAddr, filepath.Join(dir, "state"), filepath.Join(dir, "rules.d"), k.addr, testHash, extra)
	cfgPath = filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, addr, subAddr
}

// TestCrashLosesNothing kills the relay with SIGKILL 10 times while a
// client keeps sending: every message that got a 250 reaches the sink.
func TestCrashLosesNothing(t *testing.T) {
	bin := sluiceBinary(t)
	k := newSink(t)
	cfgPath, addr, _ := writeProcConfig(t, k, "rules: []\n", "")
	p, attempts, acked := killUnderLoad(t, bin, cfgPath, addr, "crash", "", 1)
	want := len(acked)
	if want < 50 {
		t.Fatalf("only %d messages acknowledged: the test did not exercise the relay", want)
	}
	o := awaitAcked(k, acked)
	lost := o.lost
	t.Logf("crash test: %d attempts, %d acknowledged, %d delivered, losses %d, duplicates %d, delivered without a 250 (cut mid-reply) %d",
		attempts, want, o.delivered, len(lost), o.dups, o.unacked)
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages lost: %v", len(lost), lost)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}

// killUnderLoad starts the relay and kills it with SIGKILL 10 times, at
// random moments 150-500 ms apart, starting it again each time, while
// keepSending's n clients send; it returns the relay it started last,
// still running, and what keepSending returned.
func killUnderLoad(t *testing.T, bin, cfgPath, addr, prefix, body string, n int) (p *proc, attempts int, acked map[string]bool) {
	t.Helper()
	p = startProc(t, bin, cfgPath, addr)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		attempts, acked = keepSending(addr, prefix, body, n, stop)
	}()
	for range 10 {
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p = startProc(t, bin, cfgPath, addr)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	return p, attempts, acked
}

// keepSending runs n clients that send to addr until stop closes, each
// message's subject prefix-CLIENT-N with body after its header, dialling
// again whenever the relay goes away (a crash test kills it). It returns
// when every client has ended: the attempts made, and the subjects that
// got a 250.
func keepSending(addr, prefix, body string, n int, stop <-chan struct{}) (attempts int, acked map[string]bool) {
	var mu sync.Mutex
	acked = map[string]bool{}
	var clients sync.WaitGroup
	for w := range n {
		clients.Add(1)
		go func() {
			defer clients.Done()
			var c *smtp.Client
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if c == nil {
					var err error
					if c, err = smtp.Dial(addr); err != nil {
						c = nil
						time.Sleep(10 * time.Millisecond)
						continue
					}
					if c.Hello("client.test") != nil {
						c.Close()
						c = nil
						continue
					}
				}
				subj := fmt.Sprintf("%s-%d-%d", prefix, w, i)
				mu.Lock()
				attempts++
				mu.Unlock()
				if _, err := send(c, "app@example.com", []string{"bob@example.org"}, message("app@example.com", "bob@example.org", subj)+body); err != nil {
					c.Close()
					c = nil
					continue
				}
				mu.Lock()
				acked[subj] = true
				mu.Unlock()
			}
		}()
	}
	clients.Wait()
	return attempts, acked
}

// ackedOutcome is what arrived of the messages a crash test got a 250 for.
type ackedOutcome struct {
	lost                     []string
	delivered, dups, unacked int
}

// awaitAcked waits up to 30 s for every acknowledged subject to reach the
// sink (the last relay delivers what the killed ones left in the spool)
// and counts what arrived: lost, duplicated, and delivered without a 250
// (the kill cut the reply after the message was spooled).
func awaitAcked(k *sink, acked map[string]bool) ackedOutcome {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := map[string]int{}
		for _, m := range k.messages() {
			for _, line := range strings.Split(string(m.Data), "\r\n") {
				if s, ok := strings.CutPrefix(line, "Subject: "); ok {
					got[s]++
					break
				}
			}
		}
		var o ackedOutcome
		for s := range acked {
			if got[s] == 0 {
				o.lost = append(o.lost, s)
			}
		}
		if len(o.lost) == 0 || time.Now().After(deadline) {
			o.delivered = len(got)
			for s, n := range got {
				o.dups += n - 1
				if !acked[s] {
					o.unacked++
				}
			}
			return o
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSwaks sends with swaks, a real SMTP client, through a running
// `sluice serve`: AUTH under STARTTLS, then the ACL refusal.
func TestSwaks(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		t.Fatal("swaks is not installed: `make test` installs it (apt-get install swaks)")
	}
	bin := sluiceBinary(t)
	k := newSink(t)
	cfgPath, addr, sub := writeProcConfig(t, k, testRules, "")
	p := startProc(t, bin, cfgPath, addr)
	defer func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}()
	run := func(from string) (string, error) {
		out, err := exec.Command(swaks, "--server", sub, "--tls", "--auth", "PLAIN", "--auth-user", "billing",
			"--auth-password", testPassword, "--from", "app@acme.test", "--to", "bob@example.org",
			"--header", "From: "+from, "--header", "Subject: via swaks", "--timeout", "20").CombinedOutput()
		return string(out), err
	}
	out, err := run("app@acme.test")
	if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !strings.Contains(out, "235 2.0.0 Authentication succeeded") || !strings.Contains(out, "STARTTLS") {
		t.Errorf("no AUTH under STARTTLS in the dialogue:\n%s", out)
	}
	k.wait(t, 1, 10*time.Second)
	out, err = run("app@elsewhere.test")
	if err == nil || !strings.Contains(out, "550 5.7.1 [ACL] Blocked [") {
		t.Errorf("From a domain billing may not use: %v\n%s", err, out)
	}
}
