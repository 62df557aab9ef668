package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/internal/yamlnode"
)

// Phase is re-exported so callers of the engine need not import builtins for it.
type Phase = builtins.Phase

// Rule is one compiled rule.
type Rule struct {
	Name        string
	Description string
	// Advice tells a refused sender what to do (the report page); the
	// description stands in when it is empty.
	Advice string
	// Class is the reason class the report page names (spam, abuse, rate,
	// access, list); "" lets the page derive it.
	Class     string
	File      string
	Line, Col int
	When      string
	Then      Action
	Shadow    bool
	// Phase is the earliest SMTP phase at which every fact the rule reads
	// is known; the rule runs there.
	Phase Phase
	// PerRecipient rules read rcpt and run once for each recipient.
	PerRecipient bool
	// Index is the rule's position in load order.
	Index int

	compiled *compiled
}

// Reads lists the facts the rule's expression reads, in order of appearance.
func (r *Rule) Reads() []string {
	out := make([]string, len(r.compiled.facts))
	for i, f := range r.compiled.facts {
		out[i] = f.Name
	}
	return out
}

// Where is the rule's position as FILE:LINE:COL.
func (r *Rule) Where() string { return fmt.Sprintf("%s:%d:%d", r.File, r.Line, r.Col) }

// Thresholds turn the total score into an action after DATA. A nil field is
// not set.
type Thresholds struct {
	Reject *float64 `json:"reject,omitempty"`
	Hold   *float64 `json:"hold,omitempty"`
	Tag    *float64 `json:"tag,omitempty"`
}

// RuleSet is a compiled rules directory. It is immutable once loaded and safe
// to share between goroutines; the relay swaps whole RuleSets on reload.
type RuleSet struct {
	reg        *builtins.Registry
	rules      []*Rule
	byName     map[string]*Rule
	phaseRules [builtins.NumPhases]phaseRules
	// needs[p] are the facts the rules of phase p read, for the engine to
	// have their lookups started together (Message.Prefetch).
	needs [builtins.NumPhases][]*builtins.Fact
	// lookups[p] are the calls of lookup functions (dnsbl) in the rules of
	// phase p, made together at the first one a rule makes.
	lookups    [builtins.NumPhases][]builtins.CallSite
	ncalls     int // distinct guard calls, memoized per transaction
	thresholds Thresholds
	lists      staticLists
	warnings   []Problem
	dir        string
	files      []string
	// declaredEmpty: a file holds `rules: []`, so having no rules is meant.
	declaredEmpty bool
	checksum      string
	loadedAt      time.Time

	ids      *IDSource
	now      func() time.Time
	pool     sync.Pool
	matchers []factMatcher
	// ruleErrors counts, by rule index, the evaluations whose expression
	// failed at run time.
	ruleErrors []atomic.Uint64
}

// RuleErrors is how many times each rule's expression failed at run time
// since the set was loaded, by rule name; rules that never failed are left
// out. The relay exports it as a counter.
func (rs *RuleSet) RuleErrors() map[string]uint64 {
	out := map[string]uint64{}
	for i := range rs.ruleErrors {
		if n := rs.ruleErrors[i].Load(); n > 0 {
			out[rs.rules[i].Name] = n
		}
	}
	return out
}

type phaseRules struct {
	message []slot // run once per message
	rcpt    []slot // run once per recipient
}

// Rules returns the rules in load order.
func (rs *RuleSet) Rules() []*Rule { return rs.rules }

// Rule returns the rule with that name.
func (rs *RuleSet) Rule(name string) (*Rule, bool) {
	r, ok := rs.byName[name]
	return r, ok
}

// Thresholds returns the score thresholds.
func (rs *RuleSet) Thresholds() Thresholds { return rs.thresholds }

// Warnings returns what `sluice check` should point out without refusing the set.
func (rs *RuleSet) Warnings() []Problem { return rs.warnings }

// Checksum identifies the content of the files the set was loaded from.
func (rs *RuleSet) Checksum() string { return rs.checksum }

// Files are the rules files loaded, in load order.
func (rs *RuleSet) Files() []string { return rs.files }

// Dir is the directory the set was loaded from.
func (rs *RuleSet) Dir() string { return rs.dir }

