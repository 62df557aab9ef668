// Package ruletest owns rule fixtures: it loads *.test.yaml cases and their
// .eml messages, replays them through the engine exactly as the relay would,
// checks the expectations, and reports as text, JUnit XML and rule coverage.
package ruletest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/mail"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/internal/yamlnode"
	"github.com/sluicemail/sluice/mailauth"
)

// Case is one fixture case.
type Case struct {
	Name    string
	File    string // the .test.yaml it came from
	Line    int
	EML     string // path of the message file, "" when inline
	Message []byte
	Context Context
	Expect  Expect
}

// Where is the case's position as FILE:LINE.
func (c *Case) Where() string { return fmt.Sprintf("%s:%d", c.File, c.Line) }

// Context is what the .eml alone cannot carry (SPEC 4). Keys not given take
// neutral defaults: client 127.0.0.1 with PTR localhost, HELO localhost, no
// TLS, unauthenticated, envelope sender and recipients taken from the
// From, To and Cc headers.
type Context struct {
	ClientIP string              `yaml:"client_ip"`
	Helo     *string             `yaml:"helo"`
	RDNS     *string             `yaml:"rdns"`
	TLS      bool                `yaml:"tls"`
	SMTPUser string              `yaml:"smtp_user"`
	MailFrom *string             `yaml:"mail_from"`
	Rcpts    []string            `yaml:"rcpts"`
	Facts    map[string]any      `yaml:"facts"`
	Lists    map[string][]string `yaml:"lists"` // dynamic lists (bounces, unsubscribes, ...) as the store would hold them
	// Counts are what count(counter, key, window) answers, by
	// "counter:key" whatever the window, e.g. {"rcpt_domain:gmail.com": 120}.
	Counts map[string]int `yaml:"counts"`
	// DNS is the DNS the checks see (SPF, DKIM, DMARC, ARC, DNSBL,
	// FCrDNS): "NAME TYPE" -> records, or SERVFAIL / TIMEOUT; every other
	// name is NXDOMAIN, and nothing leaves the process (SPEC 6).
	DNS map[string]DNSValues `yaml:"dns"`
	// Outbound is the outbound fact; default: true when smtp_user is given.
	Outbound *bool `yaml:"outbound"`
	// ReceivedAt is when the message was received, for the facts about its
	// Date, as RFC 3339 or an RFC 5322 date; default: the time of its
	// newest Received field, else now (SPEC 7).
	ReceivedAt string `yaml:"received_at"`
	// Classifier gives spam_probability to scan and explain run with
	// --config (SPEC 7); never read from a file, nil (0.5) in sluice test.
	Classifier builtins.Classifier `yaml:"-"`
}

// DNSValues are the records of one name and type: a list, or one string.
type DNSValues []string

// UnmarshalYAML takes a single string as a list of one.
func (d *DNSValues) UnmarshalYAML(n *yaml.Node) error {
	if n = yamlnode.Resolve(n); n.Kind == yaml.ScalarNode {
		*d = DNSValues{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*d = l
	return nil
}

// Expect is what must hold of the verdict; every key is optional.
type Expect struct {
	Action     string                     `yaml:"action"`
	Code       int                        `yaml:"code"`
	Enhanced   string                     `yaml:"enhanced"`
	Text       string                     `yaml:"text"` // the reply text must contain this
	Score      *ScoreExpect               `yaml:"score"`
	Rules      []string                   `yaml:"rules"`
	NotRules   []string                   `yaml:"not_rules"`
	Recipients map[string]RecipientExpect `yaml:"recipients"`
	// Facts are values facts must have for the message, as the checks
	// compute them (e.g. {spf: pass, dkim_domains: [shop.example]}): what
	// a case with context.dns shows of SPF, DKIM, DMARC and ARC.
	Facts map[string]any `yaml:"facts"`
}

// RecipientExpect is what must hold for one recipient.
type RecipientExpect struct {
	Action   string `yaml:"action"`
	Code     int    `yaml:"code"`
	Enhanced string `yaml:"enhanced"`
}

// ScoreExpect is an exact score, or bounds.
type ScoreExpect struct {
	Exact    *float64
	Min, Max *float64
}

// UnmarshalYAML reads `score: 5`, `score: {min: 13}` or `{min: 1, max: 4}`.
func (s *ScoreExpect) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var f float64
		if err := n.Decode(&f); err != nil {
			return fmt.Errorf("line %d: score: want a number or {min: N, max: N}", n.Line)
		}
		s.Exact = &f
		return nil
	}
	var m struct {
		Min *float64 `yaml:"min"`
		Max *float64 `yaml:"max"`
	}
	if err := decodeStrict(n, &m); err != nil {
		return fmt.Errorf("score: %w", err)
	}
	s.Min, s.Max = m.Min, m.Max
	return nil
}

func (s *ScoreExpect) String() string {
	switch {
	case s.Exact != nil:
		return fmt.Sprintf("%g", *s.Exact)
	case s.Min != nil && s.Max != nil:
		return fmt.Sprintf("%g..%g", *s.Min, *s.Max)
	case s.Min != nil:
		return fmt.Sprintf(">= %g", *s.Min)
	case s.Max != nil:
		return fmt.Sprintf("<= %g", *s.Max)
	}
	return "any"
}

