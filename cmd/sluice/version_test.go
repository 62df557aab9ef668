package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionText(t *testing.T) {
	for _, c := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "sluice (devel)\ngo " + runtime.Version() + "\n"},
		{"devel, no vcs", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"sluice (devel)\ngo go1.26.8\n"},
		{"release with vcs", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-11-23T10:00:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			"sluice v1.4.0\nrevision 0123456789abcdef0123456789abcdef01234567\ncommit time 2026-11-23T10:00:00Z\ngo go1.26.8\n"},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			"sluice (devel)\nrevision abc (modified)\ngo go1.26.8\n"},
	} {
		if got := versionText(c.bi); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestVersionCommand(t *testing.T) {
	code, out, errs := runCLI("version")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "sluice ") || !strings.HasSuffix(out, "go "+runtime.Version()+"\n") {
		t.Errorf("version: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, _, errs := runCLI("version", "extra"); code != 2 || errs == "" {
		t.Errorf("version with an argument: exit %d, stderr %q", code, errs)
	}
}

// TestVersionBinary: a binary built from this checkout with VCS stamping
// prints the commit it was built from. The go command stamps a clone, not a
// git worktree (whose .git is a file): there the revision is left out.
func TestVersionBinary(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git checkout here: %v", err)
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git"))
	stamped := err == nil && fi.IsDir()
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("sluice version: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	goLine := "go " + runtime.Version()
	if stamped {
		// The go command gives a stamped build a version of its own: a
		// tag, or a pseudo-version naming the commit.
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "sluice v") || !strings.HasPrefix(lines[1], "revision "+strings.TrimSpace(string(head))) ||
			!strings.HasPrefix(lines[2], "commit time ") || lines[3] != goLine {
			t.Errorf("sluice version printed:\n%s", out)
		}
	} else if len(lines) != 2 || lines[0] != "sluice (devel)" || lines[1] != goLine {
		t.Errorf("sluice version (unstamped build) printed:\n%s", out)
	}
}