// Registry is the registry the set was compiled against.
func (rs *RuleSet) Registry() *builtins.Registry { return rs.reg }

// ListNames returns the names of the static lists.
func (rs *RuleSet) ListNames() []string {
	out := make([]string, 0, len(rs.lists))
	for n := range rs.lists {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Options tune loading; the zero value is usable.
type Options struct {
	// IDs hands out decision ids; share one between reloads so ids stay
	// unique and sortable for the life of the process.
	IDs *IDSource
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// DynamicLists are the lists the store keeps; in_list on any other name that
// no rules file defines draws a warning.
var DynamicLists = []string{"bounces", "unsubscribes", "blocked"}

// LoadDir loads every *.yaml and *.yml file of dir, in lexical order of file
// name. Hidden files (editor swap files, Kubernetes' ..data) and fixtures
// (*.test.yaml, *.test.yml) are skipped. On
// any problem it returns a *LoadError listing them all and no RuleSet.
//
// A directory that yields no rules is an error, so that a rules file renamed
// away, a symlink that no longer resolves or a rules_dir pointing at the
// wrong place never replaces a policy with nothing: running without rules
// is said on purpose, with a file holding `rules: []`.
func LoadDir(dir string, reg *builtins.Registry, opts Options) (*RuleSet, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	return loadDir(dir, files, reg, opts)
}

// loadDir compiles the files read from dir and refuses a set without rules
// that no file declared empty.
func loadDir(dir string, files []File, reg *builtins.Registry, opts Options) (*RuleSet, error) {
	rs, err := Load(files, reg, opts)
	if err != nil {
		return nil, err
	}
	rs.dir = dir
	if len(rs.rules) == 0 && !rs.declaredEmpty {
		msg := "no rules files (*.yaml, *.yml) in the directory"
		if len(files) > 0 {
			names := make([]string, len(files))
			for i, f := range files {
				names[i] = filepath.Base(f.Name)
			}
			msg = "no rules in " + strings.Join(names, ", ")
		}
		msg += "; a rule set without rules is refused (the live rules, if any, stay). To run without rules on purpose, write a file holding `rules: []`"
		return nil, &LoadError{Problems: []Problem{{File: dir, Msg: msg}}}
	}
	return rs, nil
}

// ReadDir reads the rules files of dir as LoadDir would load them.
func ReadDir(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, &LoadError{Problems: []Problem{{File: dir, Msg: fmt.Sprintf("cannot read rules directory: %v", err)}}}
	}
	var files []File
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		if strings.HasSuffix(name, ".test.yaml") || strings.HasSuffix(name, ".test.yml") {
			continue // fixtures kept next to the rules they test (SPEC 4)
		}
		path := filepath.Join(dir, name)
		st, err := os.Stat(path) // follows symlinks, as ConfigMap mounts need
		if err != nil {
			// A dangling symlink or a symlink loop: a rules file the
			// operator meant to be there cannot be read.
			return nil, &LoadError{Problems: []Problem{{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}}}
		}
		if !st.Mode().IsRegular() {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, &LoadError{Problems: []Problem{{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}}}
		}
		files = append(files, File{Name: path, Src: src})
	}
	return files, nil
}

// Checksum identifies the content of files as RuleSet.Checksum does, so a
// poller can tell whether a directory changed without compiling it.
func Checksum(files []File) string {
	sum := sha256.New()
	for _, f := range files {
		fmt.Fprintf(sum, "%s\x00%d\x00", filepath.Base(f.Name), len(f.Src))
		sum.Write(f.Src)
	}
	return hex.EncodeToString(sum.Sum(nil))
}

// File is one rules file's name (as it should appear in messages) and content.
type File struct {
	Name string
	Src  []byte
}

// Load compiles rules files given in memory, in the order given.
func Load(files []File, reg *builtins.Registry, opts Options) (*RuleSet, error) {
	l := &loader{
		reg:   reg,
		comp:  newExprCompiler(reg),
		lists: staticLists{},
		names: map[string]*Rule{},
	}
	for _, f := range files {
		l.loadFile(f.Name, f.Src)
	}
	if len(l.problems) > 0 {
		sortProblems(l.problems)
		return nil, &LoadError{Problems: l.problems}
	}
	rs := &RuleSet{
		reg:           reg,
		rules:         l.rules,
		byName:        l.names,
		thresholds:    l.thresholds,
		lists:         l.lists,
		checksum:      Checksum(files),
		declaredEmpty: l.declaredEmpty,
		ids:           opts.IDs,
		files:         fileNames(files),
		now:           opts.Now,
		loadedAt:      time.Now(),
	}
	if rs.ids == nil {
		rs.ids = NewIDSource()
	}
	if rs.now == nil {
		rs.now = time.Now
	}
	rs.index()
	rs.warnings = append(l.warnings, rs.lint(l)...)
	sortProblems(rs.warnings)
	rs.pool.New = func() any { return newTxn(rs.reg) }
	rs.ruleErrors = make([]atomic.Uint64, len(rs.rules))
	return rs, nil
}

// index builds the per-phase rule lists and the shared matchers.
func (rs *RuleSet) index() {
	rs.matchers = buildMatchers(rs.rules)
	rs.ncalls = internCalls(rs.rules)
	rs.phaseRules = [builtins.NumPhases]phaseRules{}
	guards := compactGuards(rs.rules)
	rs.lookups = callSites(rs.rules)
	rs.needs = [builtins.NumPhases][]*builtins.Fact{}
	seen := map[*builtins.Fact]bool{}
	for _, r := range rs.rules {
		for _, f := range r.compiled.facts {
			if !seen[f] {
				seen[f] = true
				rs.needs[r.Phase] = append(rs.needs[r.Phase], f)
			}
		}
	}
	for i, r := range rs.rules {
		pr := &rs.phaseRules[r.Phase]
		if r.PerRecipient {
			pr.rcpt = append(pr.rcpt, newSlot(r, guards[i]))
		} else {
			pr.message = append(pr.message, newSlot(r, guards[i]))
		}
	}
}

func fileNames(files []File) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.Name
	}
	return out
}

