package builtins

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

func TestRegistryCoreFacts(t *testing.T) {
	r := NewRegistry()
	// SPEC 3 names and types must never change.
	spec := map[string]string{
		"client_ip": "string", "helo": "string", "rdns": "string", "rdns_none": "bool", "tls": "bool",
		"authenticated": "bool", "smtp_user": "string", "mail_from": "string", "mail_from_domain": "string",
		"rcpt": "string", "rcpts": "[]string", "rcpt_count": "int", "from": "string", "from_domain": "string",
		"subject": "string", "subject_caps": "bool", "size": "int", "text": "string", "links": "[]string",
		"phishing_links": "int", "spf": "string", "dkim": "string", "dmarc": "string", "arc": "string",
		"hourly_sent": "int", "daily_sent": "int", "domain_allowed": "bool",
	}
	for name, typ := range spec {
		f, ok := r.Fact(name)
		if !ok {
			t.Errorf("fact %s is missing", name)
			continue
		}
		if f.Type.String() != typ || f.Doc == "" {
			t.Errorf("fact %s: type %s doc %q, want %s", name, f.Type, f.Doc, typ)
		}
	}
	for _, fn := range []string{"header", "has_header", "in_list", "local_part", "domain"} {
		if _, ok := r.Func(fn); !ok {
			t.Errorf("function %s is missing", fn)
		}
	}
	if err := r.Register(Fact{Name: "subject", Compute: constant("")}); err == nil {
		t.Error("registered a duplicate fact")
	}
	if err := r.Register(Fact{Name: "header", Compute: constant("")}); err == nil {
		t.Error("registered a fact named like a function")
	}
	if err := r.SetCompute("spf", constant("pass")); err != nil {
		t.Error(err)
	}
	if !strings.Contains(r.Doc(), "phishing_links") || !strings.Contains(r.Doc(), "in_list(name, value) bool") {
		t.Error("Doc misses entries")
	}
}

// sluice facts shows the record facts with their type and every field of
// their records, each with a type and a meaning.
func TestDocRecords(t *testing.T) {
	doc := NewRegistry().Doc()
	for _, want := range []string{"\nattachments        []attachment data ", "\nparts              []part       data ",
		"\nattachment   .declared_size int      ", "\npart         .depth         int      "} {
		if !strings.Contains(doc, want) {
			t.Errorf("Doc misses %q", want)
		}
	}
	for _, typ := range []Type{AttachmentList, PartList} {
		for _, f := range typ.Fields() {
			if f.Name == "" || f.Doc == "" {
				t.Errorf("%s field %+v lacks an expr name or a doc", typ, f)
			}
		}
	}
}

func TestTypeConvert(t *testing.T) {
	tests := []struct {
		typ  Type
		in   any
		want any
		bad  bool
	}{
		{Bool, true, true, false},
		{Bool, "yes", nil, true},
		{Int, 12, 12, false},
		{Int, 12.0, 12, false},
		{Int, 12.5, nil, true},
		{Float, 3, 3.0, false},
		{String, "pass", "pass", false},
		{String, nil, "", false},
		{String, 3, nil, true},
		{StringList, []any{"a", "b"}, []string{"a", "b"}, false},
		{StringList, "a", []string{"a"}, false},
		{StringList, []any{"a", 1}, nil, true},
	}
	for _, tt := range tests {
		got, err := tt.typ.Convert(tt.in)
		if (err != nil) != tt.bad {
			t.Errorf("%s.Convert(%v): err %v", tt.typ, tt.in, err)
			continue
		}
		if !tt.bad && !equalAny(got, tt.want) {
			t.Errorf("%s.Convert(%v) = %#v, want %#v", tt.typ, tt.in, got, tt.want)
		}
	}
}

func equalAny(a, b any) bool {
	if la, ok := a.([]string); ok {
		lb, ok := b.([]string)
		return ok && strings.Join(la, "\x00") == strings.Join(lb, "\x00")
	}
	return a == b
}

