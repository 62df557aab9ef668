package builtins

import (
	"testing"
)

func TestHeaderDate(t *testing.T) {
	for v, ok := range map[string]bool{
		"Tue, 3 Sep 2002 10:00:00 -0400":       true,
		"3 Sep 2002 10:00:00 +0100 (BST)":      true,
		"Tue, 3 Sep 2002 10:00:00 EDT":         true,
		"Tue, 3 Sept 2002 29:61:00 +9900":      false,
		"Tue, 3 Sep 2002 10:00:00 +1500":       false, // no zone east of +14:00
		"Tue, 3 Sep 2002 10:00:00 -0470":       false, // minutes 70
		"Tue, 03 Sep 2002 10:00:00":            false, // no zone
		"":                                     false,
		"Tue, 3 Sep 2002 10:00:00 +0000 (UTC)": true,
	} {
		if _, got := headerDate(v); got != ok {
			t.Errorf("headerDate(%q) ok = %v, want %v", v, got, ok)
		}
	}
}

func TestMessageIDShapes(t *testing.T) {
	for _, c := range []struct {
		id                        string
		wellFormed, outlook, ratw bool
	}{
		{"<001101c24a5c$a8b0c9e0$6401a8c0@annpc>", true, true, false},
		{"<1619ab01c25ab2$e52dd5a0$6b01a8c0@insuranceiq.com>", true, false, true},
		{"<al588m$ufg$1@main.gmane.org>", true, false, false}, // news software, not hex
		{"<3D72B9D1.20101@barrera.org>", true, false, false},
		{"<no-at-sign.example.net>", false, false, false},
		{"no-brackets@example.net", false, false, false},
		{"<a b@example.net>", false, false, false},
	} {
		if got := wellFormedMsgID(c.id); got != c.wellFormed {
			t.Errorf("wellFormedMsgID(%q) = %v", c.id, got)
		}
		if got := outlookMsgID(c.id); got != c.outlook {
			t.Errorf("outlookMsgID(%q) = %v", c.id, got)
		}
		if got := ratwareMsgID(c.id); got != c.ratw {
			t.Errorf("ratwareMsgID(%q) = %v", c.id, got)
		}
	}
}

func TestBadHops(t *testing.T) {
	hops := []string{
		"from a.example (a.example [192.0.2.1]) by mx.example; Tue, 3 Sep 2002 10:00:00 +0000",
		"from pc1 ([300.12.7.4]) by a.example; Tue, 3 Sep 2002 09:59:00 +0000",          // octet 300
		"from b.example ([IPv6:2001:db8::1]) by pc1; Thu, 5 Sep 2002 09:00:00 +0000",    // two days after the hop above
		"FROM barge BY webshield ; Wed Aug 28 10:45:49 2002 +0100",                      // ctime: unparsable, not forged
		"from lugh (root@localhost [127.0.0.1]) by x; Mon, 02 Sep 2002 01:07:29 -08:00", // colon zone: not forged
	}
	if n := badHops(hops); n != 2 {
		t.Errorf("badHops = %d, want 2", n)
	}
}

func TestSubjectFeatures(t *testing.T) {
	if !mixedScripts("Your Pаypal account") || mixedScripts("Ваш счёт and your bill") || mixedScripts("café") {
		t.Error("mixedScripts: want a Latin word with a Cyrillic а, and no whole words of one script each")
	}
	for s, n := range map[string]int{"Get $$$ now!!!": 6, "Hello": 0, "50%%% off???": 2, "Re: ok!": 1} {
		if got := punctuation(s); got != n {
			t.Errorf("punctuation(%q) = %d, want %d", s, got, n)
		}
	}
	if !randomToken("bNngf4C0mjSsqJIXFFxH") || randomToken("Mutt/1.4i") || randomToken("KMailVersion") {
		t.Error("randomToken")
	}
}

func TestContainsWord(t *testing.T) {
	for _, c := range []struct {
		s, p string
		ok   bool
	}{
		{"free cash now", "cash", true},
		{"cashier wanted", "cash", false},
		{"a $$$ deal", "$$$", true},
		{"recash", "cash", false},
		{"see: cash, cash!", "cash", true},
		{"debt-free", "debt", true},
	} {
		if got := containsWord(c.s, c.p); got != c.ok {
			t.Errorf("containsWord(%q, %q) = %v", c.s, c.p, got)
		}
	}
}

type valueLists map[string][]string

func (v valueLists) Lookup(name, value string) (bool, bool) { return false, false }
func (v valueLists) Values(name string) ([]string, bool)    { l, ok := v[name]; return l, ok }

func TestHeaderFactsOnMessage(t *testing.T) {
	r := NewRegistry()
	m := r.NewMessage()
	raw := "Received: from a ([192.0.2.1]) by mx; Tue, 3 Sep 2002 10:00:00 +0000\r\n" +
		"Subject: =?us-ascii?Q?Act_now?=\r\nDate: Tue, 3 Sep 2002 16:00:00 +0000\r\n" +
		"Message-ID: <001101c24a5c$a8b0c9e0$6401a8c0@pc>\r\nX-Mailer: The Bat!\r\n\r\nMake money, act now: cash.\r\n"
	m.Reset(nil, &Input{Raw: []byte(raw)}, valueLists{"phrases_money": {"make money", "cash", "loan"}})
	want := map[string]any{
		"date_missing": false, "date_invalid": false, "date_skew_hours": 6.0,
		"message_id_missing": false, "message_id_malformed": false, "message_id_ratware": false,
		"received_count": 1, "received_bad_hops": 0, "mailer": "The Bat!", "mailer_contradiction": true,
		"mailer_random": false, "subject_encoded_abuse": true, "subject_mixed_scripts": false, "subject_punctuation": 0,
	}
	for name, w := range want {
		if got, err := m.ValueOf(name); err != nil || got != w {
			t.Errorf("%s = %v (%v), want %v", name, got, err, w)
		}
	}
	fn, _ := r.Func("phrases")
	if n := fn.Call(m, []any{"money"}); n != 2 {
		t.Errorf(`phrases("money") = %v, want 2`, n)
	}
	if n := fn.Call(m, []any{"none"}); n != 0 {
		t.Errorf(`phrases("none") = %v, want 0`, n)
	}
	if m.Err() != nil {
		t.Fatal(m.Err())
	}
}
