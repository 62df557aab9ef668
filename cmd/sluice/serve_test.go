package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/server"
)

func TestHoldCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfg, []byte("state_dir: "+filepath.Join(dir, "state")+"\n"), 0o644)
	sp, err := queue.OpenSpool(filepath.Join(dir, "state", "spool"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"01HOLDA", "01HOLDB"} {
		env := &queue.Envelope{ID: id, From: "app@example.com", Rcpts: []queue.RcptState{{Addr: "bob@example.org", Status: queue.StatusPending}},
			Received: time.Now(), User: "trial-app", Score: 9, Rules: []string{"phishing-links"}, Reason: "held for review"}
		if err := sp.Put(queue.AreaHold, env, []byte("Subject: held "+id+"\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close() // the spool admits one process (or holder) at a time, as the relay does
	code, out, _ := runCLI("hold", "list", "--config", cfg)
	if code != 0 || !strings.Contains(out, "01HOLDA") || !strings.Contains(out, "trial-app") || !strings.HasSuffix(out, "2 held\n") {
		t.Errorf("hold list: %d\n%s", code, out)
	}
	code, out, _ = runCLI("hold", "show", "01HOLDB", "--config", cfg)
	if code != 0 || !strings.Contains(out, "rules:    phishing-links") || !strings.Contains(out, "Subject: held 01HOLDB") {
		t.Errorf("hold show: %d\n%s", code, out)
	}
	code, out, _ = runCLI("hold", "release", "01HOLDA", "--config", cfg)
	if code != 0 || out != "01HOLDA released for delivery\n" {
		t.Errorf("hold release: %d %q", code, out)
	}
	code, _, _ = runCLI("hold", "delete", "01HOLDB", "--config", cfg)
	if sp, err = queue.OpenSpool(filepath.Join(dir, "state", "spool")); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Envelope(queue.AreaQueue, "01HOLDA"); err != nil {
		t.Errorf("released message not in the queue: %v", err)
	}
	if ids, _ := sp.List(queue.AreaHold); code != 0 || len(ids) != 0 {
		t.Errorf("hold delete: %d, still held %v", code, ids)
	}
	sp.Close()
	code, _, errs := runCLI("hold", "release", "nope", "--config", cfg)
	if code != 1 || !strings.Contains(errs, "nope: no such message") {
		t.Errorf("release of an unknown id: %d %q", code, errs)
	}
}

func TestPasswd(t *testing.T) {
	var out, errb bytes.Buffer
	if code := cmdPasswd(nil, strings.NewReader("s3cret\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	h := strings.TrimSpace(out.String())
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret")) != nil {
		t.Errorf("%q is not a bcrypt hash of the password", h)
	}
	if code := cmdPasswd([]string{"s3cret"}, strings.NewReader(""), &out, &errb); code != 2 {
		t.Errorf("a password on the command line must be refused, exit %d", code)
	}
}

// newState writes a config and makes its state, as a relay's first start
// would: operator commands refuse a state that does not exist.
func newState(t *testing.T) string {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(path, []byte("state_dir: state\n"), 0o644)
	cfg, err := server.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := server.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	return path
}

func TestListCommands(t *testing.T) {
	cfg := newState(t)
	code, out, errs := runCLI("list", "add", "blocked", "Spammer@Example.net", "--reason", "sustained abuse", "--for", "7d", "--config", cfg)
	if code != 0 || out != "spammer@example.net added to blocked\n" {
		t.Fatalf("add: %d %q %q", code, out, errs)
	}
	runCLI("list", "add", "blocked", "other@example.net", "--config", cfg)
	code, out, _ = runCLI("list", "show", "blocked", "--config", cfg)
	if code != 0 || !strings.Contains(out, "spammer@example.net") || !strings.Contains(out, "sustained abuse") ||
		!strings.Contains(out, "operator (sluice list)") || !strings.HasSuffix(out, "2 on blocked\n") {
		t.Errorf("show: %d\n%s", code, out)
	}
	code, out, _ = runCLI("list", "show", "blocked", "other@example.net", "--config", cfg)
	if code != 0 || !strings.Contains(out, "never") {
		t.Errorf("show one: %d\n%s", code, out)
	}
	if code, _, _ = runCLI("list", "remove", "blocked", "spammer@example.net", "--config", cfg); code != 0 {
		t.Errorf("remove: %d", code)
	}
	if code, _, errs = runCLI("list", "remove", "blocked", "spammer@example.net", "--config", cfg); code != 1 || !strings.Contains(errs, "is not on blocked") {
		t.Errorf("remove twice: %d %q", code, errs)
	}
	if code, _, _ = runCLI("list", "add", "blocked", "x", "--for", "soon", "--config", cfg); code != 2 {
		t.Errorf("bad --for: %d", code)
	}
}

func TestDecisionCommand(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfgPath, []byte("state_dir: "+filepath.Join(dir, "state")+"\n"), 0o644)
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := server.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(server.Decision{ID: "01M83B4TQ5R6MKEAVVSTZDDCHG", IP: "192.0.2.7", From: "a@b.test", Rcpts: []string{"c@d.test"},
		Phase: "mail", Action: "tempfail", Code: 421, Enhanced: "4.7.1", Text: "Rate limit", Rule: "hourly-limit",
		Fired: []server.DecisionHit{{Rule: "hourly-limit"}}})
	st.Put(context.Background(), "decision", "01M83B4TQ5R6MKEAVVSTZDDCHG", b, time.Hour)
	st.Close()
	code, out, errs := runCLI("decision", "[01M83B4TQ5R6MKEAVVSTZDDCHG]", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, `verdict:  tempfail 421 4.7.1 "Rate limit" at mail by rule hourly-limit`) || !strings.Contains(out, "hourly-limit") {
		t.Errorf("decision: %d %q\n%s", code, errs, out)
	}
	if code, _, errs := runCLI("decision", "01NOPE", "--config", cfgPath); code != 1 || !strings.Contains(errs, "no decision") {
		t.Errorf("unknown: %d %q", code, errs)
	}
}
