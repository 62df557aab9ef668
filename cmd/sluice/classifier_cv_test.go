package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluicemail/sluice/server"
)

// Issue 12's goal for the classifier with the default rules, trained on one
// half of the dev corpus and judging the other: at most 0.5% of ham flagged
// (tagged, held or rejected) and at least 95% of spam caught.
const (
	cvMaxHamFlagged = 0.5
	cvMinSpamCaught = 95.0
)

// TestClassifierCrossValidation is the 2-fold cross-validation of issue 12
// through sluice itself: `sluice learn` trains a fresh relay state on one
// half of the dev corpus (the halves of testdata/corpus/README.md: the
// digits of a message's number sum to an even or an odd number), `sluice
// scan --config` judges the other half with the shipped rules and that
// classifier, then the halves swap. The verdicts of both folds add up.
func TestClassifierCrossValidation(t *testing.T) {
	dir := t.TempDir()
	if n := untarGz(t, corpusArchive, dir); n != corpusMessages {
		t.Fatalf("%s holds %d messages, want %d", corpusArchive, n, corpusMessages)
	}
	// fold/{even,odd}/{ham,spam}
	for _, class := range []string{"ham", "spam"} {
		src := filepath.Join(dir, "dev", class)
		files, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			half := "odd"
			if digitSum(f.Name())%2 == 0 {
				half = "even"
			}
			to := filepath.Join(dir, "fold", half, class)
			os.MkdirAll(to, 0o755)
			if err := os.Rename(filepath.Join(src, f.Name()), filepath.Join(to, f.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	rules, _ := filepath.Abs(shippedRules)
	// The folds run side by side, each on a state of its own: learning is
	// bound by the store's syncs, not by the CPU.
	type foldResult struct {
		vs   []cvVerdict
		logs []string
		err  string
	}
	folds := [][2]string{{"even", "odd"}, {"odd", "even"}}
	results := make([]foldResult, len(folds))
	var wg sync.WaitGroup
	for i, fold := range folds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = func() (r foldResult) {
				train, test := filepath.Join(dir, "fold", fold[0]), filepath.Join(dir, "fold", fold[1])
				cfg, err := freshState(filepath.Join(dir, "state-"+fold[0]), rules)
				if err != nil {
					r.err = err.Error()
					return r
				}
				for _, class := range []string{"ham", "spam"} {
					code, out, errs := runCLI("learn", class, "--config", cfg, filepath.Join(train, class))
					if code != 0 || !strings.Contains(out, "errors 0") {
						r.err = fmt.Sprintf("learn %s on the %s half: exit %d\n%s%s", class, fold[0], code, out, errs)
						return r
					}
					r.logs = append(r.logs, fmt.Sprintf("learn %s on the %s half: %s", class, fold[0], strings.ReplaceAll(strings.TrimSpace(out), "\n", "; ")))
				}
				code, out, errs := runCLI("scan", "--config", cfg, "--rules", rules, "--json",
					filepath.Join(test, "ham"), filepath.Join(test, "spam"))
				if code != 0 || strings.Contains(errs, "no classifier") {
					r.err = fmt.Sprintf("scan of the %s half: exit %d\n%s", fold[1], code, errs)
					return r
				}
				vs, err := readVerdicts(out, test)
				if err != nil || len(vs) == 0 {
					r.err = fmt.Sprintf("scan of the %s half: %v\n%s", fold[1], err, tail(out, 2000))
					return r
				}
				rt := cvRates(vs, 5)
				r.logs = append(r.logs, fmt.Sprintf("trained on the %s half, judged the %s half: ham flagged %d of %d (%.2f%%), spam caught %d of %d (%.2f%%)",
					fold[0], fold[1], rt.hamFlagged, rt.ham, pct(rt.hamFlagged, rt.ham), rt.spamCaught, rt.spam, pct(rt.spamCaught, rt.spam)))
				r.vs = vs
				return r
			}()
		}()
	}
	wg.Wait()
	var all []cvVerdict
	for _, r := range results {
		for _, l := range r.logs {
			t.Log(l)
		}
		if r.err != "" {
			t.Fatal(r.err)
		}
		all = append(all, r.vs...)
	}

	// ROC points: the share of ham and of spam at or above each score
	// (5 is the tag threshold of rules.d: flagged), and what the
	// classifier's rules alone fired on.
	t.Log("ROC over both folds (score threshold: ham flagged, spam caught):")
	for _, th := range []float64{2, 3, 4, 5, 6, 8, 10, 13} {
		r := cvRates(all, th)
		t.Logf("  score >= %-4g ham %5.2f%% (%d of %d)  spam %6.2f%% (%d of %d)", th,
			pct(r.hamFlagged, r.ham), r.hamFlagged, r.ham, pct(r.spamCaught, r.spam), r.spamCaught, r.spam)
	}
	for _, rule := range []string{"classifier-spam", "classifier-likely-spam", "classifier-ham"} {
		var h, s, nh, ns int
		for _, v := range all {
			fired := slices.Contains(v.rules, rule)
			if v.spam {
				ns++
				if fired {
					s++
				}
			} else {
				nh++
				if fired {
					h++
				}
			}
		}
		t.Logf("  %-22s fired on %5.2f%% of ham, %6.2f%% of spam", rule, pct(h, nh), pct(s, ns))
	}

	r := cvRates(all, 5)
	if r.ham+r.spam != corpusMessages {
		t.Fatalf("judged %d messages over both folds, want %d", r.ham+r.spam, corpusMessages)
	}
	ham, spam := pct(r.hamFlagged, r.ham), pct(r.spamCaught, r.spam)
	t.Logf("both folds: ham flagged %.2f%% (%d of %d), spam caught %.2f%% (%d of %d)", ham, r.hamFlagged, r.ham, spam, r.spamCaught, r.spam)
	if ham > cvMaxHamFlagged || spam < cvMinSpamCaught {
		var fp []string
		for _, v := range all {
			if !v.spam && v.flagged() {
				fp = append(fp, fmt.Sprintf("%s %s %g %s", filepath.Base(v.path), v.action, v.score, strings.Join(v.rules, ",")))
			}
		}
		t.Errorf("issue 12's goal not met: ham flagged %.2f%% (want at most %.1f%%), spam caught %.2f%% (want at least %.0f%%)\nham flagged:\n%s",
			ham, cvMaxHamFlagged, spam, cvMinSpamCaught, strings.Join(fp, "\n"))
	}
}

// freshState makes a relay state whose store exists, as one a relay has
// run on, and returns its config.
func freshState(dir, rules string) (string, error) {
	os.MkdirAll(dir, 0o700)
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("state_dir: state\nrules_dir: "+rules+"\n"), 0o600); err != nil {
		return "", err
	}
	c, err := server.LoadConfig(cfg)
	if err != nil {
		return "", err
	}
	os.MkdirAll(c.StateDir, 0o700)
	st, err := server.OpenStore(c)
	if err != nil {
		return "", err
	}
	return cfg, st.Close()
}

