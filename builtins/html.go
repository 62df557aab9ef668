package builtins

import (
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// html renders an HTML part to text as a reader would see it, collecting
// the links of its anchors and counting the anchors whose visible text
// names another registered domain than their href (phishing_links).
func (w *walker) html(src string) string {
	z := html.NewTokenizer(strings.NewReader(src))
	z.SetMaxBuf(1 << 20) // one token; the part itself is already bounded
	var out strings.Builder
	out.Grow(len(src) / 2)
	skip := 0 // depth inside script, style, head...
	var anchor *strings.Builder
	var href string
	space := true // last byte written was white space
	hs := htmlScan{st: &w.st}
	newline := func() {
		if out.Len() > 0 && !strings.HasSuffix(out.String()[max(0, out.Len()-1):], "\n") {
			out.WriteByte('\n')
		}
		space = true
	}
	endAnchor := func() {
		if anchor != nil {
			w.checkAnchor(href, anchor.String())
			anchor = nil
		}
	}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			endAnchor()
			return strings.TrimSpace(out.String())
		case html.CommentToken:
			hs.comment()
		case html.TextToken:
			if skip > 0 {
				continue
			}
			t := z.Text()
			hs.text(t)
			if anchor != nil && anchor.Len() < 2048 {
				anchor.Write(t)
			}
			for _, c := range string(t) {
				if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\u00a0' {
					if !space {
						out.WriteByte(' ')
						space = true
					}
					continue
				}
				out.WriteRune(c)
				space = false
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			a := atom.Lookup(name)
			if a != atom.A && a != atom.Area {
				hs.tag(z, name, a, tt, hasAttr) // reads the attributes, which only anchors need below
			}
			switch a {
			case atom.Script, atom.Style, atom.Head, atom.Template, atom.Title, atom.Noscript:
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
				continue
			case atom.A, atom.Area:
				if tt == html.EndTagToken {
					endAnchor()
					continue
				}
				endAnchor() // anchors do not nest
				var link string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					if string(k) == "href" {
						link = strings.TrimSpace(string(v))
					}
				}
				if u := webLink(link); u != "" {
					w.addLink(u)
					if a == atom.A && tt == html.StartTagToken {
						anchor, href = &strings.Builder{}, u
					}
				}
				continue
			case atom.Br, atom.P, atom.Div, atom.Tr, atom.Li, atom.H1, atom.H2, atom.H3,
				atom.H4, atom.H5, atom.H6, atom.Table, atom.Blockquote, atom.Hr, atom.Ul,
				atom.Ol, atom.Pre, atom.Section, atom.Article, atom.Header, atom.Footer,
				atom.Dd, atom.Dt, atom.Center:
				if skip == 0 {
					newline()
				}
			case atom.Td, atom.Th:
				if skip == 0 && !space {
					out.WriteByte(' ')
					space = true
				}
			case atom.Body:
				skip = 0 // a missing </head> must not hide the body
			}
		}
	}
}

// webLink returns href if it is a link a reader could follow to the web
// (http, https, ftp, or a scheme-less www. host), else "".
func webLink(href string) string {
	l := strings.ToLower(href)
	switch {
	case strings.HasPrefix(l, "http://"), strings.HasPrefix(l, "https://"), strings.HasPrefix(l, "ftp://"):
		if len(href) > 2048 {
			return href[:2048]
		}
		return href
	case strings.HasPrefix(l, "www."):
		return href
	}
	return ""
}