type loader struct {
	reg        *builtins.Registry
	comp       *exprCompiler
	rules      []*Rule
	names      map[string]*Rule
	thresholds Thresholds
	thrWhere   string
	lists      staticLists
	problems   []Problem
	warnings   []Problem
	listUses   []listUse
	// declaredEmpty: some file says `rules: []`.
	declaredEmpty bool
}

// listUse records in_list("NAME", ...) with a constant name, to warn about
// names no list has.
type listUse struct {
	rule *Rule
	name string
}

var topKeys = []string{"thresholds", "lists", "rules"}

// maxYAMLRecoveries bounds how many syntax errors of one file are reported.
const maxYAMLRecoveries = 10

func (l *loader) loadFile(name string, src []byte) {
	s := newSource(name, src)
	docs, ok := l.parseYAML(s, src)
	if !ok {
		return
	}
	// A file may hold several documents ("---"); each is read as a rules
	// file of its own, and derived rule names count on across them.
	n := 0
	for i, doc := range docs {
		docEnd := len(s.lines)
		if i+1 < len(docs) && docs[i+1].Line > doc.Line {
			docEnd = docs[i+1].Line - 1
		}
		l.loadDoc(s, doc, docEnd, &n)
	}
}

func (l *loader) loadDoc(s *source, doc *yaml.Node, docEnd int, n *int) {
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return // an empty document (everything commented out)
	}
	root := yamlnode.Resolve(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return
	}
	if root.Kind != yaml.MappingNode {
		l.problems = append(l.problems, s.atNode(root, "a rules file is a mapping with any of the keys thresholds, lists, rules"))
		return
	}
	ps := yamlnode.Pairs(root)
	for i, p := range ps {
		k, v := p.K, p.V
		end := docEnd
		if i+1 < len(ps) && ps[i+1].K.Line > k.Line {
			end = ps[i+1].K.Line - 1
		}
		switch k.Value {
		case "thresholds":
			if !s.overlapsBlanked(k.Line, end) {
				l.loadThresholds(s, k, v)
			}
		case "lists":
			if !s.overlapsBlanked(k.Line, end) {
				l.loadLists(s, v)
			}
		case "rules":
			l.loadRules(s, v, end, n)
		default:
			l.problems = append(l.problems, s.atNode(k, fmt.Sprintf("unknown key %q: a rules file holds thresholds, lists and rules%s", k.Value, didYouMean(k.Value, topKeys))))
		}
	}
}

