package builtins

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// structValues computes the named facts for raw, as rules would see them.
func structValues(t *testing.T, raw string, names ...string) map[string]any {
	t.Helper()
	reg := NewRegistry()
	m := reg.NewMessage()
	m.Reset(context.Background(), &Input{Raw: []byte(strings.ReplaceAll(raw, "\n", "\r\n"))}, nil)
	out := map[string]any{}
	for _, n := range names {
		v, err := m.ValueOf(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		out[n] = v
	}
	return out
}

func TestStructFactsRegistered(t *testing.T) {
	r := NewRegistry()
	for _, f := range structFacts() {
		g, ok := r.Fact(f.Name)
		if !ok || g.Phase != Data || g.Doc == "" {
			t.Errorf("fact %s: registered %v, phase %s, doc %q", f.Name, ok, g.Phase, g.Doc)
		}
	}
}

func TestAttachmentFacts(t *testing.T) {
	raw := `From: a@example.com
Subject: invoice
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain

See attached.
--b
Content-Type: application/x-msdownload; name="invoice.pdf"
Content-Disposition: attachment; filename="invoice.pdf"
Content-Transfer-Encoding: base64

TVqQAAMAAAAEAAAA//8AALgAAAAA
--b
Content-Type: application/zip
Content-Disposition: attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9.zip?="
Content-Transfer-Encoding: base64

UEsDBA==
--b
Content-Type: image/png; name="logo.png"
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--b--
`
	got := structValues(t, raw, "attachment_count", "attachment_types", "attachment_names", "attachment_max_size",
		"executable_attachment", "archive_attachment", "attachment_type_mismatch", "html_only", "text")
	want := map[string]any{
		"attachment_count":         3,
		"attachment_types":         []string{"application/x-msdownload", "application/zip", "image/png"},
		"attachment_names":         []string{"invoice.pdf", "résumé.zip", "logo.png"},
		"attachment_max_size":      21,
		"executable_attachment":    true,
		"archive_attachment":       true,
		"attachment_type_mismatch": true,
		"html_only":                false,
		"text":                     "See attached.",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}

	plain := structValues(t, "From: a@example.com\nSubject: hi\n\nJust text.\n",
		"attachment_count", "attachment_names", "executable_attachment", "attachment_type_mismatch")
	if plain["attachment_count"] != 0 || len(plain["attachment_names"].([]string)) != 0 ||
		plain["executable_attachment"] != false || plain["attachment_type_mismatch"] != false {
		t.Errorf("plain message: %v", plain)
	}
}

func TestHTMLStructureFacts(t *testing.T) {
	html := func(body string) string {
		return "From: a@example.com\nSubject: x\nMIME-Version: 1.0\nContent-Type: text/html\n\n" + body + "\n"
	}
	names := []string{"html_only", "html_images", "html_text_chars", "html_invisible_text", "html_invisible_chars",
		"html_comment_split_words", "html_forms", "html_scripts"}
	tests := []struct {
		name string
		raw  string
		want map[string]any
	}{
		{"image with no text", html(`<html><body><a href="http://x.example/"><img src="http://x.example/a.gif"></a></body></html>`),
			map[string]any{"html_only": true, "html_images": 1, "html_text_chars": 0}},
		{"display none", html(`<p>Hello</p><div style="DISPLAY: none">random words to fool filters</div><p>bye</p>`),
			map[string]any{"html_invisible_text": true, "html_invisible_chars": 24, "html_text_chars": 8}},
		{"tiny font, nested", html(`<span style="font-size:1px">aaaa <span>bbbb</span> cccc</span> seen`),
			map[string]any{"html_invisible_chars": 12, "html_text_chars": 4}},
		{"a readable small font is not hidden", html(`<span style="font-size:0.8em">fine print here</span>`),
			map[string]any{"html_invisible_text": false, "html_text_chars": 13}},
		{"white on white", html(`<body bgcolor="#FFFFFF"><font color="#fff">hidden text here</font> shown</body>`),
			map[string]any{"html_invisible_text": true, "html_invisible_chars": 14}},
		{"white on dark is visible", html(`<table><tr><td bgcolor="#003366"><font color="white">Readable heading</font></td></tr></table>`),
			map[string]any{"html_invisible_text": false, "html_text_chars": 15}},
		{"comment splits a word", html(`Buy V<!-- xyz -->iagra now`),
			map[string]any{"html_comment_split_words": true}},
		{"comment between words", html(`Buy <!-- xyz --> now`),
			map[string]any{"html_comment_split_words": false}},
		{"form and scripts", html(`<form action="http://x.example/"><input name="cc"></form><script>x()</script><body onload="y()">`),
			map[string]any{"html_forms": 1, "html_scripts": 2}},
	}
	for _, tt := range tests {
		got := structValues(t, tt.raw, names...)
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", tt.name, k, got[k], v)
			}
		}
	}
}

