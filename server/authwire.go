package server

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/mailauth"
)

// finishAuth checks the dns, outbound_ips and dkim_sign keys and loads the
// signing keys, so that a reload with a new selector's key takes effect
// without a restart and a bad key never replaces a good set.
func (c *Config) finishAuth() error {
	setDefault(&c.DNS.Timeout, Duration(2*time.Second))
	c.outboundIPs = c.outboundIPs[:0]
	for _, s := range c.OutboundIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("outbound_ips: %q is not an IP address", s)
		}
		c.outboundIPs = append(c.outboundIPs, ip.Unmap())
	}
	var keys []mailauth.SignKey
	seen := map[string]bool{}
	for i, k := range c.DKIMSign {
		d := strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		if d == "" || k.Selector == "" || k.Key == "" {
			return fmt.Errorf("dkim_sign[%d]: domain, selector and key are all needed", i)
		}
		if seen[d] {
			return fmt.Errorf("dkim_sign: %s has two keys; one signs a domain (rotate by changing its selector and key)", d)
		}
		seen[d] = true
		key, err := mailauth.LoadKey(c.resolve(k.Key))
		if err != nil {
			return fmt.Errorf("dkim_sign %s: %w", d, err)
		}
		keys = append(keys, mailauth.SignKey{Domain: d, Selector: k.Selector, Key: key})
	}
	c.signer = nil
	if len(keys) > 0 {
		c.signer = mailauth.NewSigner(keys)
	}
	return nil
}

// newDNS is the resolver of the checks: the caller's (tests), else one on
// the config's servers.
func newDNS(cfg *Config, opts Options) (mailauth.Resolver, error) {
	if opts.DNS != nil {
		return opts.DNS, nil
	}
	return mailauth.NewDNSResolver(cfg.DNS.Servers, cfg.DNS.Timeout.D())
}

// authResults are the Authentication-Results entries (RFC 8601 2.7) for
// the checks made for the message: none is made only to fill the field.
func authResults(in *builtins.Input, m *builtins.Message) []string {
	var out []string
	if in.Authenticated {
		out = append(out, "auth=pass smtp.auth="+sanitize(in.SMTPUser))
	}
	if m == nil {
		return append(out, "none")
	}
	spf, dkim, dmarc, arc := m.AuthResults()
	if spf != nil && spf.Result != mailauth.None {
		prop := "smtp.mailfrom"
		if in.MailFrom == "" {
			prop = "smtp.helo"
		}
		out = append(out, "spf="+spf.Result+" "+prop+"="+sanitize(spf.Domain))
	}
	if dkim != nil {
		for _, sig := range dkim.Signatures {
			out = append(out, "dkim="+sig.Result+" header.d="+sanitize(sig.Domain)+" header.s="+sanitize(sig.Selector))
		}
	}
	if dmarc != nil && dmarc.Result != mailauth.None {
		r := "dmarc=" + dmarc.Result + " header.from=" + sanitize(dmarc.Domain)
		if dmarc.Policy != "" {
			r += " policy.dmarc=" + dmarc.Policy
		}
		out = append(out, r)
	}
	if arc != nil && arc.Result != mailauth.None {
		out = append(out, "arc="+arc.Result)
	}
	if len(out) == 0 {
		out = append(out, "none")
	}
	return out
}

// sign adds a DKIM-Signature to outbound mail whose From domain has a key:
// after every change the relay makes (trace and result fields,
// List-Unsubscribe, split lines), before the spool, so every attempt sends
// the same signed bytes. A message the relay cannot sign goes unsigned,
// with the reason logged: refusing it would not help its sender.
func (s *Server) sign(cfg *Config, ss *session, msg []byte, id string) []byte {
	if cfg.signer == nil || !ss.ci.in.Outbound {
		return msg
	}
	from := builtins.Domain(ss.ci.txn.Message().Header().From())
	if from == "" {
		return msg
	}
	sig, err := cfg.signer.Sign(msg, from)
	if err != nil {
		s.log.Warn("dkim: not signed", "id", id, "domain", from, "err", err.Error())
		return msg
	}
	if sig == "" {
		return msg
	}
	out := make([]byte, 0, len(sig)+len(msg))
	out = append(out, sig...)
	return append(out, msg...)
}
