package builtins

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// indexLinkStartBytes is the byte-by-byte definition indexLinkStart must
// agree with: the first i that starts a word and a link prefix.
func indexLinkStartBytes(s string) int {
	for i := 0; i < len(s); i++ {
		if !wordStart(s, i) {
			continue
		}
		r := s[i:]
		if hasPrefixFold(r, "http://") || hasPrefixFold(r, "https://") || hasPrefixFold(r, "ftp://") || hasPrefixFold(r, "www.") {
			return i
		}
	}
	return -1
}

func TestIndexLinkStart(t *testing.T) {
	cases := []string{
		"", "http://a", "see https://x.test/", "xhttp://a www.b.test", "(www.a.test)", "[ftp://f]",
		"WWW.A.TEST", "wwww.a", "a.www.b", "HTTPS://a", "://", "https:// http://", "www.http://x",
		"ahttps://b www.c", "w.ww.www.", "http:/ /x ftp://y",
	}
	pieces := []string{"http", "https", "ftp", "://", "www", "WWW", ".", " ", "(", "[", "a", "w", "h", "s", ":", "/", "\n", "x"}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		var b strings.Builder
		for n := r.IntN(12); n > 0; n-- {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		if got, want := indexLinkStart(c), indexLinkStartBytes(c); got != want {
			t.Fatalf("indexLinkStart(%q) = %d, want %d", c, got, want)
		}
	}
}

func FuzzIndexLinkStart(f *testing.F) {
	f.Add("see https://x.test/ and www.y.test")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := indexLinkStart(s), indexLinkStartBytes(s); got != want {
			t.Fatalf("indexLinkStart(%q) = %d, want %d", s, got, want)
		}
	})
}

// visibleCharsBytes is the byte-by-byte definition visibleChars must
// agree with.
func visibleCharsBytes(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && (c < 0x80 || c >= 0xc0) {
			n++
		}
	}
	return n
}

func TestVisibleChars(t *testing.T) {
	var all strings.Builder
	for c := range 256 {
		all.WriteByte(byte(c))
	}
	cases := []string{"", "a", " ", "héllo wörld", "\t\r\n", all.String(), strings.Repeat("日本 ", 9)}
	r := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		for off := range min(len(c), 8) { // every alignment of the 8-byte words
			if got, want := visibleChars(c[off:]), visibleCharsBytes(c[off:]); got != want {
				t.Fatalf("visibleChars(%q) = %d, want %d", c[off:], got, want)
			}
		}
	}
}

func FuzzVisibleChars(f *testing.F) {
	f.Add("héllo wörld\x80\xff\x20\x21")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := visibleChars(s), visibleCharsBytes(s); got != want {
			t.Fatalf("visibleChars(%q) = %d, want %d", s, got, want)
		}
	})
}
