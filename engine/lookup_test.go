package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/mailauth"
)

// rendezvous lets n callers through together: each waits until all n have
// arrived, or until timeout, after which nobody waits any more and timedOut
// reports it. It proves calls were in flight at once without timing them.
type rendezvous struct {
	mu       sync.Mutex
	n        int
	seen     map[string]bool
	all      chan struct{}
	open     bool
	timeout  time.Duration
	timedOut atomic.Bool
}

func newRendezvous(n int, timeout time.Duration) *rendezvous {
	return &rendezvous{n: n, seen: map[string]bool{}, all: make(chan struct{}), timeout: timeout}
}

// wait records key as arrived and waits for the others.
func (r *rendezvous) wait(key string) {
	r.mu.Lock()
	r.seen[key] = true
	if len(r.seen) == r.n {
		r.release()
	}
	r.mu.Unlock()
	select {
	case <-r.all:
	case <-time.After(r.timeout):
		r.timedOut.Store(true)
		r.mu.Lock()
		r.release() // the rest go through without waiting
		r.mu.Unlock()
	}
}

func (r *rendezvous) release() {
	if !r.open {
		r.open = true
		close(r.all)
	}
}

// dnsblZone answers 192.0.2.10 on both test lists.
func dnsblZone(t testing.TB) dns.HandlerFunc {
	return dnstest.Answer(map[string][]dns.RR{
		"10.2.0.192.zen.example.net.": {dnstest.RR(t, `10.2.0.192.zen.example.net. 60 IN A 127.0.0.2`)},
		"10.2.0.192.bl.example.org.":  {dnstest.RR(t, `10.2.0.192.bl.example.org. 60 IN A 127.0.0.4`)},
	}, nil)
}

const dnsblRules = `rules:
  - zen: '"127.0.0.2" in dnsbl("zen.example.net", client_ip) => +3'
  - bl: 'len(dnsbl("bl.example.org", client_ip)) > 0 => +1'
`

