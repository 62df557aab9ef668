package ruletest

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/sluicemail/sluice/engine"
)

// WriteText writes each failure (every case with verbose) and the closing
// `N passed, N failed` line.
func (s *Summary) WriteText(w io.Writer, verbose bool) {
	for _, err := range s.LoadErrors {
		fmt.Fprintf(w, "FAIL  %v\n\n", err)
	}
	for _, r := range s.Results {
		if r.Passed() {
			if verbose {
				fmt.Fprintf(w, "ok    %s  %s  (%s %d)\n", r.Case.Where(), r.Case.Name, r.Verdict.Action, r.Verdict.Code)
			}
			continue
		}
		writeFailure(w, r)
	}
}

// WriteSummary writes the closing line.
func (s *Summary) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "%d passed, %d failed\n", s.Passed(), s.Failed())
}

// WriteCoverage lists the rules no case fired.
func (s *Summary) WriteCoverage(w io.Writer, rs *engine.RuleSet) {
	unfired := s.Unfired(rs)
	total := len(rs.Rules())
	fmt.Fprintf(w, "coverage: %d of %d rules fired\n", total-len(unfired), total)
	for _, r := range unfired {
		fmt.Fprintf(w, "  not fired: %s (%s)\n", r.Name, r.Where())
	}
}

func writeFailure(w io.Writer, r *Result) {
	c := r.Case
	fmt.Fprintf(w, "FAIL  %s  %s\n", c.Where(), c.Name)
	if c.EML != "" {
		fmt.Fprintf(w, "      message:  %s\n", c.EML)
	}
	fmt.Fprintf(w, "      expected: %s\n", describeExpect(&c.Expect))
	if v := r.Verdict; v != nil {
		fmt.Fprintf(w, "      got:      %s\n", DescribeVerdict(v))
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "      - %s\n", f)
	}
	if v := r.Verdict; v != nil {
		listed := map[string]bool{}
		for _, re := range v.RuleErrors {
			listed[re.String()] = true // among the failures already
		}
		for _, e := range v.Errors {
			if !listed[e] {
				fmt.Fprintf(w, "      error: %s\n", e)
			}
		}
		if len(v.Hits) == 0 {
			fmt.Fprintf(w, "      fired rules: none\n")
		} else {
			fmt.Fprintf(w, "      fired rules:\n")
			var table strings.Builder
			WriteHits(&table, v.Hits)
			for _, line := range strings.SplitAfter(table.String(), "\n") {
				if line != "" {
					fmt.Fprint(w, "        "+line)
				}
			}
		}
	}
	fmt.Fprintln(w)
}

func describeExpect(e *Expect) string {
	var parts []string
	if e.Action != "" {
		parts = append(parts, e.Action)
	}
	if e.Code != 0 {
		parts = append(parts, strconv.Itoa(e.Code))
	}
	if e.Enhanced != "" {
		parts = append(parts, e.Enhanced)
	}
	if e.Text != "" {
		parts = append(parts, "text ~ "+strconv.Quote(e.Text))
	}
	if e.Score != nil {
		parts = append(parts, "score "+e.Score.String())
	}
	if len(e.Rules) > 0 {
		parts = append(parts, "rules ["+strings.Join(e.Rules, ", ")+"]")
	}
	if len(e.NotRules) > 0 {
		parts = append(parts, "not_rules ["+strings.Join(e.NotRules, ", ")+"]")
	}
	for addr, re := range e.Recipients {
		parts = append(parts, fmt.Sprintf("recipient %s %s %d", addr, re.Action, re.Code))
	}
	if len(parts) == 0 {
		return "(nothing)"
	}
	return strings.Join(parts, ", ")
}

// DescribeVerdict is a verdict on one line.
func DescribeVerdict(v *engine.Verdict) string {
	s := fmt.Sprintf("%s %d %s %q, score %s", v.Action, v.Code, v.Enhanced, v.Text, strconv.FormatFloat(v.Score, 'f', -1, 64))
	if v.Rule != "" {
		s += fmt.Sprintf(", by rule %s at %s", v.Rule, v.Phase)
	} else if v.Action != engine.Accept {
		s += ", by thresholds"
	}
	return s + " (id " + v.ID + ")"
}

// WriteHits prints fired rules as a table: rule, phase, score, evidence.
// Shadow hits are marked; they did not act.
func WriteHits(w io.Writer, hits []engine.Hit) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tPHASE\tACTION\tEVIDENCE")
	for _, h := range hits {
		name := h.Rule
		if h.Shadow {
			name += " (shadow)"
		}
		phase := h.Phase
		if h.Recipient != "" {
			phase += " " + h.Recipient
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, phase, truncate(h.Action, 48), FormatEvidence(h.Evidence))
	}
	tw.Flush()
}

// FormatEvidence prints evidence as name=value pairs.
func FormatEvidence(ev []engine.Evidence) string {
	parts := make([]string, len(ev))
	for i, e := range ev {
		parts[i] = e.Name + "=" + formatValue(e.Value)
	}
	return strings.Join(parts, " ")
}

func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(truncate(x, 60))
	case []string:
		if len(x) > 5 {
			b, _ := json.Marshal(x[:5])
			return strings.TrimSuffix(string(b), "]") + fmt.Sprintf(",... %d more]", len(x)-5)
		}
		b, _ := json.Marshal(x)
		return string(b)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// JUnit XML, as CI systems (Jenkins, GitLab, GitHub actions) read it.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Line      int           `xml:"line,attr,omitempty"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Body    string `xml:",chardata"`
}

// WriteJUnit writes the results as JUnit XML to path, one suite per fixture file.
func (s *Summary) WriteJUnit(path string) error {
	out := junitSuites{}
	index := map[string]int{}
	seconds := map[int]float64{}
	suite := func(file string) *junitSuite {
		i, ok := index[file]
		if !ok {
			i = len(out.Suites)
			index[file] = i
			out.Suites = append(out.Suites, junitSuite{Name: file})
		}
		return &out.Suites[i]
	}
	for _, err := range s.LoadErrors {
		st := suite("fixtures")
		st.Tests++
		st.Failures++
		st.Cases = append(st.Cases, junitCase{Name: "load", Classname: "fixtures", Time: "0",
			Failure: &junitFailure{Message: err.Error(), Type: "load", Body: err.Error()}})
	}
	for _, r := range s.Results {
		st := suite(r.Case.File)
		st.Tests++
		seconds[index[r.Case.File]] += r.Duration.Seconds()
		jc := junitCase{
			Name:      r.Case.Name,
			Classname: strings.TrimSuffix(filepath.Base(r.Case.File), ".test.yaml"),
			File:      r.Case.File,
			Line:      r.Case.Line,
			Time:      fmt.Sprintf("%.6f", r.Duration.Seconds()),
		}
		if !r.Passed() {
			st.Failures++
			var b strings.Builder
			writeFailure(&b, r)
			jc.Failure = &junitFailure{Message: strings.Join(r.Failures, "; "), Type: "expectation", Body: b.String()}
		}
		st.Cases = append(st.Cases, jc)
	}
	for i := range out.Suites {
		out.Tests += out.Suites[i].Tests
		out.Failures += out.Suites[i].Failures
		out.Suites[i].Time = fmt.Sprintf("%.6f", seconds[i])
	}
	b, err := xml.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	b = append([]byte(xml.Header), b...)
	b = append(b, '\n')
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write junit report: %w", err)
	}
	return nil
}
