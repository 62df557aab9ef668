package main

import (
	"bufio"
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// buildSluice builds the command into a temporary directory.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// sluiceIn runs the binary in dir with extra environment, as an operator
// in another directory would.
func sluiceIn(t *testing.T, bin, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(withoutConfigEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func withoutConfigEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SLUICE_CONFIG=") {
			env = append(env, e)
		}
	}
	return env
}

// entries lists what is under dir, to show nothing was created.
func entries(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestOperatorCommandsWithoutState: without a state, hold, list and
// decision say so and exit 1, and create nothing, whether the config
// comes from --config, SLUICE_CONFIG or the embedded default.
func TestOperatorCommandsWithoutState(t *testing.T) {
	bin := buildSluice(t)
	etc := t.TempDir()
	cfg := filepath.Join(etc, "sluice.yaml")
	os.WriteFile(cfg, []byte("state_dir: state\n"), 0o644)
	elsewhere := t.TempDir()
	for _, args := range [][]string{
		{"list", "add", "blocked", "spammer@example.net"},
		{"list", "show", "blocked"},
		{"hold", "list"},
		{"hold", "release", "01HOLDA"},
		{"decision", "01M83B4TQ5R6MKEAVVSTZDDCHG"},
	} {
		for _, how := range []struct {
			name, want string
			env        []string
			extra      []string
		}{
			{"--config", filepath.Join(etc, "state"), nil, []string{"--config", cfg}},
			{"SLUICE_CONFIG", filepath.Join(etc, "state"), []string{"SLUICE_CONFIG=" + cfg}, nil},
			{"embedded default", filepath.Join(elsewhere, "sluice-state"), nil, nil},
		} {
			code, out, errs := sluiceIn(t, bin, elsewhere, how.env, append(args, how.extra...)...)
			if code != 1 || !strings.Contains(errs, "no relay state at "+how.want) || strings.Contains(out, "added") {
				t.Errorf("%v with %s: exit %d, want 1 and 'no relay state at %s'\nstdout: %s\nstderr: %s", args, how.name, code, how.want, out, errs)
			}
		}
	}
	if e := append(entries(t, elsewhere), entries(t, etc)...); len(e) != 1 {
		t.Errorf("the commands created %v", e)
	}
}

// relayProc is `sluice serve` running as a process.
type relayProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
}

// startServe starts `sluice serve ARGS` in dir and waits for it to listen.
func startServe(t *testing.T, bin, dir string, env []string, args ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(withoutConfigEnv(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &relayProc{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	listenRe := regexp.MustCompile(`listening on (\S+) \(plain\)`)
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("serve exited: %s", r.stderr)
			}
			if m := listenRe.FindStringSubmatch(l); m != nil {
				r.addr = m[1]
			}
			if strings.Contains(l, "spool in") && r.addr != "" {
				go func() {
					for range lines {
					}
				}()
				return r
			}
		case <-timeout:
			t.Fatalf("serve did not start: %s", r.stderr)
		}
	}
}

// stop ends the relay with SIGTERM and waits for it.
func (r *relayProc) stop(t *testing.T) {
	r.cmd.Process.Signal(syscall.SIGTERM)
	if err := r.cmd.Wait(); err != nil {
		t.Errorf("serve: %v\n%s", err, r.stderr)
	}
}

// sendMail runs one SMTP transaction and returns the error of the command
// that failed (nil if the message was accepted).
func sendMail(t *testing.T, addr, helo, from, to, subject string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	io.WriteString(w, "From: "+from+"\r\nTo: "+to+"\r\nSubject: "+subject+"\r\nMessage-ID: <"+strings.ReplaceAll(subject, " ", ".")+"@test>\r\n\r\nHello.\r\n")
	return w.Close()
}

const opsRules = `
thresholds: {reject: 13, hold: 8}
rules:
  - blocked: 'in_list("blocked", mail_from) => block 550 5.7.1 "Blocked by the operator"'
  - shady-helo: 'helo == "shady.test" => +3'
  - bad-sender: 'mail_from == "bad@example.net" => block 550 5.7.1 "No"'
  - review: 'subject contains "[review]" => hold "held for review"'
  - caps: 'subject_caps => +7'
  - pills: 'lower(subject) contains "viagra" => +8'
`

var idRe = regexp.MustCompile(`\[([0-9A-Z]{26})\]`)