// parseYAML parses every document of src, reporting each syntax error. To
// report every problem at once rather than one per edit-and-retry, it
// blanks the line of each error and parses again, a bounded number of
// times; what overlaps a blanked line is then skipped so no error is
// reported twice.
func (l *loader) parseYAML(s *source, src []byte) ([]*yaml.Node, bool) {
	docs, err := yamlnode.DecodeAll(src)
	if err == nil {
		return docs, true
	}
	lines := append([]string(nil), s.lines...)
	s.blanked = map[int]bool{}
	for range maxYAMLRecoveries {
		p := s.yamlProblem(err)
		if p.Line < 1 || p.Line > len(lines) || s.blanked[p.Line] {
			return docs, false
		}
		l.problems = append(l.problems, p)
		s.blanked[p.Line] = true
		lines[p.Line-1] = ""
		if docs, err = yamlnode.DecodeAll([]byte(strings.Join(lines, "\n"))); err == nil {
			return docs, true
		}
	}
	return docs, false
}

func (l *loader) loadThresholds(s *source, k, v *yaml.Node) {
	if l.thrWhere != "" {
		l.problems = append(l.problems, s.atNode(k, "thresholds are already defined at "+l.thrWhere+"; only one file may define them"))
		return
	}
	l.thrWhere = fmt.Sprintf("%s:%d:%d", s.name, k.Line, k.Column)
	v = yamlnode.Resolve(v)
	if v.Kind != yaml.MappingNode {
		l.problems = append(l.problems, s.atNode(v, "thresholds is a mapping, e.g. {reject: 13, hold: 8, tag: 5}"))
		return
	}
	keys := []string{"reject", "hold", "tag"}
	for _, p := range yamlnode.Pairs(v) {
		tk, tv := p.K, p.V
		var dst **float64
		switch tk.Value {
		case "reject":
			dst = &l.thresholds.Reject
		case "hold":
			dst = &l.thresholds.Hold
		case "tag":
			dst = &l.thresholds.Tag
		default:
			l.problems = append(l.problems, s.atNode(tk, fmt.Sprintf("unknown threshold %q: want reject, hold or tag%s", tk.Value, didYouMean(tk.Value, keys))))
			continue
		}
		f, err := strconv.ParseFloat(tv.Value, 64)
		if tv.Kind != yaml.ScalarNode || err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			l.problems = append(l.problems, s.atNode(tv, fmt.Sprintf("threshold %s: want a number, got %q", tk.Value, tv.Value)))
			continue
		}
		*dst = &f
	}
	t := l.thresholds
	order := []struct {
		lo, hi         *float64
		loName, hiName string
	}{{t.Tag, t.Hold, "tag", "hold"}, {t.Hold, t.Reject, "hold", "reject"}, {t.Tag, t.Reject, "tag", "reject"}}
	for _, o := range order {
		if o.lo != nil && o.hi != nil && *o.lo > *o.hi {
			l.problems = append(l.problems, s.atNode(k, fmt.Sprintf("threshold %s (%s) is above %s (%s): a message would reach %s first", o.loName, formatScore(*o.lo, false), o.hiName, formatScore(*o.hi, false), o.hiName)))
		}
	}
}

func (l *loader) loadLists(s *source, v *yaml.Node) {
	v = yamlnode.Resolve(v)
	if v.Kind != yaml.MappingNode {
		l.problems = append(l.problems, s.atNode(v, "lists is a mapping of list names to lists of values"))
		return
	}
	for _, p := range yamlnode.Pairs(v) {
		nk, nv := p.K, p.V
		name := nk.Value
		if prev, ok := l.lists[name]; ok {
			l.problems = append(l.problems, s.atNode(nk, fmt.Sprintf("list %q is already defined at %s", name, prev.where)))
			continue
		}
		if nv.Kind != yaml.SequenceNode {
			l.problems = append(l.problems, s.atNode(nv, fmt.Sprintf("list %q: want a sequence of values, e.g. [noreply, no-reply]", name)))
			continue
		}
		list := &staticList{where: fmt.Sprintf("%s:%d:%d", s.name, nk.Line, nk.Column), exact: map[string]struct{}{}}
		for _, e := range listEntries(nv, 0) {
			if e.Kind != yaml.ScalarNode {
				l.problems = append(l.problems, s.atNode(e, fmt.Sprintf("list %q: entries are single values", name)))
				continue
			}
			list.add(e.Value)
		}
		l.lists[name] = list
		for _, d := range DynamicLists {
			if d == name {
				l.warnings = append(l.warnings, s.atNode(nk, fmt.Sprintf("static list %q hides the dynamic list of the same name kept by the store", name)))
			}
		}
	}
}

