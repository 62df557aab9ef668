package mailauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"blitiri.com.ar/go/spf"
)

// SPFResult is the outcome of an SPF check (RFC 7208).
type SPFResult struct {
	Result string // pass, fail, softfail, neutral, none, temperror, permerror
	Domain string // the domain checked: mail_from's, or the HELO name for the null sender
	Detail string // why, for the evidence and Authentication-Results
}

// CheckSPF checks client ip for mailFrom's domain, or for the HELO name
// when mailFrom is the null sender (RFC 7208 2.4).
func CheckSPF(ctx context.Context, r Resolver, ip netip.Addr, helo, mailFrom string) SPFResult {
	helo = strings.TrimSuffix(helo, ".")
	sender, domain := mailFrom, ""
	if at := strings.LastIndexByte(mailFrom, '@'); at >= 0 {
		domain = mailFrom[at+1:]
	}
	if mailFrom == "" {
		// RFC 7208 2.4: the null sender is checked as postmaster@HELO.
		sender, domain = "postmaster@"+helo, helo
	}
	return checkHost(ctx, r, ip, helo, sender, strings.TrimSuffix(domain, "."))
}

// SPFAuthorizes reports whether domain's SPF record gives pass for every
// one of ips (the relay's own outgoing addresses), and the result for the
// first that does not pass (or the last pass). No ips authorises
// vacuously: there is nothing the next hop could refuse.
func SPFAuthorizes(ctx context.Context, r Resolver, domain string, ips []netip.Addr) (bool, SPFResult) {
	domain = strings.TrimSuffix(domain, ".")
	res := SPFResult{Result: Pass, Domain: domain, Detail: "no outbound addresses to check"}
	for _, ip := range ips {
		res = checkHost(ctx, r, ip, domain, "postmaster@"+domain, domain)
		if res.Result != Pass {
			return false, res
		}
	}
	return true, res
}

// checkHost is RFC 7208 4's check_host(), by the library, over a resolver
// that refuses records with a syntax error.
func checkHost(ctx context.Context, r Resolver, ip netip.Addr, helo, sender, domain string) SPFResult {
	out := SPFResult{Domain: domain}
	if !ip.IsValid() {
		out.Result, out.Detail = None, "no client address"
		return out
	}
	// RFC 7208 4.3: a malformed or single-label domain is "none".
	if !validSPFDomain(domain) {
		out.Result, out.Detail = None, fmt.Sprintf("%q is not a domain SPF can check", domain)
		return out
	}
	var matched string
	trace := func(f string, a ...any) {
		// The library traces each deciding term as "%q %v, %v"; the
		// outermost (last) one is the record's own term.
		if f == "%q %v, %v" && len(a) == 3 {
			if s, ok := a[0].(string); ok {
				matched = s
			}
		} else if f == "all: %v" {
			matched = "all"
		}
	}
	res, err := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		spf.WithContext(ctx), spf.WithResolver(syntaxCheckingResolver{r}), spf.WithTraceFunc(trace))
	out.Result = string(res)
	var se *spfSyntaxError
	switch {
	case errors.As(err, &se):
		out.Result, out.Detail = PermError, se.Error()
	case res == spf.None:
		out.Detail = "no SPF record"
	case res == spf.TempError, res == spf.PermError:
		out.Detail = err.Error()
	case matched != "":
		out.Detail = "matched " + matched
	case res == spf.Neutral && err == nil:
		out.Detail = "no term matched"
	case err != nil:
		out.Detail = err.Error()
	}
	return out
}

// validSPFDomain: RFC 7208 4.3, labels of 1 to 63 octets, at least two.
func validSPFDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 || strings.ContainsAny(d, "[]: \t@") {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
	}
	return true
}

// syntaxCheckingResolver hands the library SPF records only once their
// whole syntax is checked: RFC 7208 4.6, a syntax error anywhere in the
// record is permerror before anything is evaluated, and the library,
// evaluating term by term, would give pass from a term before the error.
// The library reads TXT only for SPF records (the domain's, include's and
// redirect's), so every record evaluated passes through here.
type syntaxCheckingResolver struct{ Resolver }

