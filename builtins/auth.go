package builtins

import (
	"context"
	"net/netip"
	"sync"

	"github.com/sluicemail/sluice/mailauth"
)

// authState holds the authentication checks' results for the message, each
// computed once, on first use, and forgotten with the phase it belongs to.
type authState struct {
	spf    *mailauth.SPFResult
	dkim   *mailauth.DKIMResult
	dmarc  *mailauth.DMARCResult
	arc    *mailauth.ARCResult
	fcrdns *bool
	// pending are the facts the current phase's rules refer to, until
	// the first check runs (Prefetch).
	pending []*Fact
}

func (a *authState) invalidate(p Phase) {
	if p <= Connect {
		a.fcrdns = nil
	}
	if p <= Mail {
		a.spf = nil
	}
	if p <= Data {
		a.dkim, a.dmarc, a.arc = nil, nil, nil
	}
	a.pending = nil
}

// dns is the resolver the checks use: the input's, else DNS in which no
// name exists.
func (m *Message) dns() mailauth.Resolver {
	if m.in.DNS != nil {
		return m.in.DNS
	}
	if m.noDNS == nil { // made once per Message, which is reused across messages
		m.noDNS = mailauth.NewStaticResolver(nil)
	}
	return m.noDNS
}

func (m *Message) lookupCtx() (context.Context, context.CancelFunc) {
	if _, ok := m.ctx.Deadline(); ok {
		return m.ctx, func() {}
	}
	return context.WithTimeout(m.ctx, lookupTimeout)
}

// SPF is the SPF result for the envelope sender (the HELO name for the null
// sender), checked on first use.
func (m *Message) SPF() mailauth.SPFResult {
	m.startChecks()
	if m.auth.spf == nil {
		ip, err := netip.ParseAddr(m.in.ClientIP)
		r := mailauth.SPFResult{Result: mailauth.None}
		if err == nil {
			ctx, cancel := m.lookupCtx()
			r = mailauth.CheckSPF(ctx, m.dns(), ip.Unmap(), m.in.Helo, m.in.MailFrom)
			cancel()
		}
		m.auth.spf = &r
	}
	return *m.auth.spf
}

// DKIM is the result over the message's DKIM signatures.
func (m *Message) DKIM() mailauth.DKIMResult {
	m.startChecks()
	if m.auth.dkim == nil {
		ctx, cancel := m.lookupCtx()
		r := mailauth.VerifyDKIM(ctx, m.dns(), m.in.Raw)
		cancel()
		m.auth.dkim = &r
	}
	return *m.auth.dkim
}

// DMARC is the DMARC result for the From domain, from SPF and DKIM (each
// computed first if no rule asked for it yet; Prefetch overlaps them).
func (m *Message) DMARC() mailauth.DMARCResult {
	m.startChecks()
	if m.auth.dmarc == nil {
		spf, dkim := m.SPF(), m.DKIM()
		ctx, cancel := m.lookupCtx()
		r := mailauth.CheckDMARC(ctx, m.dns(), mailauth.DMARCInput{
			FromDomain: Domain(m.Header().From()), SPF: spf, DKIMPassed: dkim.Domains,
			SPFTemp: spf.Result == mailauth.TempError, DKIMTemp: dkim.Result == mailauth.TempError,
		})
		cancel()
		m.auth.dmarc = &r
	}
	return *m.auth.dmarc
}

// ARC is the result of the message's ARC chain.
func (m *Message) ARC() mailauth.ARCResult {
	m.startChecks()
	if m.auth.arc == nil {
		ctx, cancel := m.lookupCtx()
		r := mailauth.VerifyARC(ctx, m.dns(), m.in.Raw)
		cancel()
		m.auth.arc = &r
	}
	return *m.auth.arc
}

// AuthResults are the checks already made for the message (none is made
// to answer): what its Authentication-Results field reports.
func (m *Message) AuthResults() (spf *mailauth.SPFResult, dkim *mailauth.DKIMResult, dmarc *mailauth.DMARCResult, arc *mailauth.ARCResult) {
	return m.auth.spf, m.auth.dkim, m.auth.dmarc, m.auth.arc
}

