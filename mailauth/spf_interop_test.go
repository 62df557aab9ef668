package mailauth

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/internal/testdeps"
)

// pyspfScript runs Debian's python3-spf (pyspf) over dnspython pointed at
// the test's DNS server on 127.0.0.1, one check2 per case read from stdin,
// and prints the results as a JSON list.
const pyspfScript = `
import json, sys
import dns.resolver
import spf
res = dns.resolver.Resolver(configure=False)
res.nameservers = ["127.0.0.1"]
res.port = int(sys.argv[1])
res.lifetime = 5
dns.resolver.default_resolver = res
assert spf.DNSLookup is spf.DNSLookup_dnspython
out = []
for c in json.load(sys.stdin):
    out.append(spf.check2(i=c["ip"], s=c["from"], h=c["helo"])[0])
print(json.dumps(out))
`

// pyspfPython returns a python3 that has pyspf and dnspython, or "".
func pyspfPython() string {
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(p, "-c", "import spf, dns.resolver").Run() == nil {
			return p
		}
	}
	return ""
}

// TestSPFAgreesWithPyspf: every case of TestCheckSPFAgainstLocalDNS gives
// the same result in pyspf (python3-spf), an implementation that is not
// ours, reading the same records from the same DNS server.
func TestSPFAgreesWithPyspf(t *testing.T) {
	py := pyspfPython()
	if py == "" {
		testdeps.Missing(t, "python3-spf (pyspf with python3-dnspython)")
	}
	_, addr := dnstest.ServeAddr(t, spfZone(t), spfServfail)
	_, port, _ := net.SplitHostPort(addr)
	type in struct {
		IP   string `json:"ip"`
		From string `json:"from"`
		HELO string `json:"helo"`
	}
	var cases []in
	for _, c := range spfCases {
		cases = append(cases, in{c.ip, c.from, c.helo})
	}
	stdin, _ := json.Marshal(cases)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", pyspfScript, port)
	cmd.Stdin = strings.NewReader(string(stdin))
	outb, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("pyspf: %v\n%s", err, stderr)
	}
	var theirs []string
	if err := json.Unmarshal(outb, &theirs); err != nil || len(theirs) != len(spfCases) {
		t.Fatalf("pyspf output %q: %v", outb, err)
	}
	t.Logf("pyspf: %q", theirs)
	r := newTestResolver(t, addr, 2*time.Second)
	for i, c := range spfCases {
		ours := CheckSPF(context.Background(), r, netip.MustParseAddr(c.ip), c.helo, c.from)
		if ours.Result != theirs[i] {
			t.Errorf("%s: sluice %s (%s), pyspf %s", c.name, ours.Result, ours.Detail, theirs[i])
		}
	}
}
