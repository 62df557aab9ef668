package mailauth

import (
	"context"
	"testing"
)

// TestARCCanonicalization is RFC 6376 3.4.5's example, and the edges of
// 3.4.3 and 3.4.4.
func TestARCCanonicalization(t *testing.T) {
	fields, body := arcSplit([]byte("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"))
	if len(fields) != 2 || fields[1].name != "B" {
		t.Fatalf("fields %q", fields)
	}
	if got := arcRelaxedHeader(fields[0].raw) + arcRelaxedHeader(fields[1].raw); got != "a:X\r\nb:Y Z\r\n" {
		t.Errorf("relaxed headers %q", got)
	}
	if got := arcCanonHeader(fields[1].raw, "simple"); got != "B : Y\t\r\n\tZ  \r\n" {
		t.Errorf("simple header %q", got)
	}
	for _, c := range []struct{ body, canon, want string }{
		{" C \r\nD \t E\r\n\r\n\r\n", "relaxed", " C\r\nD E\r\n"},
		{" C \r\nD \t E\r\n\r\n\r\n", "simple", " C \r\nD \t E\r\n"},
		{"", "simple", "\r\n"},
		{"\r\n\r\n", "simple", "\r\n"},
		{"", "relaxed", ""},
		{"\r\n \r\n\t\r\n", "relaxed", ""},
		{"a", "simple", "a\r\n"},
		{"a  b \t", "relaxed", "a b\r\n"},
		{"a\r\n\r\nb\r\n \r\n", "relaxed", "a\r\n\r\nb\r\n"},
	} {
		if got := string(arcCanonBody([]byte(c.body), c.canon)); got != c.want {
			t.Errorf("%s body %q = %q, want %q", c.canon, c.body, got, c.want)
		}
	}
	if string(body) != " C \r\nD \t E\r\n\r\n\r\n" {
		t.Errorf("body %q", body)
	}
}

func TestARCWithoutB(t *testing.T) {
	for in, want := range map[string]string{
		"ARC-Seal: i=1; b=abc\r\n def; d=x.test\r\n": "ARC-Seal: i=1; b=; d=x.test\r\n",
		"ARC-Seal: i=1; bh=kept; b = abc\r\n":        "ARC-Seal: i=1; bh=kept; b =",
		"ARC-Seal: b=abc;i=1":                        "ARC-Seal: b=;i=1",
		"ARC-Seal: i=1; d=b=x":                       "ARC-Seal: i=1; d=b=x",
	} {
		if got := arcWithoutB(in); got != want {
			t.Errorf("arcWithoutB(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestARCTags(t *testing.T) {
	tags, err := arcTags(" i=1; a = rsa-sha256 ;\r\n b=AB\r\n CD;")
	if err != nil || tags["i"] != "1" || tags["a"] != "rsa-sha256" || tags["b"] != "AB\r\n CD" {
		t.Errorf("got %q, %v", tags, err)
	}
	for _, bad := range []string{"i=1; i=2", "i=1; junk", "=x"} {
		if _, err := arcTags(bad); err == nil {
			t.Errorf("arcTags(%q) gives no error", bad)
		}
	}
}

func TestARCParseKey(t *testing.T) {
	for txt, ok := range map[string]bool{
		"v=DKIM1; p=":                         false, // revoked
		"v=DKIM2; p=AAAA":                     false,
		"k=dsa; p=AAAA":                       false,
		"k=ed25519; p=AAAA":                   false, // not 32 bytes
		"k=ed25519; p=" + ed25519Zero:         true,
		"h=sha1; k=ed25519; p=" + ed25519Zero: false,
		"p=!!!":                               false,
	} {
		if _, err := arcParseKey(txt); (err == nil) != ok {
			t.Errorf("arcParseKey(%q): %v", txt, err)
		}
	}
}

const ed25519Zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

// FuzzVerifyARC: no message makes VerifyARC panic or give a result outside
// the four values, and a pass always names its seals.
func FuzzVerifyARC(f *testing.F) {
	w := newARCWorld(f)
	r := staticTXT{}
	for _, s := range []arcSigner{w.hop1, w.hop2, w.hop3} {
		r[s.selector+"._domainkey."+s.domain+"."] = []string{s.txtRecord(f)}
	}
	one := w.hop1.seal(f, []byte(arcMessage), None)
	f.Add(one)
	f.Add(w.hop3.seal(f, w.hop2.seal(f, one, Pass), Pass))
	f.Add([]byte("ARC-Seal: i=1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		res := VerifyARC(context.Background(), r, msg)
		switch res.Result {
		case Pass:
			if len(res.Domains) != res.Sets || res.Sets == 0 {
				t.Errorf("pass with %d sets and domains %q", res.Sets, res.Domains)
			}
		case Fail, None, TempError:
		default:
			t.Errorf("result %q", res.Result)
		}
	})
}