func (s syntaxCheckingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txts, err := s.Resolver.LookupTXT(ctx, name)
	if err != nil {
		return txts, err
	}
	var records []string
	for _, t := range txts {
		if isSPFRecord(t) {
			records = append(records, t)
		}
	}
	if len(records) == 1 { // none or several: the library's none and permerror
		if err := checkSPFSyntax(records[0]); err != nil {
			return nil, &spfSyntaxError{domain: strings.TrimSuffix(name, "."), err: err}
		}
	}
	return txts, nil
}

// RFC 7208 4.5: "v=spf1" alone or followed by a space, case-insensitive.
func isSPFRecord(t string) bool {
	return len(t) >= 6 && strings.EqualFold(t[:6], "v=spf1") && (len(t) == 6 || t[6] == ' ')
}

type spfSyntaxError struct {
	domain string
	err    error
}

func (e *spfSyntaxError) Error() string {
	return fmt.Sprintf("syntax error in the SPF record of %s: %v", e.domain, e.err)
}

// checkSPFSyntax checks a record against RFC 7208 12's grammar.
func checkSPFSyntax(record string) error {
	terms := strings.Split(record, " ")[1:] // terms = *( 1*SP ( directive / modifier ) )
	seen := map[string]bool{}
	for _, term := range terms {
		if term == "" {
			continue
		}
		if err := checkSPFTerm(term, seen); err != nil {
			return fmt.Errorf("%q: %w", term, err)
		}
	}
	return nil
}

func checkSPFTerm(term string, seen map[string]bool) error {
	// A modifier is name "=" ...; a mechanism never has "=" before ":" or "/".
	if eq := strings.IndexByte(term, '='); eq > 0 && !strings.ContainsAny(term[:eq], ":/") {
		name, value := strings.ToLower(term[:eq]), term[eq+1:]
		if !isModifierName(name) {
			return errors.New("not a mechanism nor a modifier")
		}
		switch name {
		case "redirect", "exp":
			// RFC 7208 6: each at most once.
			if seen[name] {
				return fmt.Errorf("%s= more than once", name)
			}
			seen[name] = true
			return checkDomainSpec(value)
		}
		return checkMacroString(value, false) // unknown modifiers are ignored, but must parse
	}
	mech := term
	if strings.IndexByte("+-~?", mech[0]) >= 0 {
		mech = mech[1:]
	}
	name, arg, hasArg := mech, "", false
	if i := strings.IndexAny(mech, ":/"); i >= 0 {
		name, arg, hasArg = mech[:i], mech[i:], true
	}
	switch strings.ToLower(name) {
	case "all":
		if hasArg {
			return errors.New("all takes no argument")
		}
	case "include", "exists":
		if !strings.HasPrefix(arg, ":") {
			return errors.New("needs :domain")
		}
		return checkDomainSpec(arg[1:])
	case "ptr":
		if !hasArg {
			return nil
		}
		if !strings.HasPrefix(arg, ":") {
			return errors.New("ptr takes :domain only")
		}
		return checkDomainSpec(arg[1:])
	case "a", "mx":
		spec, cidr := arg, ""
		if i := strings.IndexByte(arg, '/'); i >= 0 {
			spec, cidr = arg[:i], arg[i:]
		}
		if spec != "" {
			if !strings.HasPrefix(spec, ":") {
				return errors.New("bad argument")
			}
			if err := checkDomainSpec(spec[1:]); err != nil {
				return err
			}
		}
		return checkDualCIDR(cidr)
	case "ip4", "ip6":
		if !strings.HasPrefix(arg, ":") {
			return errors.New("needs :address")
		}
		addr, cidr, _ := strings.Cut(arg[1:], "/")
		ip, err := netip.ParseAddr(addr)
		v4 := name[2] == '4'
		if err != nil || ip.Zone() != "" || ip.Is4() != v4 {
			return errors.New("bad address")
		}
		if strings.Contains(arg[1:], "/") {
			maxBits := 128
			if v4 {
				maxBits = 32
			}
			if !validCIDR(cidr, maxBits) {
				return errors.New("bad prefix length")
			}
		}
	default:
		return errors.New("unknown mechanism")
	}
	return nil
}

