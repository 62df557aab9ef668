package main

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The shipped rules on the development corpus (testdata/corpus): a rule edit
// that floods inboxes with false positives, or lets most spam through, fails
// here. Issue 10's goal is at most 1% of ham flagged and at least 60% of
// spam caught; the rules reach 0.46% and 74.6% on the whole dev set today,
// and the floor keeps a margin under that.
const (
	maxHamFlagged  = 1.0  // percent of ham tagged, held or rejected
	minSpamCaught  = 70.0 // percent of spam tagged, held or rejected
	corpusArchive  = "../../testdata/corpus/dev.tar.gz"
	shippedRules   = "../../rules.d"
	corpusMessages = 3125
)

var rateRe = regexp.MustCompile(`(?m)^(ham flagged|spam caught) \(tag, hold or reject\): (\d+) of (\d+), `)

func TestAccuracyDevCorpus(t *testing.T) {
	dir := t.TempDir()
	if n := untarGz(t, corpusArchive, dir); n != corpusMessages {
		t.Fatalf("%s holds %d messages, want %d", corpusArchive, n, corpusMessages)
	}
	code, out, errs := runCLI("scan", "--rules", shippedRules, "--hits",
		"ham="+filepath.Join(dir, "dev", "ham"), "spam="+filepath.Join(dir, "dev", "spam"))
	if code != 0 {
		t.Fatalf("scan exit %d: %s", code, errs)
	}
	rates := map[string]float64{}
	for _, m := range rateRe.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[2])
		of, _ := strconv.Atoi(m[3])
		rates[m[1]] = 100 * float64(n) / float64(of)
	}
	ham, okH := rates["ham flagged"]
	spam, okS := rates["spam caught"]
	if !okH || !okS {
		t.Fatalf("no rates in the scan summary:\n%s", tail(out, 2000))
	}
	t.Logf("dev corpus: ham flagged %.2f%%, spam caught %.2f%%", ham, spam)
	if ham > maxHamFlagged {
		t.Errorf("ham flagged %.2f%%, want at most %.2f%%\n%s", ham, maxHamFlagged, tail(out, 6000))
	}
	if spam < minSpamCaught {
		t.Errorf("spam caught %.2f%%, want at least %.2f%%\n%s", spam, minSpamCaught, tail(out, 6000))
	}
}

// untarGz unpacks the regular files of a .tar.gz under dir and counts them.
func untarGz(t *testing.T, archive, dir string) int {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(zr)
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || strings.HasPrefix(name, "..") {
			t.Fatalf("%s: entry %q leaves the directory", archive, h.Name)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", archive, h.Name, err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