func TestSubjectCaps(t *testing.T) {
	tests := map[string]bool{
		"FREE MONEY NOW":          true,  // 12 letters
		"HELLO WORLD":             true,  // exactly 10
		"HELLO WORL":              false, // 9
		"HELLO WORLd":             false, // a lower-case letter
		"SALE 50% OFF NOW!!!":     true,
		"ÉTÉ À PRIX CASSÉS":       true,
		"URGENT: Reply":           false,
		"123 456 789 000 111 222": false, // no letters
		"日本語のメールです日本語のメール": false, // no case: not shouting
		"": false,
	}
	for s, want := range tests {
		if got := SubjectCaps(s); got != want {
			t.Errorf("SubjectCaps(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestAddressParts(t *testing.T) {
	tests := []struct{ in, local, domain string }{
		{"Alice@Example.COM", "alice", "example.com"},
		{"<root@localhost>", "root", "localhost"},
		{"user@sub.example.org.", "user", "sub.example.org"},
		{"\"a@b\"@example.net", "a@b", "example.net"},
		{"\"John Smith\"@example.net", "john smith", "example.net"},
		{"\"a\\\"b\"@example.net", "a\"b", "example.net"},
		{"postmaster", "postmaster", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		if l, d := LocalPart(tt.in), Domain(tt.in); l != tt.local || d != tt.domain {
			t.Errorf("%q: local %q domain %q, want %q %q", tt.in, l, d, tt.local, tt.domain)
		}
	}
}

func TestHostname(t *testing.T) {
	reg := NewRegistry()
	f, ok := reg.Func("hostname")
	if !ok {
		t.Fatal("hostname not registered")
	}
	tests := []struct{ in, want string }{
		{"https://Bit.LY/3xPayFix", "bit.ly"},
		{"http://user:pw@example.com:8080/x?y#z", "example.com"},
		{"www.example.org/path", "www.example.org"},
		{"mailto:bob@example.com", ""},
		{"not a url", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := f.Call(nil, []any{tt.in}); got != tt.want {
			t.Errorf("hostname(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLinkHosts(t *testing.T) {
	got := linkHosts([]string{"https://Bit.ly/a", "https://example.com/1", "www.example.org/x", "https://bit.ly/b", "mailto:x@y.z", "https://EXAMPLE.com/2"})
	if want := []string{"bit.ly", "example.com", "www.example.org"}; !slices.Equal(got, want) {
		t.Errorf("linkHosts = %q, want %q", got, want)
	}
	// A link that only starts like the previous one is not on its host.
	got = linkHosts([]string{"https://example.com/a", "https://example.com.evil.net/b", "https://example.com?q", "https://user@example.com:8080/x", "https://example.com"})
	if want := []string{"example.com", "example.com.evil.net"}; !slices.Equal(got, want) {
		t.Errorf("linkHosts = %q, want %q", got, want)
	}
	// Past 16 distinct hosts the dedupe switches to a map; order is kept.
	var links, want []string
	for i := range 40 {
		links = append(links, fmt.Sprintf("https://h%d.example.com/a", i%20), fmt.Sprintf("https://h%d.example.com/b", i%20))
		if i < 20 {
			want = append(want, fmt.Sprintf("h%d.example.com", i))
		}
	}
	if got := linkHosts(links); !slices.Equal(got, want) {
		t.Errorf("linkHosts of 80 links on 20 hosts = %q", got)
	}
}

func TestRDNS(t *testing.T) {
	res := dnstest.Serve(t,
		map[string][]dns.RR{"10.113.0.203.in-addr.arpa.": {dnstest.RR(t, "10.113.0.203.in-addr.arpa. 60 IN PTR Mail.Example.COM.")}},
		map[string]bool{"11.113.0.203.in-addr.arpa.": true})
	reg := NewRegistry()
	rdns, _ := reg.Fact("rdns")
	none, _ := reg.Fact("rdns_none")
	tests := []struct {
		in      Input
		name    string
		isNone  bool
		failing bool
	}{
		{Input{ClientIP: "203.0.113.10", Resolver: res}, "mail.example.com", false, false},
		{Input{ClientIP: "203.0.113.12", Resolver: res}, "", true, false},
		{Input{ClientIP: "203.0.113.11", Resolver: res}, "", false, true},
		{Input{ClientIP: "203.0.113.10", RDNS: "given.example.", RDNSKnown: true, Resolver: res}, "given.example", false, false},
		{Input{ClientIP: "203.0.113.10", RDNSKnown: true}, "", true, false},
		{Input{ClientIP: "127.0.0.1"}, "localhost", false, false},
		{Input{ClientIP: "203.0.113.10"}, "", false, false}, // no resolver: neutral
	}
	for i, tt := range tests {
		m := reg.NewMessage()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		in := tt.in
		m.Reset(ctx, &in, nil)
		name := m.Value(rdns)
		isNone := m.Value(none)
		err := m.Err()
		cancel()
		if (err != nil) != tt.failing {
			t.Errorf("case %d: error %v, want failing=%v", i, err, tt.failing)
			continue
		}
		if tt.failing {
			continue
		}
		if name != tt.name || isNone != tt.isNone {
			t.Errorf("case %d: rdns %q rdns_none %v, want %q %v", i, name, isNone, tt.name, tt.isNone)
		}
	}
}

func TestFactsComputedOnceAndInvalidated(t *testing.T) {
	reg := NewRegistry()
	n := 0
	if err := reg.Register(Fact{Name: "probe", Type: Int, Phase: Mail, Doc: "test",
		Compute: func(m *Message) (any, error) { n++; return len(m.Input().MailFrom), nil }}); err != nil {
		t.Fatal(err)
	}
	f, _ := reg.Fact("probe")
	m := reg.NewMessage()
	in := &Input{MailFrom: "a@b.c"}
	m.Reset(context.Background(), in, nil)
	for range 3 {
		if v := m.Value(f); v != 5 {
			t.Fatalf("probe = %v", v)
		}
	}
	if n != 1 {
		t.Errorf("computed %d times, want 1", n)
	}
	in.MailFrom = "longer@b.c"
	m.Invalidate(Helo)
	if v := m.Value(f); v != 10 || n != 2 {
		t.Errorf("after invalidate: %v, computed %d times", v, n)
	}
	m.Invalidate(Data) // a later phase keeps mail-phase facts
	m.Value(f)
	if n != 2 {
		t.Errorf("Invalidate(Data) dropped a mail-phase fact")
	}
	in.Overrides = map[string]any{"probe": 42}
	m.Reset(context.Background(), in, nil)
	if v := m.Value(f); v != 42 || n != 2 {
		t.Errorf("override: %v, computed %d times", v, n)
	}
}

func TestFingerprint(t *testing.T) {
	a := Fingerprint("Cron <root@server1> backup", "Backup at 12:01:07 wrote 412 MB\n\nok")
	b := Fingerprint("CRON <root@server1>   backup", "Backup at 13:55:42 wrote 413 MB ok")
	c := Fingerprint("Cron <root@server1> backup", "Backup FAILED at 12:01")
	if a != b || a == c || len(a) != 24 {
		t.Errorf("fingerprints %s %s %s", a, b, c)
	}
}

func TestPrefetchableTakesScalars(t *testing.T) {
	r := NewRegistry()
	err := r.RegisterFunc(Func{Name: "any_listed", Params: []Type{String, StringList}, Result: Bool, Prefetchable: true,
		Call: func(*Message, []any) any { return false }})
	if err == nil {
		t.Error("a prefetchable function taking a list registered: its calls could not be compared")
	}
}

// BenchmarkFingerprint: a 10 KB text of ASCII lines, as most mail is, and
// a mostly non-ASCII one.
func BenchmarkFingerprint(b *testing.B) {
	line := "the quick brown fox jumps over the lazy dog 0123 "
	for _, c := range []struct{ name, text string }{
		{"ascii", strings.Repeat(line+"\r\n", 10240/len(line))},
		{"utf8", strings.Repeat("Съешь же ещё этих мягких французских булок 42\r\n", 10240/80)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Fingerprint("Your report for 12 March", c.text)
			}
		})
	}
}
