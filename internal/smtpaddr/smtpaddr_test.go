package smtpaddr

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCanonical(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      error
	}{
		{"", "", nil},
		{"alice@example.com", "alice@example.com", nil},
		{"info@example.com", "info@example.com", nil},
		{"john smith@local.test", `"john smith"@local.test`, nil},
		{"user@foreign.test@local.test", `"user@foreign.test"@local.test`, nil},
		{`a"b\c@local.test`, `"a\"b\\c"@local.test`, nil},
		{".lead@local.test", `".lead"@local.test`, nil},
		{"a..b@local.test", `"a..b"@local.test`, nil},
		{"user%foreign.test@local.test", "user%foreign.test@local.test", nil},
		{"jörg@bücher.example", "jörg@bücher.example", nil},
		{"postmaster@[192.0.2.1]", "postmaster@[192.0.2.1]", nil},
		{"victim@foreign.test\x00@local.test", "", ErrControl},
		{"a\rb@local.test", "", ErrControl},
		{"a@local.test\n", "", ErrControl},
		{"a\x7f@local.test", "", ErrControl},
		{"caf\xe9@local.test", "", ErrUTF8},
		{"nobody", "", ErrSyntax},
		{"@local.test", "", ErrSyntax},
		{"a@", "", ErrSyntax},
		{"a@-bad.test", "", ErrSyntax},
		{"a@bad..test", "", ErrSyntax},
		{"a@bad/test", "", ErrSyntax},
		{"a@[1.2.3.4", "", ErrSyntax},
		{"a@" + strings.Repeat("x", 64) + ".test", "", ErrSyntax},
		{strings.Repeat("x", 400) + "@local.test", "", ErrSyntax},
	} {
		got, err := Canonical(c.in)
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestRoutedAndLocal(t *testing.T) {
	for in, routed := range map[string]bool{
		"user%foreign.test@local.test":   true,
		"foreign.test!user@local.test":   true,
		`"user@foreign.test"@local.test`: true,
		"plain@local.test":               false,
		`"john smith"@local.test`:        false,
	} {
		if Routed(in) != routed {
			t.Errorf("Routed(%q) = %v", in, !routed)
		}
	}
	if got := Local(`"a\"b\\c"@local.test`); got != `a"b\c` {
		t.Errorf("Local = %q", got)
	}
}

// FuzzCanonical: whatever Canonical accepts comes out free of control
// bytes, valid UTF-8, stable under a second pass, and naming the same
// mailbox (the local part unquotes to what came in).
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"a@b.test", "john smith@local.test", `a"b@c.test`, "x\x00@y.test", "\"@\"@a.b", "a@[::1]", "é@ü.test"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Canonical(in)
		if err != nil {
			if out != "" {
				t.Fatalf("error with output %q", out)
			}
			return
		}
		if in == "" {
			return
		}
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", in)
		}
		for i := 0; i < len(out); i++ {
			if out[i] < 0x20 || out[i] == 0x7f {
				t.Fatalf("control byte in %q", out)
			}
		}
		at := strings.LastIndexByte(in, '@')
		if Local(out) != in[:at] || !strings.HasSuffix(out, in[at:]) {
			t.Fatalf("%q -> %q: not the same mailbox (local %q)", in, out, Local(out))
		}
		again, err := Canonical(Local(out) + in[at:])
		if err != nil || again != out {
			t.Fatalf("not stable: %q -> %q -> %q, %v", in, out, again, err)
		}
	})
}
