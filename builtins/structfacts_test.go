package builtins

import (
	"context"
	"fmt"
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

func TestAttachmentAndPartRecords(t *testing.T) {
	raw := `From: a@example.com
Subject: records
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: multipart/alternative; boundary="c"

--c
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: quoted-printable

caf=E9
--c
Content-Type: text/html; charset=utf-8

<p>caf&eacute;</p>
--c--
--b
Content-Type: application/zip; name="old.zip"
Content-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.zip; size=9000000
Content-Transfer-Encoding: base64

UEsDBAoAAAAAAA==
--b
Content-Type: application/pdf
Content-Disposition: inline; filename="scan.exe"

%PDF-1.4
--b
Content-Type: message/rfc822

Subject: inner
Content-Type: text/plain; charset=koi8-r

hi
--b--
`
	got := structValues(t, raw, "attachments", "parts", "attachment_count", "attachment_max_size", "attachment_type_mismatch")
	wantAtt := []Attachment{
		{Type: "application/zip", Name: "été.zip", Size: 10, DeclaredSize: 9000000, Disposition: "attachment", Archive: true},
		{Type: "application/pdf", Name: "scan.exe", Size: 8, DeclaredSize: 8, Disposition: "inline", ExtMismatch: true, Executable: true},
	}
	if !reflect.DeepEqual(got["attachments"], wantAtt) {
		t.Errorf("attachments:\n got  %+v\n want %+v", got["attachments"], wantAtt)
	}
	// Decoded sizes: "café" is 5 bytes in UTF-8, the line end before a
	// boundary is the boundary's; the multiparts sum their parts, an
	// attached message is its bytes (header and body).
	wantParts := []Part{
		{Type: "multipart/mixed", Size: 23 + 10 + 8 + 62, Depth: 0},
		{Type: "multipart/alternative", Size: 5 + 18, Depth: 1},
		{Type: "text/plain", Size: 5, Charset: "iso-8859-1", Depth: 2},
		{Type: "text/html", Size: 18, Charset: "utf-8", Depth: 2},
		{Type: "application/zip", Name: "été.zip", Size: 10, Disposition: "attachment", Depth: 1},
		{Type: "application/pdf", Name: "scan.exe", Size: 8, Disposition: "inline", Depth: 1},
		{Type: "message/rfc822", Size: 62, Depth: 1},
		{Type: "text/plain", Size: 2, Charset: "koi8-r", Depth: 2},
	}
	if !reflect.DeepEqual(got["parts"], wantParts) {
		t.Errorf("parts:\n got  %+v\n want %+v", got["parts"], wantParts)
	}
	if got, want := fmt.Sprint(wantAtt), `[{type: application/zip, name: "été.zip", size: 10, declared_size: 9000000, disposition: attachment, archive} {type: application/pdf, name: "scan.exe", size: 8, disposition: inline, ext_mismatch, executable}]`; got != want {
		t.Errorf("attachments as evidence:\n got  %s\n want %s", got, want)
	}
	if got, want := fmt.Sprint(wantParts[6:]), `[{type: message/rfc822, size: 62, depth: 1} {type: text/plain, size: 2, charset: koi8-r, depth: 2}]`; got != want {
		t.Errorf("parts as evidence:\n got  %s\n want %s", got, want)
	}
	if got["attachment_count"] != 2 || got["attachment_max_size"] != 10 || got["attachment_type_mismatch"] != true {
		t.Errorf("flat facts disagree with the records: %v", got)
	}
}

// The flat attachment facts follow the records, also when a fixture gives
// the records.
func TestFlatAttachmentFactsFollowOverride(t *testing.T) {
	reg := NewRegistry()
	f, _ := reg.Fact("attachments")
	v, err := f.Type.Convert([]any{
		map[string]any{"type": "application/zip", "name": "a.zip", "size": 6000000, "archive": true},
		map[string]any{"type": "image/png", "size": uint64(10)},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := reg.NewMessage()
	m.Reset(context.Background(), &Input{Raw: []byte("Subject: x\r\n\r\nno attachment\r\n"), Overrides: map[string]any{"attachments": v}}, nil)
	for name, want := range map[string]any{"attachment_count": 2, "attachment_max_size": 6000000, "archive_attachment": true,
		"attachment_types": []string{"application/zip", "image/png"}, "executable_attachment": false} {
		if got, _ := m.ValueOf(name); !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, bad := range []any{"a.zip", []any{"a.zip"}, []any{map[string]any{"sise": 1}}, []any{map[string]any{"size": "big"}}} {
		if _, err := f.Type.Convert(bad); err == nil {
			t.Errorf("Convert(%v): no error", bad)
		}
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
