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
