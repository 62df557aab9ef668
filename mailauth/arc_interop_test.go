package mailauth

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// arcPython seals and verifies with python3-dkim (Debian's python3-dkim,
// which `make deps` installs), an ARC implementation that is not ours. Its
// DNS is the map given in argv: nothing leaves the process.
const arcPython = `
import sys, json, dkim
mode, keys = sys.argv[1], json.loads(sys.argv[2])
def dnsfunc(name, timeout=5):
    v = keys.get(name.decode() if isinstance(name, bytes) else name)
    return v.encode() if v is not None else None
msg = sys.stdin.buffer.read()
if mode == "sign":
    sel, dom, keyfile, srv = sys.argv[3:7]
    hdrs = dkim.arc_sign(msg, sel.encode(), dom.encode(), open(keyfile, "rb").read(), srv.encode(),
                         include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    if not hdrs:
        sys.exit("arc_sign made no set")
    sys.stdout.buffer.write(b"".join(hdrs) + msg)
else:
    cv, _, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc)
    print((cv or b"none").decode(), reason)
`

// pythonDKIM finds a python3 that imports dkim: Debian's, also when
// another python3 comes first on PATH.
func pythonDKIM(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import dkim, authres").Run() == nil {
			return path
		}
	}
	t.Fatal("python3-dkim is not installed: `make deps` installs it (apt-get install python3-dkim)")
	return ""
}

type arcPy struct {
	t    testing.TB
	py   string
	keys string // JSON: DNS name -> TXT
}

func (p arcPy) run(stdin []byte, args ...string) []byte {
	p.t.Helper()
	cmd := exec.Command(p.py, append([]string{"-c", arcPython}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("python3-dkim %s: %v\n%s", args[0], err, stderr.String())
	}
	return out
}

// seal adds an ARC set made by python3-dkim. Like a real forwarder, it
// first writes its Authentication-Results, with arc= the result it found
// (python's arc_sign takes cv= from there).
func (p arcPy) seal(msg []byte, s arcSigner, cv string) []byte {
	p.t.Helper()
	ar := "Authentication-Results: " + s.domain + "; spf=pass smtp.mailfrom=origin.test"
	if cv != None {
		ar += "; arc=" + cv
	}
	in := slices.Concat([]byte(ar+"\r\n"), msg)
	out := p.run(in, "sign", p.keys, s.selector, s.domain, s.keyFile, s.domain)
	// The forwarder's own Authentication-Results goes before relaying on.
	return bytes.Replace(out, []byte(ar+"\r\n"), nil, 1)
}

func (p arcPy) verify(msg []byte) string {
	p.t.Helper()
	return strings.TrimSpace(string(p.run(msg, "verify", p.keys)))
}

// TestARCInteropPython: chains sealed by python3-dkim validate here, broken
// ones do not; and python3-dkim's verifier agrees with ours on the chains
// the other tests' sealer makes.
func TestARCInteropPython(t *testing.T) {
	w := newARCWorld(t)
	keys := map[string]string{}
	for _, s := range []arcSigner{w.hop1, w.hop2, w.hop3} {
		keys[s.selector+"._domainkey."+s.domain+"."] = s.txtRecord(t)
	}
	kj, _ := json.Marshal(keys)
	py := arcPy{t, pythonDKIM(t), string(kj)}
	ctx := context.Background()
	// python3-dkim's arc_sign signs with RSA only: the hops are hop1 and
	// hop2 (hop3's key is Ed25519).
	one := py.seal([]byte(arcMessage), w.hop1, None)
	two := py.seal(one, w.hop2, Pass)
	three := py.seal(two, w.hop1, Pass)

	cases := []struct {
		name    string
		msg     []byte
		result  string
		domains []string
	}{
		{"one hop", one, Pass, []string{"hop1.test"}},
		{"two hops", two, Pass, []string{"hop2.test", "hop1.test"}},
		{"three hops", three, Pass, []string{"hop1.test", "hop2.test", "hop1.test"}},
		{"python over our seal", py.seal(w.hop3.seal(t, []byte(arcMessage), None), w.hop2, Pass), Pass, []string{"hop2.test", "hop3.test"}},
		{"our seal over python's", w.hop3.seal(t, two, Pass), Pass, []string{"hop3.test", "hop2.test", "hop1.test"}},
		{"body tampered", replace(t, three, "attached", "attacked"), Fail, nil},
		{"signed header tampered", replace(t, three, "Subject: the", "Subject: teh"), Fail, nil},
		{"newest seal tampered", tamperSealB(t, three, 3), Fail, nil},
		{"oldest seal tampered", tamperSealB(t, three, 1), Fail, nil},
		{"oldest seal broken under python's newer seals", py.seal(py.seal(tamperSealB(t, one, 1), w.hop2, Pass), w.hop1, Pass), Fail, nil},
		{"python's cv=fail", py.seal(two, w.hop1, Fail), Fail, nil},
		{"set 2 removed", dropFields(t, three, "i=2;", 3), Fail, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := VerifyARC(ctx, w.r, c.msg)
			if got.Result != c.result || !slices.Equal(got.Domains, c.domains) {
				t.Errorf("got %s %q (%s), want %s %q", got.Result, got.Domains, got.Detail, c.result, c.domains)
			}
		})
	}

	// The other direction: python3-dkim validates what the test sealer
	// makes (RSA; its verifier knows no Ed25519 keys for ARC), so
	// TestVerifyARC's chains are real ones.
	r1 := w.hop1.seal(t, []byte(arcMessage), None)
	r3 := w.hop1.seal(t, w.hop2.seal(t, r1, Pass), Pass)
	for name, c := range map[string]struct {
		msg  []byte
		want string
	}{
		"our one hop":         {r1, "pass"},
		"our three hops":      {r3, "pass"},
		"our three, tampered": {replace(t, r3, "attached", "attacked"), "fail"},
	} {
		got := py.verify(c.msg)
		t.Logf("python3-dkim on %s: %s", name, got)
		if !strings.HasPrefix(got, c.want+" ") {
			t.Errorf("python3-dkim on %s: %s, want %s", name, got, c.want)
		}
	}
}