func TestHTMLOnlyAndRatio(t *testing.T) {
	alt := `From: a@example.com
Subject: x
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/plain

Hello there
--b
Content-Type: text/html

<p>Hello there</p>
--b--
`
	got := structValues(t, alt, "html_only", "text_html_ratio")
	if got["html_only"] != false || got["text_html_ratio"].(float64) < 0.5 {
		t.Errorf("alternative: %v", got)
	}
	none := structValues(t, "From: a@example.com\n\nplain\n", "text_html_ratio", "html_only")
	if none["text_html_ratio"] != 1.0 || none["html_only"] != false {
		t.Errorf("no HTML: %v", none)
	}
	heavy := structValues(t, "From: a@example.com\nContent-Type: text/html\n\n<table><tr><td width=\"100\" height=\"20\" bgcolor=\"#ff0000\"><img src=\"http://x.example/1.gif\" width=\"100\"></td></tr></table>x\n",
		"text_html_ratio", "html_only")
	if r := heavy["text_html_ratio"].(float64); r >= 0.1 || heavy["html_only"] != true {
		t.Errorf("markup-heavy: %v", heavy)
	}
}

func TestLinkStructureFacts(t *testing.T) {
	raw := `From: a@example.com
Subject: x

Go to http://192.0.2.7/offer and http://[2001:db8::1]/x and http://www.example.com/a
and http://www.example.com/b and http://track.example.net/r?url=http%3A%2F%2Fshop.example.org
`
	got := structValues(t, raw, "link_count", "link_hosts_count", "link_ip_hosts", "link_redirects")
	want := map[string]any{"link_count": 5, "link_hosts_count": 4, "link_ip_hosts": 2, "link_redirects": 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestLinkUnregistrableHosts(t *testing.T) {
	raw := `From: a@example.com
Subject: x

Sign in at http://login/ or http://intranet.local/sso or http://files.corp:8080/x,
http://co.uk/, http://portal.invalidtld/ and, RFC 2606's, http://shop.example/ (six that
no one can register);
not http://www.example.com/, http://shop.example.co.uk/, http://me.blogspot.com/,
http://192.0.2.7/, http://[2001:db8::1]/, http://bücher.example.com/ or http://Login/again.
`
	got := structValues(t, raw, "link_hosts_count", "link_unregistrable_hosts", "link_ip_hosts")
	want := map[string]any{"link_hosts_count": 12, "link_unregistrable_hosts": 6, "link_ip_hosts": 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for host, want := range map[string]bool{"login": true, "intranet.local": true, "co.uk": true, "example.com": false,
		"a.b.example.org": false, "me.github.io": false, "192.0.2.7": false, "[2001:db8::1]": false, "x.onion": false} {
		if got := unregistrable(host); got != want {
			t.Errorf("unregistrable(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestNormColorAndTinyFont(t *testing.T) {
	for in, want := range map[string]string{"#FFF": "#ffffff", "#fff": "#ffffff", "white": "#ffffff", "ffffff": "#ffffff", "#fff url(x.gif)": "#ffffff", "red": "", "#12345": ""} {
		if got := normColor(in); got != want {
			t.Errorf("normColor(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{"1px": true, "0": true, "2pt": true, "10px": false, "0.1em": true, "0.8em": false, "small": false, "": false} {
		if got := tinyFont(in); got != want {
			t.Errorf("tinyFont(%q) = %v, want %v", in, got, want)
		}
	}
}