// TestOperatorCommandsReachTheRunningRelay runs a relay from one directory
// with a config in another, and the operator commands from a third: they
// act on the relay's state through its admin socket and the relay sees the
// change; a second relay on the same state is refused.
func TestOperatorCommandsReachTheRunningRelay(t *testing.T) {
	bin := buildSluice(t)
	etc := t.TempDir()
	os.MkdirAll(filepath.Join(etc, "rules"), 0o755)
	os.WriteFile(filepath.Join(etc, "rules", "rules.yaml"), []byte(opsRules), 0o644)
	cfg := filepath.Join(etc, "sluice.yaml")
	os.WriteFile(cfg, []byte("listen: [{addr: '127.0.0.1:0'}]\nstate_dir: state\nrules_dir: rules\nlocal_domains: [local.test]\n"), 0o644)
	state := filepath.Join(etc, "state")
	// The state left open by an older version, as sluice serve must narrow it.
	os.Mkdir(state, 0o755)
	os.Chmod(state, 0o755)

	relay := startServe(t, bin, t.TempDir(), nil, "--config", cfg)
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v %v, want mode 0700", fi.Mode().Perm(), err)
	}
	ops := t.TempDir()
	byFlag := func(args ...string) (int, string, string) {
		return sluiceIn(t, bin, ops, nil, append(args, "--config", cfg)...)
	}
	byEnv := func(args ...string) (int, string, string) {
		return sluiceIn(t, bin, ops, []string{"SLUICE_CONFIG=" + cfg}, args...)
	}
	via := "state: " + state + " (via the running relay)\n"

	// list: the relay refuses the sender as soon as the operator adds it.
	if err := sendMail(t, relay.addr, "client.test", "spammer@example.net", "bob@local.test", "hello"); err != nil {
		t.Fatalf("before the list add: %v", err)
	}
	code, out, errs := byFlag("list", "add", "blocked", "spammer@example.net", "--reason", "abuse")
	if code != 0 || out != "spammer@example.net added to blocked\n" || errs != via {
		t.Fatalf("list add: %d %q %q", code, out, errs)
	}
	if err := sendMail(t, relay.addr, "client.test", "spammer@example.net", "bob@local.test", "hello again"); err == nil || !strings.Contains(err.Error(), "Blocked by the operator") {
		t.Errorf("the relay did not see the list add: %v", err)
	}
	code, out, errs = byEnv("list", "show", "blocked")
	if code != 0 || !strings.Contains(out, "spammer@example.net") || errs != via {
		t.Errorf("list show with SLUICE_CONFIG: %d %q %q", code, out, errs)
	}

	// hold: a release through the relay is delivered at once.
	if err := sendMail(t, relay.addr, "client.test", "app@example.com", "bob@local.test", "[review] me"); err != nil {
		t.Fatal(err)
	}
	code, out, errs = byEnv("hold", "list")
	ids := regexp.MustCompile(`(?m)^([0-9A-Z]{26}) `).FindStringSubmatch(out)
	if code != 0 || ids == nil || !strings.HasSuffix(out, "1 held\n") || errs != via {
		t.Fatalf("hold list: %d %q %q", code, out, errs)
	}
	code, out, _ = byFlag("hold", "release", ids[1])
	if code != 0 || out != ids[1]+" released for delivery\n" {
		t.Fatalf("hold release: %d %q", code, out)
	}
	delivered := filepath.Join(state, "mail", "bob@local.test")
	for deadline := time.Now().Add(1500 * time.Millisecond); ; time.Sleep(20 * time.Millisecond) {
		if ms, _ := filepath.Glob(filepath.Join(delivered, "*")); len(ms) == 2 { // "hello" and the released one
			break
		}
		if time.Now().After(deadline) {
			ms, _ := filepath.Glob(filepath.Join(delivered, "*"))
			t.Fatalf("released message not delivered within 1.5s (the relay rescans only every 2s): %v", ms)
		}
	}

	// decision: the score of a refusal before DATA, and the evidence.
	err := sendMail(t, relay.addr, "shady.test", "bad@example.net", "bob@local.test", "x")
	m := idRe.FindStringSubmatch(errString(err))
	if m == nil {
		t.Fatalf("refusal without an id: %v", err)
	}
	code, out, errs = byFlag("decision", m[1])
	for _, want := range []string{
		`verdict:  reject 550 5.7.1 "No" at mail by rule bad-sender`,
		"score:    3\n",
		"RULE", "EVIDENCE",
		`shady-helo`, `helo="shady.test"`,
		`bad-sender`, `mail_from="bad@example.net"`,
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("decision lacks %q: exit %d\n%s%s", want, code, out, errs)
		}
	}
	err = sendMail(t, relay.addr, "client.test", "app@example.com", "bob@local.test", "CHEAP VIAGRA NOW")
	m = idRe.FindStringSubmatch(errString(err))
	if m == nil {
		t.Fatalf("refusal without an id: %v", err)
	}
	code, out, _ = byEnv("decision", m[1])
	for _, want := range []string{"score:    15\n", "caps", "subject_caps=true", "pills", `subject="CHEAP VIAGRA NOW"`, "+8"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("decision lacks %q: exit %d\n%s", want, code, out)
		}
	}

	// A second relay on the same state: refused, by the admin socket or,
	// for a config that shares only the store, by the store's lock.
	code, _, errs = sluiceIn(t, bin, t.TempDir(), nil, "serve", "--config", cfg)
	if code != 1 || !strings.Contains(errs, "another relay holds the state in "+state) {
		t.Errorf("second serve: exit %d %q", code, errs)
	}
	cfg2 := filepath.Join(etc, "second.yaml")
	os.WriteFile(cfg2, []byte("listen: [{addr: '127.0.0.1:0'}]\nstate_dir: state2\nrules_dir: rules\nstore: {path: state/store}\n"), 0o644)
	code, _, errs = sluiceIn(t, bin, t.TempDir(), nil, "serve", "--config", cfg2)
	if code != 1 || !strings.Contains(errs, "another relay holds the state") || strings.Contains(errs, "goroutine") {
		t.Errorf("second serve on the same store: exit %d %q", code, errs)
	}

	// Stopped, the commands open the state directly.
	relay.stop(t)
	code, out, errs = byEnv("list", "show", "blocked")
	if code != 0 || !strings.Contains(out, "spammer@example.net") || errs != "state: "+state+" (no relay running: opened directly)\n" {
		t.Errorf("list show, relay stopped: %d %q %q", code, out, errs)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestExampleConfig: examples/sluice.yaml checks and starts from a clone as
// the README says, and its password matches its hashes.
func TestExampleConfig(t *testing.T) {
	bin := buildSluice(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := sluiceIn(t, bin, root, nil, "check", "--config", "examples/sluice.yaml")
	if code != 0 || !strings.Contains(out, "examples/sluice.yaml: ok") || !strings.HasSuffix(out, "\nok\n") {
		t.Fatalf("check --config examples/sluice.yaml: exit %d\n%s%s", code, out, errs)
	}

	src, err := os.ReadFile(filepath.Join(root, "examples", "sluice.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`sluice passwd <<< '([^']+)'`).FindSubmatch(src)
	if m == nil {
		t.Fatal("examples/sluice.yaml does not say its password")
	}
	password := string(m[1])
	hashes := regexp.MustCompile(`password_hash: "([^"]+)"`).FindAllSubmatch(src, -1)
	if len(hashes) == 0 {
		t.Fatal("no password_hash in examples/sluice.yaml")
	}
	for _, h := range hashes {
		if bcrypt.CompareHashAndPassword(h[1], []byte(password)) != nil {
			t.Errorf("%s is not the hash of %q", h[1], password)
		}
	}

	// A clone: the example and the rules it names. Only the listening
	// ports change, to free ones.
	clone := t.TempDir()
	os.Mkdir(filepath.Join(clone, "examples"), 0o755)
	cfg := regexp.MustCompile(`127\.0\.0\.1:\d+`).ReplaceAll(src, []byte("127.0.0.1:0"))
	os.WriteFile(filepath.Join(clone, "examples", "sluice.yaml"), cfg, 0o644)
	if out, err := exec.Command("cp", "-r", filepath.Join(root, "rules.d"), filepath.Join(clone, "rules.d")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	relay := startServe(t, bin, clone, nil, "--config", "examples/sluice.yaml")
	if _, err := os.Stat(filepath.Join(clone, "examples", "sluice-state", "store")); err != nil {
		t.Errorf("the state is not next to the config: %v", err)
	}
	code, _, errs = sluiceIn(t, bin, clone, []string{"SLUICE_CONFIG=examples/sluice.yaml"}, "hold", "list")
	if code != 0 || !strings.Contains(errs, "(via the running relay)") {
		t.Errorf("hold list against the example relay: %d %q", code, errs)
	}
	relay.stop(t)
}

// TestReadmeSwaks sends the README's first example message, as a newcomer
// would paste it, to a relay on the shipped rules: it must be accepted.
func TestReadmeSwaks(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		t.Fatal("swaks is needed (make deps installs it)")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("`(swaks [^`]+)`").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no swaks example in README.md")
	}
	bin := buildSluice(t)
	rules, _ := filepath.Abs("../../rules.d")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfg, []byte("listen: [{addr: '127.0.0.1:0'}]\nrules_dir: "+rules+"\n"), 0o644)
	relay := startServe(t, bin, dir, nil, "--config", cfg)
	args := strings.Fields(string(m[1]))[1:]
	for i, a := range args {
		if a == "--server" && i+1 < len(args) {
			args[i+1] = relay.addr
		}
	}
	out, err := exec.Command("swaks", args...).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^<-  250 .*queued`).Match(out) {
		t.Errorf("README's %s: %v\n%s", m[1], err, out)
	}
}
