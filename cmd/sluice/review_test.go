package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/server"
	"github.com/sluicemail/sluice/web"
)

// TestReviewCommand: `sluice review` on the store while no relay runs,
// then through the running relay's admin socket.
func TestReviewCommand(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfgPath, []byte("state_dir: "+filepath.Join(dir, "state")+"\nrules_dir: "+filepath.Join(dir, "rules")+"\nlisten: [{addr: '127.0.0.1:0', mode: plain}]\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "rules"), 0o755)
	os.WriteFile(filepath.Join(dir, "rules", "r.yaml"), []byte("rules: []\n"), 0o644)
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := server.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	rv := web.Review{ID: "01M83B4TQ5R6MKEAVVSTZDDCHH", Decision: "01M83B4TQ5R6MKEAVVSTZDDCHG", Contact: "ann@acme.test", Message: "It was wanted\x1b[31m mail", At: at, Status: "open"}
	if err := web.PutReview(context.Background(), st, rv); err != nil {
		t.Fatal(err)
	}
	st.Close()

	code, out, errs := runCLI("review", "list", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "01M83B4TQ5R6MKEAVVSTZDDCHH  01M83B4TQ5R6MKEAVVSTZDDCHG") || !strings.Contains(out, "open") || strings.Contains(out, "\x1b") {
		t.Errorf("list: %d %q\n%s", code, errs, out)
	}
	code, out, errs = runCLI("review", "answer", "01M83B4TQ5R6MKEAVVSTZDDCHH", "--text", "Unblocked.", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "status:   answered") || !strings.Contains(out, "Unblocked.") {
		t.Errorf("answer: %d %q\n%s", code, errs, out)
	}
	if code, _, errs := runCLI("review", "show", "01NOPE", "--config", cfgPath); code != 1 || !strings.Contains(errs, "no review request") {
		t.Errorf("unknown: %d %q", code, errs)
	}
	if code, _, _ := runCLI("review", "show", "--config", cfgPath); code != 2 {
		t.Errorf("show without id: %d", code)
	}

	// The running relay holds the embedded store: through its socket.
	srv, err := server.New(cfg, cfgPath, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		srv.Shutdown(sctx)
	}()
	if _, err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCLI("review", "show", "01M83B4TQ5R6MKEAVVSTZDDCHH", "--config", cfgPath)
	if code != 0 || !strings.Contains(errs, "via the running relay") || !strings.Contains(out, "answer (") || !strings.Contains(out, "It was wanted[31m mail") {
		t.Errorf("show via the relay: %d %q\n%s", code, errs, out)
	}
	code, out, errs = runCLI("review", "list", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "answered") {
		t.Errorf("list via the relay: %d %q\n%s", code, errs, out)
	}
}
