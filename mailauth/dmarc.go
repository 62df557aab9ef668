package mailauth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-msgauth/dmarc"
)

// DMARCResult is the outcome of a DMARC evaluation (RFC 7489).
type DMARCResult struct {
	Result string // pass, fail, none, temperror, permerror
	Policy string // none, quarantine, reject; "" without a record
	Domain string // the From domain
	Detail string
	// RecordDomain is where the record was found (or the lookup failed, or
	// several records made DMARC not apply): the From domain, or its
	// organizational domain when the From domain publishes none; "" when
	// neither has a record.
	RecordDomain string
}

// DMARCInput is what DMARC aligns with the From domain.
type DMARCInput struct {
	FromDomain string
	SPF        SPFResult // SPF's result and the domain it checked
	DKIMPassed []string  // d= of the DKIM signatures that passed
	SPFTemp    bool      // SPF could not be checked (temperror)
	DKIMTemp   bool
}

// CheckDMARC discovers fromDomain's policy (at the organizational domain
// when the domain has none, by the public suffix list) and aligns SPF and
// DKIM with it, relaxed or strict as the record says.
//
// The result is temperror when the record cannot be fetched, and also when
// nothing aligned passed but an SPF or DKIM check that could have given an
// aligned pass ended in temperror: calling that "fail" would let a DNS
// hiccup at the sender's side trigger p=reject, while temperror lets a rule
// defer and the retry decide. SPF's temperror counts only when its domain
// would have aligned; a DKIM temperror always counts, since the input does
// not say which d= it was for.
func CheckDMARC(ctx context.Context, r Resolver, in DMARCInput) DMARCResult {
	from := canonDomain(in.FromDomain)
	res := DMARCResult{Domain: from}
	if from == "" {
		res.Result, res.Detail = None, "no From domain"
		return res
	}
	rec, at, err := discoverDMARC(ctx, r, from)
	res.RecordDomain = at
	var syntax dmarcSyntaxError
	switch {
	case errors.As(err, &syntax):
		res.Result, res.Detail = PermError, fmt.Sprintf("record at _dmarc.%s: %v", at, err)
		return res
	case err != nil:
		res.Result, res.Detail = TempError, fmt.Sprintf("record lookup at _dmarc.%s: %v", at, err)
		return res
	case rec == nil:
		res.Result, res.Detail = None, "no DMARC record for "+from
		if at != "" {
			res.Detail = "several DMARC records at _dmarc." + at
		}
		return res
	}

	// RFC 7489 6.6.3 step 6 and 6.3 "sp": a subdomain without a record of its
	// own gets the organizational domain's sp=, else its p=.
	res.Policy = string(rec.Policy)
	if at != from && rec.SubdomainPolicy != "" {
		res.Policy = string(rec.SubdomainPolicy)
	}
	pct := ""
	if rec.Percent != nil && *rec.Percent < 100 {
		pct = fmt.Sprintf(" pct=%d", *rec.Percent)
	}
	policy := fmt.Sprintf("policy %s%s from _dmarc.%s", res.Policy, pct, at)

	spfMode, dkimMode := dmarcModeName(rec.SPFAlignment), dmarcModeName(rec.DKIMAlignment)
	if in.SPF.Result == Pass && dmarcAligned(in.SPF.Domain, from, rec.SPFAlignment) {
		res.Result = Pass
		res.Detail = fmt.Sprintf("SPF %s aligned (%s); %s", canonDomain(in.SPF.Domain), spfMode, policy)
		return res
	}
	for _, d := range in.DKIMPassed {
		if dmarcAligned(d, from, rec.DKIMAlignment) {
			res.Result = Pass
			res.Detail = fmt.Sprintf("DKIM d=%s aligned (%s); %s", canonDomain(d), dkimMode, policy)
			return res
		}
	}
	spfTemp := in.SPFTemp || in.SPF.Result == TempError
	if spfTemp && (in.SPF.Domain == "" || dmarcAligned(in.SPF.Domain, from, rec.SPFAlignment)) {
		res.Result, res.Detail = TempError, "nothing aligned passed and SPF had a temporary error; "+policy
		return res
	}
	if in.DKIMTemp {
		res.Result, res.Detail = TempError, "nothing aligned passed and DKIM had a temporary error; "+policy
		return res
	}
	res.Result = Fail
	res.Detail = fmt.Sprintf("no aligned pass: SPF %s for %q (%s), DKIM passed for %q (%s); %s",
		dmarcOrNone(in.SPF.Result), canonDomain(in.SPF.Domain), spfMode, in.DKIMPassed, dkimMode, policy)
	return res
}

