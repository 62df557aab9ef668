package mailauth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/internal/testdeps"
)

// dkimpyPython returns a python3 that has python3-dkim (Debian's package,
// which `make test` installs, and PyNaCl for Ed25519), or skips the test.
func dkimpyPython(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(p, "-c", "import dkim, nacl").Run(); err == nil {
			return p
		}
	}
	testdeps.Missing(t, "python3-dkim (with python3-nacl)")
	return ""
}

// dkimpy runs testdata/dkim/dkimpy.py, python3-dkim's signer and verifier,
// with req.
func dkimpy(t *testing.T, python string, req map[string]any) string {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, filepath.Join("testdata", "dkim", "dkimpy.py"))
	cmd.Stdin = bytes.NewReader(body)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy.py %s: %v\n%s", req["op"], err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// dkimpySign has python3-dkim sign msg and returns the signed message.
func dkimpySign(t *testing.T, python, msg, domain, selector, key, alg, canon string, length bool) string {
	t.Helper()
	out := dkimpy(t, python, map[string]any{"op": "sign", "msg": base64.StdEncoding.EncodeToString([]byte(msg)),
		"domain": domain, "selector": selector, "key": key, "alg": alg, "canon": canon, "length": length})
	sig, err := base64.StdEncoding.DecodeString(out)
	if err != nil || !bytes.HasPrefix(sig, []byte("DKIM-Signature:")) {
		t.Fatalf("dkimpy signature %q: %v", out, err)
	}
	return string(sig) + msg
}

// dkimpyVerify has python3-dkim verify the first signature of each of
// msgs with the key records txt, and returns "pass" or "fail" for each.
func dkimpyVerify(t *testing.T, python string, txt map[string]string, msgs ...string) []string {
	t.Helper()
	enc := make([]string, len(msgs))
	for i, m := range msgs {
		enc[i] = base64.StdEncoding.EncodeToString([]byte(m))
	}
	return strings.Fields(dkimpy(t, python, map[string]any{"op": "verify", "msgs": enc, "txt": txt}))
}

// dkimpyKeys are the test keys as python3-dkim reads them: PKCS#1 PEM for
// RSA, the base64 seed for Ed25519.
func dkimpyKeys(t *testing.T) (rsaPEM, edSeed string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "dkim", "rsa2048.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ed := dkimTestKey(t, "ed25519.pem").(ed25519.PrivateKey)
	return string(b), base64.StdEncoding.EncodeToString(ed.Seed())
}

// TestDkimInteropPythonSigns: messages python3-dkim signs (RSA and
// Ed25519, relaxed and simple, with and without l=) verify as pass with
// VerifyDKIM against a DNS server on 127.0.0.1; tampered ones fail.
func TestDkimInteropPythonSigns(t *testing.T) {
	python := dkimpyPython(t)
	rsaPEM, edSeed := dkimpyKeys(t)
	res := dnstest.Serve(t, dkimZone(
		dkimKeyRR(t, "example.com", "py-rsa", dkimTestKey(t, "rsa2048.pem")),
		dkimKeyRR(t, "example.com", "py-ed", dkimTestKey(t, "ed25519.pem")),
	), nil)
	for _, c := range []struct {
		name, selector, key, alg, canon string
		length                          bool
	}{
		{"rsa relaxed", "py-rsa", rsaPEM, "rsa-sha256", "relaxed/relaxed", false},
		{"rsa simple", "py-rsa", rsaPEM, "rsa-sha256", "simple/simple", false},
		{"ed25519 relaxed", "py-ed", edSeed, "ed25519-sha256", "relaxed/relaxed", false},
		{"ed25519 simple", "py-ed", edSeed, "ed25519-sha256", "simple/simple", false},
		{"rsa l=", "py-rsa", rsaPEM, "rsa-sha256", "relaxed/relaxed", true},
		{"ed25519 l=", "py-ed", edSeed, "ed25519-sha256", "simple/simple", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			signed := dkimpySign(t, python, dkimTestMsg, "example.com", c.selector, c.key, c.alg, c.canon, c.length)
			if got := dkimVerify(t, res, signed); got.Result != Pass || len(got.Domains) != 1 || got.Domains[0] != "example.com" {
				t.Errorf("signed by python3-dkim: %+v", got)
			}
			for what, tampered := range map[string]string{
				"header": strings.Replace(signed, "Subject: quarterly figures", "Subject: quarterly figures (final)", 1),
				"body":   strings.Replace(signed, "the figures", "the new figures", 1),
			} {
				if got := dkimVerify(t, res, tampered); got.Result != Fail {
					t.Errorf("%s tampered: %+v", what, got)
				}
			}
			if c.length {
				got := dkimVerify(t, res, signed+"\r\nP.S. appended by a list\r\n")
				if got.Result != Pass || !got.Signatures[0].Unsigned {
					t.Errorf("l= with content appended: %+v", got)
				}
			}
		})
	}
}

// TestDkimInteropPythonVerifies: messages sluice signs verify with
// python3-dkim (key records handed to it, no DNS); tampered ones do not.
func TestDkimInteropPythonVerifies(t *testing.T) {
	python := dkimpyPython(t)
	rsaKey := dkimTestKey(t, "rsa2048.pem")
	edKey := dkimTestKey(t, "ed25519.pem")
	txt := map[string]string{
		"rsa1._domainkey.example.com": mustRecord(t, rsaKey),
		"ed1._domainkey.example.com":  mustRecord(t, edKey),
	}
	msg := "Received: from a by b\r\n" + dkimTestMsg
	msg = strings.Replace(msg, "\r\n\r\n", "\r\nList-Unsubscribe: <https://example.com/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n", 1)
	for name, signed := range map[string]string{
		"rsa":     dkimSign(t, msg, "example.com", "rsa1", rsaKey),
		"ed25519": dkimSign(t, msg, "example.com", "ed1", edKey),
	} {
		t.Run(name, func(t *testing.T) {
			msgs := []string{
				signed,
				strings.Replace(signed, "Subject: quarterly figures", "Subject: quarterly figures (final)", 1),
				strings.Replace(signed, "the figures", "the new figures", 1),
				strings.Replace(signed, "https://example.com/u/1", "https://evil.example/u/1", 1),
				"From: evil@example.org\r\n" + signed,
			}
			got := dkimpyVerify(t, python, txt, msgs...)
			if want := []string{"pass", "fail", "fail", "fail", "fail"}; !slices.Equal(got, want) {
				t.Errorf("python3-dkim says %q on (signed, header, body, List-Unsubscribe tampered, From added), want %q:\n%s", got, want, signed)
			}
		})
	}
}