// name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
func isModifierName(n string) bool {
	for i, c := range []byte(n) {
		alpha := 'a' <= c && c <= 'z'
		if !alpha && (i == 0 || !('0' <= c && c <= '9' || c == '-' || c == '_' || c == '.')) {
			return false
		}
	}
	return n != ""
}

// dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]
func checkDualCIDR(c string) error {
	if c == "" {
		return nil
	}
	v4, v6, dual := strings.Cut(c[1:], "//")
	if strings.HasPrefix(c, "//") {
		v4, v6, dual = "", c[2:], true
	} else if v4 == "" || !validCIDR(v4, 32) {
		return errors.New("bad IPv4 prefix length")
	}
	if dual && !validCIDR(v6, 128) {
		return errors.New("bad IPv6 prefix length")
	}
	return nil
}

// A prefix length: no leading zero, at most maxBits.
func validCIDR(s string, maxBits int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && s[0] != '+' && s[0] != '-' && (s == "0" || s[0] != '0') && n <= maxBits
}

// domain-spec = macro-string domain-end
// domain-end  = ( "." toplabel [ "." ] ) / macro-expand
func checkDomainSpec(s string) error {
	if s == "" {
		return errors.New("empty domain")
	}
	if err := checkMacroString(s, true); err != nil {
		return err
	}
	if strings.HasSuffix(s, "}") || strings.HasSuffix(s, "%%") || strings.HasSuffix(s, "%_") || strings.HasSuffix(s, "%-") {
		return nil // ends with a macro-expand
	}
	t := strings.TrimSuffix(s, ".")
	dot := strings.LastIndexByte(t, '.')
	if dot < 0 || !isTopLabel(t[dot+1:]) {
		return errors.New("domain does not end in a top-level label")
	}
	return nil
}

// toplabel = ( *alphanum ALPHA *alphanum ) /
//
//	( 1*alphanum "-" *( alphanum / "-" ) alphanum )
func isTopLabel(l string) bool {
	if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	alpha, hyphen := false, false
	for _, c := range []byte(l) {
		switch {
		case 'a' <= c|0x20 && c|0x20 <= 'z':
			alpha = true
		case '0' <= c && c <= '9':
		case c == '-':
			hyphen = true
		default:
			return false
		}
	}
	return alpha || hyphen
}

// macro-string = *( macro-expand / macro-literal ), RFC 7208 7.1. In a
// domain-spec the letters c, r and t are not allowed (7.3: exp text only),
// nor "/" (it would be a CIDR length).
func checkMacroString(s string, domain bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x21 || c > 0x7e || domain && c == '/' {
				return fmt.Errorf("invalid character %q", c)
			}
			continue
		}
		if i+1 >= len(s) {
			return errors.New("lone %")
		}
		i++
		switch s[i] {
		case '%', '_', '-':
			continue
		case '{':
		default:
			return errors.New("invalid macro")
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return errors.New("unterminated macro")
		}
		body := s[i+1 : i+end]
		i += end
		if err := checkMacroBody(body, domain); err != nil {
			return err
		}
	}
	return nil
}

// macro-letter transformers *delimiter
func checkMacroBody(b string, domain bool) error {
	if b == "" {
		return errors.New("empty macro")
	}
	letter := b[0] | 0x20
	if strings.IndexByte("slodiphcrtv", letter) < 0 || domain && strings.IndexByte("crt", letter) >= 0 {
		return fmt.Errorf("invalid macro letter %q", b[0])
	}
	rest := b[1:]
	digits := 0
	for digits < len(rest) && '0' <= rest[digits] && rest[digits] <= '9' {
		digits++
	}
	if digits > 0 {
		if n, _ := strconv.Atoi(rest[:digits]); n == 0 {
			return errors.New("macro keeps zero labels")
		}
	}
	rest = rest[digits:]
	if rest != "" && rest[0]|0x20 == 'r' {
		rest = rest[1:]
	}
	for _, c := range []byte(rest) {
		if strings.IndexByte(".-+,/_=", c) < 0 {
			return fmt.Errorf("invalid macro delimiter %q", c)
		}
	}
	return nil
}