// discoverDMARC finds the record for from (RFC 7489 6.6.3): at
// _dmarc.FROM, else at _dmarc.ORGDOMAIN. It returns the record and the
// domain it came from; a nil record with a domain means several records
// there (no DMARC processing), with "" that there is none; an error is a
// lookup that failed for now or a record that does not parse.
func discoverDMARC(ctx context.Context, r Resolver, from string) (*dmarc.Record, string, error) {
	txts, err := dmarcRecords(ctx, r, from)
	if err != nil {
		return nil, from, err
	}
	if len(txts) == 0 {
		org := OrganizationalDomain(from)
		if org == from {
			return nil, "", nil
		}
		if txts, err = dmarcRecords(ctx, r, org); err != nil {
			return nil, org, err
		}
		if len(txts) == 0 {
			return nil, "", nil
		}
		from = org
	}
	// Step 5: several records is no policy at all, not the first one.
	if len(txts) > 1 {
		return nil, from, nil
	}
	rec, err := parseDMARC(txts[0])
	if err != nil {
		return nil, from, dmarcSyntaxError{err}
	}
	return rec, from, nil
}

// dmarcSyntaxError is a DMARC record that does not parse: permerror, where
// any other error from discovery is DNS failing for now.
type dmarcSyntaxError struct{ err error }

func (e dmarcSyntaxError) Error() string { return e.err.Error() }

// dmarcRecords is the DMARC records at _dmarc.domain: TXT records that are
// not DMARC are discarded (RFC 7489 6.6.3 step 2), and "not found" is none.
func dmarcRecords(ctx context.Context, r Resolver, domain string) ([]string, error) {
	txts, err := r.LookupTXT(ctx, "_dmarc."+domain+".")
	if IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []string
	for _, t := range txts {
		if _, ok := dmarcVersion(t); ok {
			recs = append(recs, t)
		}
	}
	return recs, nil
}

// dmarcVersion reports whether txt starts with the v=DMARC1 tag (RFC 7489
// 6.4: "v" must be the first tag; the tag name is case-insensitive, the
// value DMARC1 is not) and returns the rest after it.
func dmarcVersion(txt string) (string, bool) {
	s := strings.TrimLeft(txt, " \t")
	if len(s) == 0 || (s[0] != 'v' && s[0] != 'V') {
		return "", false
	}
	s = strings.TrimLeft(s[1:], " \t")
	if !strings.HasPrefix(s, "=") {
		return "", false
	}
	s = strings.TrimLeft(s[1:], " \t")
	if !strings.HasPrefix(s, "DMARC1") {
		return "", false
	}
	rest := strings.TrimLeft(s[len("DMARC1"):], " \t")
	if rest != "" && rest[0] != ';' {
		return "", false
	}
	return rest, true
}

// parseDMARC parses a record that starts with v=DMARC1. Tag values are
// compared case-insensitively (RFC 7489 6.4's ABNF literals), which
// go-msgauth's parser does not do, so the tags go to it in lower case.
// RFC 7489 6.6.3 step 6: a record without a valid p= but with rua= counts
// as p=none.
func parseDMARC(txt string) (*dmarc.Record, error) {
	rest, _ := dmarcVersion(txt)
	rest = strings.ToLower(rest)
	rec, err := dmarc.Parse("v=DMARC1" + rest)
	if err != nil && !dmarcHasPolicy(rest) && strings.Contains(rest, "rua=") {
		// A later tag wins in go-msgauth's parser.
		if rec, perr := dmarc.Parse("v=DMARC1" + rest + ";p=none"); perr == nil {
			return rec, nil
		}
	}
	return rec, err
}

// dmarcHasPolicy reports whether the tag list has a p= tag with a policy
// value.
func dmarcHasPolicy(tags string) bool {
	for _, t := range strings.Split(tags, ";") {
		k, v, ok := strings.Cut(t, "=")
		if ok && strings.TrimSpace(k) == "p" {
			switch strings.TrimSpace(v) {
			case "none", "quarantine", "reject":
				return true
			}
		}
	}
	return false
}

// dmarcAligned reports whether identifier domain id aligns with the From domain
// (RFC 7489 3.1): the same name in strict mode, the same organizational
// domain in relaxed mode (the default).
func dmarcAligned(id, from string, mode dmarc.AlignmentMode) bool {
	id = canonDomain(id)
	if id == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return id == from
	}
	return OrganizationalDomain(id) == OrganizationalDomain(from)
}

func dmarcModeName(m dmarc.AlignmentMode) string {
	if m == dmarc.AlignmentStrict {
		return "strict"
	}
	return "relaxed"
}

func dmarcOrNone(s string) string {
	if s == "" {
		return None
	}
	return s
}