// decodeStrict decodes node n into v, as yaml's KnownFields would: a
// misspelt key is an error, not ignored. It works on the node in its
// document rather than on a re-encoded copy, so that aliases (context:
// *known) find their anchors, merge keys (<<: *base) work, and lines are
// the file's.
func decodeStrict(n *yaml.Node, v any) error {
	if probs := unknownKeys(n, reflect.TypeOf(v), 0); len(probs) > 0 {
		return errors.New(strings.Join(probs, "\n"))
	}
	return n.Decode(v)
}

var (
	nodeType        = reflect.TypeFor[yaml.Node]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// unknownKeys returns "line N: unknown key K" for each key of n (merged
// keys included) that no field of t, or of the types inside it, takes.
func unknownKeys(n *yaml.Node, t reflect.Type, depth int) []string {
	n = yamlnode.Resolve(n)
	if n == nil || depth > yamlnode.MaxDepth {
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType) {
		return nil // it checks its own keys
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
		if reflect.PointerTo(t).Implements(unmarshalerType) {
			return nil
		}
	}
	var out []string
	switch t.Kind() {
	case reflect.Struct:
		if t == nodeType || n.Kind != yaml.MappingNode {
			return nil // decoding reports a mapping where none belongs
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for _, p := range yamlnode.Pairs(n) {
			ft, ok := fields[p.K.Value]
			if !ok {
				out = append(out, fmt.Sprintf("line %d: unknown key %s%s", p.K.Line, p.K.Value, engine.DidYouMean(p.K.Value, names)))
				continue
			}
			out = append(out, unknownKeys(p.V, ft, depth+1)...)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for _, e := range n.Content {
				out = append(out, unknownKeys(e, t.Elem(), depth+1)...)
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for _, p := range yamlnode.Pairs(n) {
				out = append(out, unknownKeys(p.V, t.Elem(), depth+1)...)
			}
		}
	}
	return out
}

var notFound = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlErrors splits a yaml.v3 decoding error ("unmarshal errors:\n  line
// 7: ...") into one FILE:LINE: message per problem, in the operator's words.
func yamlErrors(path string, line int, err error) []error {
	var out []error
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "unmarshal errors:" {
			continue
		}
		at := line
		if rest, ok := strings.CutPrefix(l, "line "); ok {
			if i := strings.Index(rest, ": "); i > 0 {
				if n, err := strconv.Atoi(rest[:i]); err == nil {
					at, l = n, rest[i+2:]
				}
			}
		}
		l = notFound.ReplaceAllString(l, "unknown key $1")
		out = append(out, fmt.Errorf("%s:%d: %s", path, at, l))
	}
	if len(out) == 0 {
		out = append(out, fmt.Errorf("%s:%d: %v", path, line, err))
	}
	return out
}

type rawCase struct {
	Name    string  `yaml:"name"`
	EML     string  `yaml:"eml"`
	Message string  `yaml:"message"`
	Context Context `yaml:"context"`
	Expect  Expect  `yaml:"expect"`
}

// Find returns every *.test.yaml file under the given paths, sorted. A path
// may name a file directly.
func Find(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".test.yaml") || strings.HasSuffix(path, ".test.yml")) {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(out)
	return out, nil
}

// LoadFile reads the cases of one fixture file: of every document in it,
// when it holds several ("---"). Problems with single cases (a missing
// .eml, a misspelt key) are returned with the cases that loaded.
func LoadFile(path string) ([]*Case, []error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{err}
	}
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	for {
		d := &yaml.Node{}
		err := dec.Decode(d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, []error{fmt.Errorf("%s: %v", path, err)}
		}
		if len(d.Content) > 0 && !(d.Content[0].Kind == yaml.ScalarNode && d.Content[0].Tag == "!!null") {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		return nil, []error{fmt.Errorf("%s: empty fixture file: want a mapping with cases", path)}
	}
	var cases []*Case
	var errs []error
	idx := 0
	for _, d := range docs {
		root := yamlnode.Resolve(d.Content[0])
		var rf struct {
			Cases yaml.Node `yaml:"cases"`
		}
		if err := decodeStrict(root, &rf); err != nil {
			// An unknown top-level key is reported; the cases still load.
			errs = append(errs, yamlErrors(path, root.Line, err)...)
			if root.Kind != yaml.MappingNode {
				continue
			}
			for _, p := range yamlnode.Pairs(root) {
				if p.K.Value == "cases" {
					rf.Cases = *p.V
				}
			}
		}
		list := yamlnode.Resolve(&rf.Cases)
		if list.Kind == 0 || (list.Kind == yaml.ScalarNode && list.Tag == "!!null") {
			continue
		}
		if list.Kind != yaml.SequenceNode {
			errs = append(errs, fmt.Errorf("%s:%d: cases: want a sequence of cases, each starting with \"- \"", path, list.Line))
			continue
		}
		for _, n := range list.Content {
			idx++
			c, err := loadCase(path, n, idx)
			if err != nil {
				errs = append(errs, err...)
				continue
			}
			cases = append(cases, c)
		}
	}
	return cases, errs
}

// loadCase reads one case; i numbers it for a case without a name.
func loadCase(path string, n *yaml.Node, i int) (*Case, []error) {
	var rc rawCase
	if err := decodeStrict(n, &rc); err != nil {
		return nil, yamlErrors(path, n.Line, err)
	}
	c := &Case{Name: rc.Name, File: path, Line: n.Line, Context: rc.Context, Expect: rc.Expect}
	if c.Name == "" {
		c.Name = fmt.Sprintf("case %d", i)
	}
	switch {
	case rc.EML != "" && rc.Message != "":
		return nil, []error{fmt.Errorf("%s: case %q: give eml or message, not both", c.Where(), c.Name)}
	case rc.EML != "":
		c.EML = filepath.Join(filepath.Dir(path), rc.EML)
		b, err := os.ReadFile(c.EML)
		if err != nil {
			return nil, []error{fmt.Errorf("%s: case %q: %v", c.Where(), c.Name, err)}
		}
		c.Message = b
	default:
		c.Message = []byte(rc.Message)
	}
	return c, nil
}

// Input builds the engine input and envelope for a case, applying the
// neutral defaults and checking fact overrides against the registry.
func (ctx *Context) Input(reg *builtins.Registry, raw []byte) (*builtins.Input, engine.Envelope, error) {
	in := &builtins.Input{
		ClientIP:      ctx.ClientIP,
		TLS:           ctx.TLS,
		SMTPUser:      ctx.SMTPUser,
		Authenticated: ctx.SMTPUser != "",
		Classifier:    ctx.Classifier,
	}
	if in.ClientIP == "" {
		in.ClientIP = "127.0.0.1"
	}
	in.Outbound = in.Authenticated
	if ctx.Outbound != nil {
		in.Outbound = *ctx.Outbound
	}
	if ctx.DNS != nil {
		recs := make(map[string][]string, len(ctx.DNS))
		for k, v := range ctx.DNS {
			recs[k] = v
		}
		in.DNS = mailauth.NewStaticResolver(recs)
	}
	if ctx.RDNS != nil {
		in.RDNS, in.RDNSKnown = *ctx.RDNS, true
	}
	if ctx.ReceivedAt != "" {
		t, err := parseTime(ctx.ReceivedAt)
		if err != nil {
			return nil, engine.Envelope{}, fmt.Errorf("context.received_at: %v", err)
		}
		in.ReceivedAt = t
	}
	env := engine.Envelope{Helo: "localhost", Raw: raw}
	if ctx.Helo != nil {
		env.Helo = *ctx.Helo
	}
	hdr, _ := builtins.ParseHeader(raw)
	if ctx.MailFrom != nil {
		env.MailFrom = *ctx.MailFrom
	} else {
		env.MailFrom = hdr.From()
	}
	if ctx.Rcpts != nil {
		env.Rcpts = ctx.Rcpts
	} else {
		env.Rcpts = append(hdr.Addresses("To"), hdr.Addresses("Cc")...)
	}
	if len(ctx.Facts) > 0 {
		in.Overrides = make(map[string]any, len(ctx.Facts))
		names := make([]string, 0, len(ctx.Facts))
		for name := range ctx.Facts {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			f, ok := reg.Fact(name)
			if !ok {
				all := make([]string, 0)
				for _, f := range reg.Facts() {
					all = append(all, f.Name)
				}
				return nil, env, fmt.Errorf("context.facts: unknown fact %q%s", name, engine.DidYouMean(name, all))
			}
			v, err := f.Type.Convert(ctx.Facts[name])
			if err != nil {
				return nil, env, fmt.Errorf("context.facts.%s: %v", name, err)
			}
			in.Overrides[name] = v
		}
	}
	if len(ctx.Lists) > 0 {
		in.Lists = mapLists(ctx.Lists)
	}
	if len(ctx.Counts) > 0 {
		in.Counters = mapCounts(ctx.Counts)
	}
	return in, env, nil
}

// parseTime reads a time as RFC 3339 (2002-09-05T10:00:00Z) or as a mail
// Date (Thu, 5 Sep 2002 10:00:00 +0000).
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := mail.ParseDate(s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2002-09-05T10:00:00Z) nor a mail date (Thu, 5 Sep 2002 10:00:00 +0000)", s)
}

// mapCounts answers count() for fixtures.
type mapCounts map[string]int

func (m mapCounts) Count(_ context.Context, counter, key string, _ time.Duration) (int, error) {
	return m[counter+":"+strings.ToLower(strings.TrimSpace(key))], nil
}

// mapLists is a ListSource for fixtures: the dynamic lists a case says the
// store holds.
type mapLists map[string][]string

func (m mapLists) InList(_ context.Context, name, value string) (bool, error) {
	value = strings.ToLower(strings.TrimSpace(value))
	for _, v := range m[name] {
		if strings.ToLower(strings.TrimSpace(v)) == value {
			return true, nil
		}
	}
	return false, nil
}