func digitSum(name string) int {
	num, _, _ := strings.Cut(strings.TrimPrefix(name, "hard-"), ".")
	n := 0
	for _, c := range num {
		if c >= '0' && c <= '9' {
			n += int(c - '0')
		}
	}
	return n
}

type cvVerdict struct {
	path   string
	spam   bool
	action string
	score  float64
	rules  []string
}

func (v cvVerdict) flagged() bool {
	return v.action == "tag" || v.action == "hold" || v.action == "reject"
}

// readVerdicts reads scan --json lines; a message is spam when it was found
// under test/spam.
func readVerdicts(out, test string) ([]cvVerdict, error) {
	var vs []cvVerdict
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var j struct {
			Path   string
			Action string
			Score  float64
			Rules  []string
		}
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			return nil, fmt.Errorf("scan --json line %q: %v", sc.Text(), err)
		}
		vs = append(vs, cvVerdict{path: j.Path, spam: strings.HasPrefix(j.Path, filepath.Join(test, "spam")+string(filepath.Separator)),
			action: j.Action, score: j.Score, rules: j.Rules})
	}
	return vs, sc.Err()
}

type cvRate struct{ ham, spam, hamFlagged, spamCaught int }

// cvRates counts the messages at or above a score; at the tag threshold (5)
// a message counts by its verdict, which a rule's block or hold also makes.
func cvRates(vs []cvVerdict, th float64) cvRate {
	var r cvRate
	for _, v := range vs {
		hit := v.score >= th
		if th == 5 {
			hit = v.flagged()
		}
		if v.spam {
			r.spam++
			if hit {
				r.spamCaught++
			}
		} else {
			r.ham++
			if hit {
				r.hamFlagged++
			}
		}
	}
	return r
}
