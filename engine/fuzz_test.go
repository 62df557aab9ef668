package engine

import (
	"context"
	"testing"

	"github.com/sluicemail/sluice/builtins"
)

// FuzzLoad feeds arbitrary bytes to the loader as a rules file. It must
// never panic, every problem must point into the file, and a set that loads
// must evaluate a message without panicking.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"rules:\n  - subject_caps and rdns_none => +2.5\n",
		"thresholds: {reject: 13, hold: 8, tag: 5}\nlists:\n  l: [a, 10.0.0.0/8]\nrules:\n  - in_list(\"l\", client_ip) => accept\n",
		"rules:\n  - hourly-limit: 'hourly_sent > 300 => block 421 4.7.1 \"Rate limit: 300 messages per hour\"'\n",
		"rules:\n  - name: a\n    when: |\n      header(\"X\") contains \"y\"\n    then: hold \"review\"\n    mode: shadow\n",
		"rules:\n  - rcpt == from => block 550\n  - any(links, {# contains \"x\"}) => +1\n",
		"rules:\n  - let d = domain(mail_from); d == from_domain and size > 10 => -1\n",
		"rules:\n  - x: y: z\n",
		"rules:\n\t- bad\n",
		"- a\n- b\n",
		"rules: [\"a => b\", {c: d}, [1]]\n",
		"rules:\n  - \"\\u00e9 => +1\"\n",
	} {
		f.Add([]byte(s))
	}
	reg := builtins.NewRegistry()
	f.Fuzz(func(t *testing.T, src []byte) {
		rs, err := Load([]File{{Name: "f.yaml", Src: src}}, reg, Options{})
		if err != nil {
			le, ok := err.(*LoadError)
			if !ok || len(le.Problems) == 0 {
				t.Fatalf("error %T %v is not a LoadError with problems", err, err)
			}
			lines := len(newSource("f.yaml", src).lines)
			for _, p := range le.Problems {
				if p.File != "f.yaml" || p.Line < 0 || p.Line > lines+1 || p.Col < 0 || p.Msg == "" {
					t.Fatalf("problem outside the file: %+v (file has %d lines)", p, lines)
				}
			}
			return
		}
		if len(src) > 4096 {
			return // keep iterations fast; loading is what is fuzzed
		}
		in := &builtins.Input{ClientIP: "192.0.2.1"}
		v := rs.Replay(context.Background(), in, Envelope{Helo: "h", MailFrom: "a@b.example", Rcpts: []string{"c@d.example"}, Raw: []byte(plainMsg)})
		if v.Action == "" || v.ID == "" {
			t.Fatalf("empty verdict %+v", v)
		}
	})
}
