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
}

// dns is the resolver the checks use: the input's, else DNS in which no
// name exists.
func (m *Message) dns() mailauth.Resolver {
	if m.in.DNS != nil {
		return m.in.DNS
	}
	return mailauth.NewStaticResolver(nil)
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
	if m.auth.dkim == nil {
		ctx, cancel := m.lookupCtx()
		r := mailauth.VerifyDKIM(ctx, m.dns(), m.in.Raw)
		cancel()
		m.auth.dkim = &r
	}
	return *m.auth.dkim
}

// DMARC is the DMARC result for the From domain. The DMARC record is
// looked up while DKIM verifies (and SPF is checked, if no rule asked for
// it yet): the three wait on DNS side by side, not one after the other.
func (m *Message) DMARC() mailauth.DMARCResult {
	if m.auth.dmarc == nil {
		from := Domain(m.Header().From())
		ctx, cancel := m.lookupCtx()
		defer cancel()
		var wg sync.WaitGroup
		if from != "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Warms the resolver's cache for CheckDMARC below.
				m.dns().LookupTXT(ctx, "_dmarc."+from)
			}()
		}
		if m.auth.spf == nil {
			// SPF is the message's own phase's business, but nothing asked
			// for it: check it now, beside DKIM.
			wg.Add(1)
			ip, err := netip.ParseAddr(m.in.ClientIP)
			go func() {
				defer wg.Done()
				r := mailauth.SPFResult{Result: mailauth.None}
				if err == nil {
					r = mailauth.CheckSPF(ctx, m.dns(), ip.Unmap(), m.in.Helo, m.in.MailFrom)
				}
				m.auth.spf = &r
			}()
		}
		dkim := m.DKIM()
		wg.Wait()
		spf := *m.auth.spf
		r := mailauth.CheckDMARC(ctx, m.dns(), mailauth.DMARCInput{
			FromDomain: from, SPF: spf, DKIMPassed: dkim.Domains,
			SPFTemp: spf.Result == mailauth.TempError, DKIMTemp: dkim.Result == mailauth.TempError,
		})
		m.auth.dmarc = &r
	}
	return *m.auth.dmarc
}

// ARC is the result of the message's ARC chain.
func (m *Message) ARC() mailauth.ARCResult {
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
			Params: []Type{String, String}, Result: StringList,
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