// fcrdnsOf: rdns resolves back to client_ip. A fixture's rdns given
// without dns counts as forward-confirmed (SPEC 6).
func (m *Message) fcrdnsOf() (bool, error) {
	if m.auth.fcrdns == nil {
		v, err := m.ValueOf("rdns")
		if err != nil {
			return false, err
		}
		name, _ := v.(string)
		ok := false
		ip, _ := netip.ParseAddr(m.in.ClientIP)
		switch {
		case name == "":
		case m.in.RDNSKnown && m.in.DNS == nil, ip.IsLoopback():
			ok = true
		default:
			ctx, cancel := m.lookupCtx()
			ok, _ = mailauth.FCrDNS(ctx, m.dns(), m.in.ClientIP, name)
			cancel()
		}
		m.auth.fcrdns = &ok
	}
	return *m.auth.fcrdns, nil
}

func authFacts() []Fact {
	return []Fact{
		{Name: "spf", Type: String, Phase: Mail, Doc: "SPF result for mail_from (the HELO name for the null sender): pass, fail, softfail, neutral, none, temperror, permerror",
			Compute: func(m *Message) (any, error) { return m.SPF().Result, nil }},
		{Name: "spf_authorizes_relay", Type: Bool, Phase: Mail, Doc: "the SPF record of mail_from_domain authorises the relay's own outgoing addresses (outbound_ips); true when none are configured",
			Compute: func(m *Message) (any, error) {
				d := Domain(m.in.MailFrom)
				if len(m.in.OutboundIPs) == 0 || d == "" {
					return true, nil
				}
				ctx, cancel := m.lookupCtx()
				defer cancel()
				ok, _ := mailauth.SPFAuthorizes(ctx, m.dns(), d, m.in.OutboundIPs)
				return ok, nil
			}},
		{Name: "outbound", Type: Bool, Phase: Mail, Doc: "relayed for an authenticated user or a relay_networks client (outbound); false for mail from outside to a local domain (inbound)",
			Compute: func(m *Message) (any, error) { return m.in.Outbound, nil }},
		{Name: "fcrdns", Type: Bool, Phase: Connect, Doc: "rdns resolves back to client_ip (forward-confirmed reverse DNS)",
			Compute: func(m *Message) (any, error) { return m.fcrdnsOf() }},
		{Name: "dkim", Type: String, Phase: Data, Doc: "DKIM result of the best signature: pass, temperror, fail, permerror, none (no signature)",
			Compute: func(m *Message) (any, error) { return m.DKIM().Result, nil }},
		{Name: "dkim_domains", Type: StringList, Phase: Data, Doc: "the d= domains of the DKIM signatures that verified",
			Compute: func(m *Message) (any, error) { return orEmpty(m.DKIM().Domains), nil }},
		{Name: "dkim_unsigned_content", Type: Bool, Phase: Data, Doc: "the message passes DKIM only by signatures with l= that leave content after the signed part (RFC 6376 8.2): text anyone may have appended",
			Compute: func(m *Message) (any, error) { return m.DKIM().UnsignedContent(), nil }},
		{Name: "dmarc", Type: String, Phase: Data, Doc: "DMARC result for the From domain, with SPF and DKIM alignment: pass, fail, none, temperror, permerror",
			Compute: func(m *Message) (any, error) { return m.DMARC().Result, nil }},
		{Name: "dmarc_policy", Type: String, Phase: Data, Doc: `the DMARC policy the From domain publishes (none, quarantine, reject; a subdomain's sp=), "" if none`,
			Compute: func(m *Message) (any, error) { return m.DMARC().Policy, nil }},
		{Name: "arc", Type: String, Phase: Data, Doc: "ARC chain validation: pass, fail, none, temperror",
			Compute: func(m *Message) (any, error) { return m.ARC().Result, nil }},
		{Name: "arc_domains", Type: StringList, Phase: Data, Doc: "the d= of the ARC seals of a chain that validates, newest first",
			Compute: func(m *Message) (any, error) { return orEmpty(m.ARC().Domains), nil }},
	}
}

func orEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func authFuncs() []Func {
	return []Func{
		{Name: "dnsbl", Signature: "dnsbl(zone, subject) []string", Phase: Connect,
			Doc:    `the A records zone answers for subject (an IP address, or a domain for URI/domain lists), empty when not listed; e.g. "127.0.0.2" in dnsbl("zen.example.net", client_ip)`,
			Params: []Type{String, String}, Result: StringList, Prefetchable: true,
			Call: func(m *Message, a []any) any {
				zone, _ := a[0].(string)
				subject, _ := a[1].(string)
				if zone == "" || subject == "" {
					return []string{}
				}
				ctx, cancel := m.lookupCtx()
				defer cancel()
				// A list that does not answer lists nobody (as Postfix
				// and Rspamd treat it): it must not tempfail mail.
				got, _ := mailauth.DNSBL(ctx, m.dns(), zone, subject)
				return orEmpty(got)
			}},
	}
}

// Prefetch names the facts, and the calls of Prefetchable functions, the
// rules of the phase about to run refer to. The first time a rule actually
// reads an authentication check (not before: "not outbound and dmarc ==
// ..." reads nothing for outbound mail), every check those facts need is
// run at once, so that their DNS lookups wait side by side instead of one
// after another; likewise the calls, at the first one a rule makes (Call).
func (m *Message) Prefetch(facts []*Fact, calls []CallSite) {
	m.auth.pending = facts
	m.calls.pending = calls
}

// startChecks runs the pending phase's checks together: SPF, DKIM, ARC and
// the DMARC record at once, then DMARC from their results.
func (m *Message) startChecks() {
	facts := m.auth.pending
	m.auth.pending = nil
	if len(facts) == 0 {
		return
	}
	need := func(names ...string) bool {
		for _, n := range names {
			if _, over := m.in.Overrides[n]; !over {
				return true
			}
		}
		return false
	}
	var spf, dkim, arc, dmarc bool
	for _, f := range facts {
		switch f.Name {
		case "spf":
			spf = m.auth.spf == nil && need("spf")
		case "dkim", "dkim_domains", "dkim_unsigned_content":
			dkim = m.auth.dkim == nil && need("dkim", "dkim_domains", "dkim_unsigned_content")
		case "arc", "arc_domains":
			arc = m.auth.arc == nil && need("arc", "arc_domains")
		case "dmarc", "dmarc_policy":
			dmarc = m.auth.dmarc == nil && need("dmarc", "dmarc_policy")
		}
	}
	if dmarc {
		spf, dkim = m.auth.spf == nil, m.auth.dkim == nil
	}
	n := 0
	for _, b := range []bool{spf, dkim, arc, dmarc} {
		if b {
			n++
		}
	}
	if n < 2 && !(dmarc && (spf || dkim)) {
		return // one check: nothing to overlap, it runs when read
	}
	ctx, cancel := m.lookupCtx()
	defer cancel()
	r := m.dns()
	var wg sync.WaitGroup
	var spfR mailauth.SPFResult
	var dkimR mailauth.DKIMResult
	var arcR mailauth.ARCResult
	run := func(on bool, f func()) {
		if on {
			wg.Add(1)
			go func() { defer wg.Done(); f() }()
		}
	}
	ip, ipErr := netip.ParseAddr(m.in.ClientIP)
	helo, from, raw := m.in.Helo, m.in.MailFrom, m.in.Raw
	run(spf, func() {
		spfR = mailauth.SPFResult{Result: mailauth.None}
		if ipErr == nil {
			spfR = mailauth.CheckSPF(ctx, r, ip.Unmap(), helo, from)
		}
	})
	run(dkim, func() { dkimR = mailauth.VerifyDKIM(ctx, r, raw) })
	run(arc, func() { arcR = mailauth.VerifyARC(ctx, r, raw) })
	if dmarc {
		if d := Domain(m.Header().From()); d != "" {
			// Warms a caching resolver for CheckDMARC below.
			run(true, func() { r.LookupTXT(ctx, "_dmarc."+d) })
		}
	}
	wg.Wait()
	if spf {
		m.auth.spf = &spfR
	}
	if dkim {
		m.auth.dkim = &dkimR
	}
	if arc {
		m.auth.arc = &arcR
	}
	if dmarc {
		m.DMARC()
	}
}