// listEntries returns the entries of a list, aliases resolved; an entry
// that is itself a sequence (an alias of another list, as in
// [*role_locals, postmaster]) contributes its entries.
func listEntries(n *yaml.Node, depth int) []*yaml.Node {
	var out []*yaml.Node
	for _, e := range n.Content {
		e = yamlnode.Resolve(e)
		if e.Kind == yaml.SequenceNode && depth < yamlnode.MaxDepth {
			out = append(out, listEntries(e, depth+1)...)
			continue
		}
		out = append(out, e)
	}
	return out
}

var ruleKeys = []string{"name", "when", "then", "description", "advice", "class", "mode"}

// ReasonClasses are the values of a rule's class: key.
var ReasonClasses = []string{"spam", "abuse", "rate", "access", "list"}

// loadRules reads a rules sequence; n counts the file's rules so far, for
// derived names.
func (l *loader) loadRules(s *source, v *yaml.Node, end int, n *int) {
	v = yamlnode.Resolve(v)
	if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
		l.declaredEmpty = true
	}
	if v.Kind != yaml.SequenceNode {
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			return
		}
		l.problems = append(l.problems, s.atNode(v, "rules is a sequence: each rule starts with \"- \""))
		return
	}
	base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(s.name), ".yaml"), ".yml")
	for i, item := range v.Content {
		*n++
		derived := fmt.Sprintf("%s#%d", base, *n)
		last := min(end, lastLine(item))
		if i+1 < len(v.Content) && v.Content[i+1].Line > item.Line {
			last = min(last, v.Content[i+1].Line-1)
		}
		if s.overlapsBlanked(item.Line, last) {
			continue
		}
		item = yamlnode.Resolve(item)
		switch item.Kind {
		case yaml.ScalarNode:
			l.oneLiner(s, derived, nil, item)
		case yaml.MappingNode:
			if ps := yamlnode.Pairs(item); len(ps) == 1 && !isRuleKey(ps[0].K.Value) {
				k, val := ps[0].K, ps[0].V
				if strings.Contains(k.Value, "=>") {
					l.problems = append(l.problems, s.atNode(k, "YAML read this rule as a mapping because it holds \": \"; quote the whole rule, as in\n    "+quotedForm(s.line(k.Line))))
					continue
				}
				if val.Kind != yaml.ScalarNode {
					l.problems = append(l.problems, s.atNode(val, fmt.Sprintf("rule %q: a named rule is written name: 'EXPR => ACTION'", k.Value)))
					continue
				}
				l.oneLiner(s, k.Value, k, val)
				continue
			}
			l.fullForm(s, derived, item)
		default:
			l.problems = append(l.problems, s.atNode(item, "a rule is \"EXPR => ACTION\", a mapping NAME: \"EXPR => ACTION\", or a mapping with name, when, then"))
		}
	}
}

// lastLine is the last line a node's content reaches.
func lastLine(n *yaml.Node) int {
	last := n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		last += strings.Count(strings.TrimRight(n.Value, "\n"), "\n") + 1
	}
	for _, c := range n.Content {
		last = max(last, lastLine(c))
	}
	return last
}

func isRuleKey(k string) bool {
	for _, r := range ruleKeys {
		if k == r {
			return true
		}
	}
	return false
}

