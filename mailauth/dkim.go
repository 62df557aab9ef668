package mailauth

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMSignature is the outcome for one DKIM-Signature field.
type DKIMSignature struct {
	Domain   string // d=
	Selector string // s=
	Result   string // pass, fail, permerror, temperror
	Detail   string
	// Unsigned is true when the signature has l= and content follows the
	// signed part of the body (RFC 6376 8.2).
	Unsigned bool
}

// DKIMResult is the outcome over every signature of a message.
type DKIMResult struct {
	Result     string   // best over Signatures (SPEC 6 ranking), none without any
	Domains    []string // d= of the signatures that passed
	Signatures []DKIMSignature
}

// UnsignedContent reports whether the message passes DKIM only by
// signatures with l= that leave content after the signed part (RFC 6376
// 8.2): content anyone may have appended. False when any passing signature
// covers the whole body, or when nothing passes.
func (r DKIMResult) UnsignedContent() bool {
	unsigned := false
	for _, s := range r.Signatures {
		if s.Result != Pass {
			continue
		}
		if !s.Unsigned {
			return false
		}
		unsigned = true
	}
	return unsigned
}

// maxDKIMSignatures bounds the signatures checked on one message: each costs
// a DNS lookup and a public-key operation, and a sender chooses how many
// there are. Signatures past it are reported as permerror.
const maxDKIMSignatures = 10

// dkimRank orders results by SPEC 6: pass > temperror > fail > permerror > none.
var dkimRank = map[string]int{Pass: 4, TempError: 3, Fail: 2, PermError: 1, None: 0}

// VerifyDKIM checks every DKIM-Signature of msg (RFC 6376), RSA and
// Ed25519, l= included. Key records come from r: a record that does not
// exist makes that signature permerror, a lookup that fails otherwise
// temperror.
//
// go-msgauth does the work; its copy in third_party verifies signatures
// with l= (upstream fails them all, see third_party/go-msgauth/PATCHES.md).
func VerifyDKIM(ctx context.Context, r Resolver, msg []byte) DKIMResult {
	fields := dkimSignatureFields(msg)
	if len(fields) == 0 {
		return DKIMResult{Result: None}
	}
	opts := &dkim.VerifyOptions{
		LookupTXT:        dkimLookup(ctx, r),
		MaxVerifications: maxDKIMSignatures,
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(dkimWithHeaderEnd(msg)), opts)
	res := DKIMResult{Result: None, Signatures: make([]DKIMSignature, len(fields))}
	for i, tags := range fields {
		sig := &res.Signatures[i]
		sig.Domain = strings.ToLower(tags["d"])
		sig.Selector = tags["s"]
		switch {
		case i < len(verifs) && verifs[i] != nil:
			v := verifs[i]
			sig.Result, sig.Detail = dkimOutcome(v.Err)
			sig.Unsigned = v.BodyLimited && v.UnsignedBody
			if v.BodyLimited && sig.Result == Pass {
				sig.Detail = fmt.Sprintf("l=%d", v.BodyLength)
				if sig.Unsigned {
					sig.Detail += ", unsigned content follows"
				}
			}
		case err != nil && err != dkim.ErrTooManySignatures:
			// The message could not be read as a whole (a header line
			// textproto refuses): no signature in it can verify.
			sig.Result, sig.Detail = PermError, err.Error()
		default:
			sig.Result, sig.Detail = PermError, fmt.Sprintf("more than %d signatures: not checked", maxDKIMSignatures)
		}
		if dkimRank[sig.Result] > dkimRank[res.Result] {
			res.Result = sig.Result
		}
		if sig.Result == Pass && sig.Domain != "" && !slices.Contains(res.Domains, sig.Domain) {
			res.Domains = append(res.Domains, sig.Domain)
		}
	}
	return res
}

// dkimOutcome maps go-msgauth's verdict on one signature to its result.
// go-msgauth calls a missing key record a permanent failure, as SPEC 6
// does (permerror); what is neither temporary nor permanent is a signature
// or body hash that does not match (fail).
func dkimOutcome(err error) (result, detail string) {
	switch {
	case err == nil:
		return Pass, ""
	case dkim.IsTempFail(err):
		return TempError, err.Error()
	case dkim.IsPermFail(err):
		return PermError, err.Error()
	default:
		return Fail, err.Error()
	}
}

// dkimLookup gives go-msgauth r's TXT lookups with the errors it tells
// apart: it treats a net.Error whose Temporary() is true as a temporary
// failure and every other error as permanent. The Resolver contract is
// "not found, else temporary", whatever the error's type, so both cases
// are restated as the *net.DNSError go-msgauth reads.
func dkimLookup(ctx context.Context, r Resolver) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		txts, err := r.LookupTXT(ctx, name)
		switch {
		case err == nil:
			return txts, nil
		case IsNotFound(err):
			return nil, &net.DNSError{Err: "no key record", Name: name, IsNotFound: true}
		default:
			return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
		}
	}
}

// dkimWithHeaderEnd returns msg with an empty line after the header when it
// has none (a message of header fields only): go-msgauth cannot read a
// header that does not end.
func dkimWithHeaderEnd(msg []byte) []byte {
	if bytes.HasPrefix(msg, []byte("\r\n")) || bytes.HasPrefix(msg, []byte("\n")) ||
		bytes.Contains(msg, []byte("\n\r\n")) || bytes.Contains(msg, []byte("\n\n")) {
		return msg
	}
	out := make([]byte, 0, len(msg)+4)
	out = append(out, msg...)
	if len(msg) > 0 && msg[len(msg)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return append(out, '\r', '\n')
}

// dkimSignatureFields returns the tags of msg's DKIM-Signature fields in
// header order, the order go-msgauth reports them in. Only d= and s= are
// read from them, for results whose verification did not get that far.
func dkimSignatureFields(msg []byte) []map[string]string {
	var out []map[string]string
	for _, f := range dkimHeaderFields(msg) {
		name, value, ok := strings.Cut(f, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			continue
		}
		tags := map[string]string{}
		for _, kv := range strings.Split(value, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
		}
		out = append(out, tags)
	}
	return out
}

// dkimHeaderFields returns msg's header fields, unfolded line by line as
// go-msgauth reads them (a continuation line joins the field before it;
// lines end in LF or CRLF), without their line ends.
func dkimHeaderFields(msg []byte) []string {
	var fields []string
	for len(msg) > 0 {
		line := msg
		i := bytes.IndexByte(msg, '\n')
		if i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += "\r\n" + string(line)
			continue
		}
		fields = append(fields, string(line))
	}
	return fields
}