// TestDNSBLLookupsOverlap: the server answers a DNSBL query only once both
// queries have arrived, so the rules pass only if the engine has the two
// lookups of the connect phase in flight at once.
func TestDNSBLLookupsOverlap(t *testing.T) {
	answer := dnsblZone(t)
	rv := newRendezvous(2, time.Second)
	var queries atomic.Int32
	addr := dnstest.ServeFunc(t, func(w dns.ResponseWriter, m *dns.Msg) {
		queries.Add(1)
		rv.wait(m.Question[0].Name)
		answer(w, m)
	})
	res, err := mailauth.NewDNSResolver([]string{addr}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rs := mustLoad(t, "r.yaml", dnsblRules)
	tx := rs.Begin(t.Context(), &builtins.Input{ClientIP: "192.0.2.10", DNS: res})
	defer tx.Close()
	if r := tx.Connect(); r != nil {
		t.Fatalf("connect refused: %+v", r)
	}
	if rv.timedOut.Load() {
		t.Error("a DNSBL query waited alone: the connect phase's lookups ran one after the other")
	}
	if got := hitNames(tx.Verdict()); got != "zen,bl" {
		t.Errorf("hits %s, want zen,bl", got)
	}
	if n := queries.Load(); n != 2 {
		t.Errorf("%d queries, want 2", n)
	}
}

// TestDNSBLNotLookedUpWhenShortCircuited: rules that stop at `not outbound`
// send no query for outbound mail, although the phase's dnsbl calls are
// known in advance; inbound mail looks both lists up.
func TestDNSBLNotLookedUpWhenShortCircuited(t *testing.T) {
	answer := dnsblZone(t)
	var queries atomic.Int32
	addr := dnstest.ServeFunc(t, func(w dns.ResponseWriter, m *dns.Msg) {
		queries.Add(1)
		answer(w, m)
	})
	rs := mustLoad(t, "r.yaml", `rules:
  - zen: 'not outbound and "127.0.0.2" in dnsbl("zen.example.net", client_ip) => +3'
  - bl: 'not outbound and len(dnsbl("bl.example.org", client_ip)) > 0 => +1'
  - big: 'size > 10 => +0.5'
`)
	env := Envelope{Helo: "mx.example.com", MailFrom: "a@example.com", Rcpts: []string{"b@example.org"}, Raw: []byte("Subject: x\r\n\r\nhello there\r\n")}
	for _, tt := range []struct {
		outbound bool
		queries  int32
		hits     string
	}{
		{true, 0, "big"},
		{false, 2, "zen,bl,big"},
	} {
		queries.Store(0)
		res, err := mailauth.NewDNSResolver([]string{addr}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		v := rs.Replay(t.Context(), &builtins.Input{ClientIP: "192.0.2.10", DNS: res, Outbound: tt.outbound}, env)
		if got := hitNames(v); got != tt.hits {
			t.Errorf("outbound=%v: hits %s, want %s", tt.outbound, got, tt.hits)
		}
		if n := queries.Load(); n != tt.queries {
			t.Errorf("outbound=%v: %d DNS queries, want %d", tt.outbound, n, tt.queries)
		}
	}
}

// lookupRegistry is the core registry with lookup(zone, subject), a
// prefetchable function returning a string (so that, unlike dnsbl, it can
// be a guard's subject), answering from listed and counting its calls.
func lookupRegistry(calls *atomic.Int32, rv *rendezvous) *builtins.Registry {
	reg := builtins.NewRegistry()
	listed := map[string]string{"a.example 192.0.2.1": "listed", "b.example 192.0.2.1": "x", "b.example 192.0.2.2": "listed", "c.example h3": "yes"}
	err := reg.RegisterFunc(builtins.Func{Name: "lookup", Signature: "lookup(zone, subject) string", Phase: builtins.Connect,
		Params: []builtins.Type{builtins.String, builtins.String}, Result: builtins.String, Prefetchable: true,
		Call: func(m *builtins.Message, a []any) any {
			calls.Add(1)
			key := a[0].(string) + " " + a[1].(string)
			if rv != nil {
				rv.wait(key)
			}
			return listed[key]
		}})
	if err != nil {
		panic(err)
	}
	return reg
}

// TestLookupsOverlapAcrossGuardAndVM: the first call is a guard's, made
// natively; the second only the VM makes. Both are in flight at once, and
// the VM's call reuses the result.
func TestLookupsOverlapAcrossGuardAndVM(t *testing.T) {
	var calls atomic.Int32
	rv := newRendezvous(2, time.Second)
	rs, err := Load([]File{{Name: "r.yaml", Src: []byte(`rules:
  - a: 'lookup("a.example", client_ip) == "listed" => +1'
  - b: 'len(lookup("b.example", client_ip)) > 0 and lookup("a.example", client_ip) != "" => +1'
`)}}, lookupRegistry(&calls, rv), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g := rs.byName["a"].compiled.guard; g == nil || g.call == nil {
		t.Fatalf("rule a has no call guard: the test would not exercise the native path")
	}
	tx := rs.Begin(t.Context(), &builtins.Input{ClientIP: "192.0.2.1"})
	defer tx.Close()
	tx.Connect()
	if rv.timedOut.Load() {
		t.Error("a lookup ran alone: the guard's call did not start the phase's others")
	}
	if got := hitNames(tx.Verdict()); got != "a,b" {
		t.Errorf("hits %s, want a,b", got)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2 (one per distinct call)", n)
	}
}

// TestLookupsDoNotChangeVerdicts evaluates rules calling prefetchable
// functions (dnsbl against a static DNS, lookup) with and without guards:
// the verdicts must be the same, and so the number of calls made.
func TestLookupsDoNotChangeVerdicts(t *testing.T) {
	src := `rules:
  - l1: 'lookup("a.example", client_ip) == "listed" => +1'
  - l2: 'lookup("b.example", client_ip) in ["x", "listed"] => +2'
  - l3: 'not tls and lookup("a.example", client_ip) == "listed" => +0.5'
  - l4: 'len(lookup("c.example", helo)) > 0 => +1'
  - l5: 'helo == "h2" or lookup("b.example", client_ip) == "listed" => +0.25'
  - l6: 'tls and lookup(mail_from_domain, client_ip) == "" and size > 40 => +0.5'
  - d1: '"127.0.0.2" in dnsbl("zen.example.net", client_ip) => +3'
  - d2: 'not tls and len(dnsbl("bl.example.org", client_ip)) > 0 => block 550 5.7.1 "listed"'
  - d3: 'len(dnsbl("dbl.example.net", mail_from_domain)) > 0 => hold'
  - d4: 'any(rcpts, len(dnsbl("dbl.example.net", domain(#))) > 0) => +1'
`
	var ncalls atomic.Int32
	load := func() *RuleSet {
		rs, err := Load([]File{{Name: "r.yaml", Src: []byte(src)}}, lookupRegistry(&ncalls, nil), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	guarded, plain := load(), load()
	for _, r := range plain.rules {
		r.compiled.guard = nil
	}
	plain.index()
	dnsRecords := mailauth.NewStaticResolver(map[string][]string{
		"1.2.0.192.zen.example.net A":  {"127.0.0.2"},
		"2.2.0.192.zen.example.net A":  {"127.0.0.3"},
		"2.2.0.192.bl.example.org A":   {"127.0.0.4"},
		"3.2.0.192.bl.example.org A":   {"SERVFAIL"},
		"m1.example.dbl.example.net A": {"127.0.1.2"},
		"r2.example.dbl.example.net A": {"127.0.1.2"},
		"m3.example.dbl.example.net A": {"TIMEOUT"},
	})
	r := rand.New(rand.NewPCG(3, 5))
	fired := map[string]bool{}
	for i := range 200 {
		in := builtins.Input{ClientIP: fmt.Sprintf("192.0.2.%d", r.IntN(4)), TLS: r.IntN(2) == 0, DNS: dnsRecords}
		env := Envelope{Helo: fmt.Sprintf("h%d", r.IntN(5)), MailFrom: fmt.Sprintf("x@m%d.example", r.IntN(5)),
			Rcpts: []string{fmt.Sprintf("y@r%d.example", r.IntN(4))}, Raw: []byte("Subject: s\r\n\r\n" + strings.Repeat("x", r.IntN(80)))}
		inA, inB := in, in
		ncalls.Store(0)
		va := guarded.Replay(context.Background(), &inA, env)
		na := ncalls.Load()
		ncalls.Store(0)
		vb := plain.Replay(context.Background(), &inB, env)
		nb := ncalls.Load()
		va.ID, vb.ID = "", ""
		if !reflect.DeepEqual(va, vb) {
			t.Fatalf("message %d: guarded verdict differs:\n%+v\nplain:\n%+v", i, va, vb)
		}
		if na != nb {
			t.Fatalf("message %d: %d lookup calls with guards, %d without", i, na, nb)
		}
		for _, h := range va.Hits {
			fired[h.Rule] = true
		}
	}
	for _, x := range []string{"l1", "l2", "l3", "l4", "l5", "l6", "d1", "d2", "d3", "d4"} {
		if !fired[x] {
			t.Errorf("rule %s never fired: the messages do not exercise it", x)
		}
	}
}

// TestLookupPanicIsTheRulesError: a prefetchable function that panics on
// the goroutine the batch gives it neither takes the process down nor
// spoils the other lookups; its rule reports the panic as without batching.
func TestLookupPanicIsTheRulesError(t *testing.T) {
	var calls atomic.Int32
	reg := lookupRegistry(&calls, nil)
	err := reg.RegisterFunc(builtins.Func{Name: "boom", Signature: "boom(zone) string", Params: []builtins.Type{builtins.String},
		Result: builtins.String, Prefetchable: true, Call: func(*builtins.Message, []any) any { panic("boom") }})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Load([]File{{Name: "r.yaml", Src: []byte(`rules:
  - a: 'lookup("a.example", client_ip) == "listed" => +1'
  - b: 'boom("x") == "y" => +1'
  - c: 'lookup("b.example", client_ip) == "x" => +1'
`)}}, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := rs.Replay(t.Context(), &builtins.Input{ClientIP: "192.0.2.1"}, Envelope{})
	if got := hitNames(v); got != "a,c" {
		t.Errorf("hits %s, want a,c", got)
	}
	if len(v.RuleErrors) != 1 || v.RuleErrors[0].Rule != "b" || !strings.Contains(v.RuleErrors[0].Err, "boom") {
		t.Errorf("rule errors %+v, want b's panic", v.RuleErrors)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d lookup calls, want 2", n)
	}
}