// oneLiner handles "EXPR => ACTION", named (nameNode set) or not.
func (l *loader) oneLiner(s *source, name string, nameNode, v *yaml.Node) {
	val := v.Value
	arrow := findArrow(val)
	if arrow < 0 {
		msg := "a one-line rule is written \"EXPR => ACTION\"; this one has no =>"
		if _, err := ParseAction(val); err == nil {
			msg = "this rule has an action but no expression: write \"EXPR => " + strings.TrimSpace(val) + "\""
		}
		msg += s.commentHint(v)
		l.problems = append(l.problems, s.atNode(v, msg))
		return
	}
	pos := v
	if nameNode != nil {
		pos = nameNode
	}
	r := &Rule{Name: name, File: s.name, Line: pos.Line, Col: pos.Column, When: strings.TrimSpace(val[:arrow])}
	whenOff := len(val[:arrow]) - len(strings.TrimLeft(val[:arrow], " \t"))
	ok := l.compileRule(s, r, v, whenOff)
	act, err := ParseAction(val[arrow+2:])
	if err != nil {
		l.actionProblem(s, v, arrow+2, err)
		return
	}
	r.Then = act
	if ok && l.checkList(s, r, v, arrow+2) {
		l.add(s, r, pos)
	}
}

// findArrow returns the byte offset of the first "=>" outside string
// literals, or -1.
func findArrow(s string) int {
	var q byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q != 0:
			if c == '\\' {
				i++
			} else if c == q {
				q = 0
			}
		case c == '"' || c == '\'' || c == '`':
			q = c
		case c == '=' && i+1 < len(s) && s[i+1] == '>':
			return i
		}
	}
	return -1
}

func (l *loader) fullForm(s *source, derived string, item *yaml.Node) {
	r := &Rule{Name: derived, File: s.name, Line: item.Line, Col: item.Column}
	var when, then *yaml.Node
	bad := false
	for _, p := range yamlnode.Pairs(item) {
		k, v := p.K, p.V
		if v.Kind != yaml.ScalarNode {
			l.problems = append(l.problems, s.atNode(v, fmt.Sprintf("%s: want a single value", k.Value)))
			bad = true
			continue
		}
		switch k.Value {
		case "name":
			r.Name = v.Value
		case "when":
			when = v
		case "then":
			then = v
		case "description":
			r.Description = v.Value
		case "advice":
			r.Advice = v.Value
		case "class":
			if !slices.Contains(ReasonClasses, v.Value) {
				l.problems = append(l.problems, s.atNode(v, fmt.Sprintf("class %q: want spam, abuse, rate, access or list%s", v.Value, didYouMean(v.Value, ReasonClasses))))
				bad = true
			}
			r.Class = v.Value
		case "mode":
			switch v.Value {
			case "enforce", "":
			case "shadow":
				r.Shadow = true
			default:
				l.problems = append(l.problems, s.atNode(v, fmt.Sprintf("mode %q: want enforce or shadow%s", v.Value, didYouMean(v.Value, []string{"enforce", "shadow"}))))
				bad = true
			}
		default:
			l.problems = append(l.problems, s.atNode(k, fmt.Sprintf("unknown rule key %q: a rule has name, when, then, description, advice, class, mode%s", k.Value, didYouMean(k.Value, ruleKeys))))
			bad = true
		}
	}
	if when == nil {
		l.problems = append(l.problems, s.atNode(item, fmt.Sprintf("rule %q has no when", r.Name)))
		bad = true
	}
	if then == nil {
		l.problems = append(l.problems, s.atNode(item, fmt.Sprintf("rule %q has no then", r.Name)))
		bad = true
	}
	if when != nil {
		r.When = when.Value
		if !l.compileRule(s, r, when, 0) {
			bad = true
		}
	}
	if then != nil {
		act, err := ParseAction(then.Value)
		if err != nil {
			l.actionProblem(s, then, 0, err)
			bad = true
		}
		r.Then = act
		if !bad && !l.checkList(s, r, then, 0) {
			bad = true
		}
	}
	if !bad {
		l.add(s, r, item)
	}
}

// checkList checks a list action's fact and moves the rule to the phase at
// which that fact is known.
func (l *loader) checkList(s *source, r *Rule, v *yaml.Node, off int) bool {
	if r.Then.Kind != ActList {
		return true
	}
	f, ok := l.reg.Fact(r.Then.KeyOf)
	if !ok || f.Type != builtins.String {
		msg := fmt.Sprintf("list %s %s: %s is not a fact of type string", r.Then.List, r.Then.KeyOf, r.Then.KeyOf)
		if !ok {
			var names []string
			for _, f := range l.reg.Facts() {
				if f.Type == builtins.String {
					names = append(names, f.Name)
				}
			}
			msg = fmt.Sprintf("unknown fact %s%s", r.Then.KeyOf, DidYouMean(r.Then.KeyOf, names))
		}
		line, col := s.scalarPos(v, off+r.Then.keyOff)
		l.problems = append(l.problems, s.at(line, col, msg))
		return false
	}
	if r.compiled != nil {
		r.compiled.phase = max(r.compiled.phase, f.Phase)
		r.Phase = r.compiled.phase
		if f.PerRecipient {
			r.compiled.perRcpt, r.PerRecipient = true, true
		}
	}
	return true
}

func (l *loader) actionProblem(s *source, v *yaml.Node, off int, err error) {
	if ae, ok := err.(*actionError); ok {
		off += ae.Off
	}
	line, col := s.scalarPos(v, off)
	l.problems = append(l.problems, s.at(line, col, err.Error()))
}

// compileRule compiles r.When, found at byte offset off of scalar v.
func (l *loader) compileRule(s *source, r *Rule, v *yaml.Node, off int) bool {
	c, errs := l.comp.compileWhen(r.When)
	hint := ""
	if len(errs) > 0 {
		hint = s.commentHint(v)
	}
	for _, e := range errs {
		line, col := s.scalarPos(v, off+e.Off)
		l.problems = append(l.problems, s.at(line, col, e.Msg+hint))
	}
	if c == nil {
		return false
	}
	src := r.When
	c.pos = func(runeOff int) string {
		line, col := s.scalarPos(v, off+runeToByte(src, runeOff))
		return fmt.Sprintf("%s:%d:%d", s.name, line, col)
	}
	r.compiled = c
	r.Phase = c.phase
	r.PerRecipient = c.perRcpt
	return true
}

func (l *loader) add(s *source, r *Rule, at *yaml.Node) {
	if r.Name == "" || strings.ContainsAny(r.Name, " \t\r\n\"'") {
		l.problems = append(l.problems, s.atNode(at, fmt.Sprintf("rule name %q: names are non-empty and hold no spaces or quotes", r.Name)))
		return
	}
	if prev, ok := l.names[r.Name]; ok {
		l.problems = append(l.problems, s.atNode(at, fmt.Sprintf("duplicate rule name %q: already used at %s", r.Name, prev.Where())))
		return
	}
	r.Index = len(l.rules)
	l.rules = append(l.rules, r)
	l.names[r.Name] = r
}

// staticList is a list from a rules file. Values match case-insensitively;
// an entry in CIDR form matches any address inside it.
type staticList struct {
	where    string
	exact    map[string]struct{}
	prefixes []netip.Prefix
}

func (sl *staticList) add(v string) {
	v = strings.ToLower(strings.TrimSpace(v))
	if p, err := netip.ParsePrefix(v); err == nil {
		sl.prefixes = append(sl.prefixes, p.Masked())
		return
	}
	sl.exact[v] = struct{}{}
}

func (sl *staticList) contains(v string) bool {
	v = strings.ToLower(strings.Trim(strings.TrimSpace(v), "<>"))
	if _, ok := sl.exact[v]; ok {
		return true
	}
	if len(sl.prefixes) > 0 {
		if ip, err := netip.ParseAddr(v); err == nil {
			ip = ip.Unmap()
			for _, p := range sl.prefixes {
				if p.Contains(ip) {
					return true
				}
			}
		}
	}
	return false
}

type staticLists map[string]*staticList

// Values returns a list's plain entries (not its CIDR blocks), lower case,
// sorted: what phrases() searches a text for.
func (ls staticLists) Values(name string) ([]string, bool) {
	l, ok := ls[name]
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(l.exact))
	for v := range l.exact {
		out = append(out, v)
	}
	sort.Strings(out)
	return out, true
}

func (ls staticLists) Lookup(name, value string) (bool, bool) {
	l, ok := ls[name]
	if !ok {
		return false, false
	}
	return l.contains(value), true
}
