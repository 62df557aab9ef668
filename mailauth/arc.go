package mailauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// ARCResult is the outcome of ARC chain validation (RFC 8617).
type ARCResult struct {
	Result  string   // pass, fail, none, temperror
	Domains []string // d= of the seals of a chain that validates, newest first
	Detail  string
	// Sets is how many ARC sets the message carries (0 without ARC).
	Sets int
}

// arcMaxSets is RFC 8617 4.2.1's limit on instances.
const arcMaxSets = 50

// arcSet is one instance's three fields.
type arcSet struct {
	aar, ams, seal *arcField
	amsTags        map[string]string
	sealTags       map[string]string
}

// VerifyARC validates msg's ARC chain by RFC 8617 5.2: the sets must run
// from i=1 to the newest without a gap or a double, the newest seal must
// not say cv=fail, the first must say cv=none and the others cv=pass, the
// newest ARC-Message-Signature must verify over the message as it is now,
// and every ARC-Seal over the ARC fields of its set and all older ones.
// A key lookup that fails for now makes the result temperror. Timestamps
// (t=, x=) are not checked: RFC 8617 gives them no role in validation.
func VerifyARC(ctx context.Context, r Resolver, msg []byte) ARCResult {
	fields, body := arcSplit(msg)
	sets, err := arcSets(fields)
	if err != nil {
		return ARCResult{Result: Fail, Sets: len(sets), Detail: err.Error()}
	}
	if len(sets) == 0 {
		return ARCResult{Result: None, Detail: "no ARC sets"}
	}
	res := ARCResult{Sets: len(sets)}
	fail := func(format string, args ...any) ARCResult {
		res.Result, res.Detail, res.Domains = Fail, fmt.Sprintf(format, args...), nil
		return res
	}
	newest := sets[len(sets)-1]
	// RFC 8617 5.2 step 2: a chain a sealer called broken stays broken.
	if cv := newest.sealTags["cv"]; strings.EqualFold(cv, Fail) {
		return fail("ARC-Seal i=%d says cv=fail", len(sets))
	}
	// Step 3: the chain's shape.
	for i, s := range sets {
		cv, want := strings.ToLower(s.sealTags["cv"]), Pass
		if i == 0 {
			want = None
		}
		if cv != want {
			return fail("ARC-Seal i=%d has cv=%q, want %s", i+1, s.sealTags["cv"], want)
		}
		if _, ok := s.sealTags["h"]; ok {
			return fail("ARC-Seal i=%d has h= (RFC 8617 4.1.3)", i+1)
		}
		for _, t := range []string{"a", "b", "d", "s"} {
			if s.sealTags[t] == "" {
				return fail("ARC-Seal i=%d without %s=", i+1, t)
			}
		}
	}
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if newest.amsTags[t] == "" {
			return fail("ARC-Message-Signature i=%d without %s=", len(sets), t)
		}
	}

	keys := arcFetchKeys(ctx, r, sets)
	key := func(tags map[string]string) (crypto.PublicKey, error) {
		k := keys[arcKeyName(tags)]
		return k.key, k.err
	}
	tempfail := func(err error) (ARCResult, bool) {
		var te arcTempError
		if errors.As(err, &te) {
			res.Result, res.Detail, res.Domains = TempError, err.Error(), nil
			return res, true
		}
		return res, false
	}

	// Step 4: the newest AMS.
	if err := arcVerifyAMS(fields, body, newest, key); err != nil {
		if tr, ok := tempfail(err); ok {
			return tr
		}
		return fail("ARC-Message-Signature i=%d (d=%s): %v", len(sets), newest.amsTags["d"], err)
	}
	// Step 6: every seal, newest first.
	for i := len(sets); i >= 1; i-- {
		if err := arcVerifySeal(sets[:i], key); err != nil {
			if tr, ok := tempfail(err); ok {
				return tr
			}
			return fail("ARC-Seal i=%d (d=%s): %v", i, sets[i-1].sealTags["d"], err)
		}
		res.Domains = append(res.Domains, canonDomain(sets[i-1].sealTags["d"]))
	}
	res.Result = Pass
	res.Detail = fmt.Sprintf("%d sets sealed by %s", len(sets), strings.Join(res.Domains, ", "))
	return res
}

// arcSets groups the ARC fields by instance into sets 1..N. A field
// without a valid i=, an instance twice, a gap, or more than 50 sets is an
// error (RFC 8617 4.2.1, 5.2 step 3).
func arcSets(fields []arcField) ([]arcSet, error) {
	var sets []arcSet
	get := func(i int) *arcSet {
		for len(sets) < i {
			sets = append(sets, arcSet{})
		}
		return &sets[i-1]
	}
	for k := range fields {
		f := &fields[k]
		var kind string
		switch {
		case strings.EqualFold(f.name, "ARC-Seal"):
			kind = "ARC-Seal"
		case strings.EqualFold(f.name, "ARC-Message-Signature"):
			kind = "ARC-Message-Signature"
		case strings.EqualFold(f.name, "ARC-Authentication-Results"):
			kind = "ARC-Authentication-Results"
		default:
			continue
		}
		_, value, _ := strings.Cut(f.raw, ":")
		var tags map[string]string
		var inst string
		if kind == "ARC-Authentication-Results" {
			// i=N; then RFC 8601 results, which are not a tag list.
			head, _, _ := strings.Cut(value, ";")
			k, v, ok := strings.Cut(head, "=")
			if !ok || strings.Trim(k, " \t\r\n") != "i" {
				return sets, fmt.Errorf("%s without i= first", kind)
			}
			inst = strings.Trim(v, " \t\r\n")
		} else {
			var err error
			if tags, err = arcTags(value); err != nil {
				return sets, fmt.Errorf("%s: %v", kind, err)
			}
			inst = tags["i"]
		}
		i, err := strconv.Atoi(inst)
		if err != nil || i < 1 || i > arcMaxSets || strings.HasPrefix(inst, "+") {
			return sets, fmt.Errorf("%s with instance i=%q (1 to %d)", kind, inst, arcMaxSets)
		}
		s := get(i)
		var slot **arcField
		switch kind {
		case "ARC-Seal":
			slot, s.sealTags = &s.seal, tags
		case "ARC-Message-Signature":
			slot, s.amsTags = &s.ams, tags
		default:
			slot = &s.aar
		}
		if *slot != nil {
			return sets, fmt.Errorf("two %s fields with i=%d", kind, i)
		}
		*slot = f
	}
	for i, s := range sets {
		switch {
		case s.aar == nil:
			return sets, fmt.Errorf("set i=%d without ARC-Authentication-Results", i+1)
		case s.ams == nil:
			return sets, fmt.Errorf("set i=%d without ARC-Message-Signature", i+1)
		case s.seal == nil:
			return sets, fmt.Errorf("set i=%d without ARC-Seal", i+1)
		}
	}
	return sets, nil
}

type arcKeyResult struct {
	key crypto.PublicKey
	err error
}

func arcKeyName(tags map[string]string) string {
	return strings.ToLower(tags["s"] + "._domainkey." + strings.TrimSuffix(tags["d"], "."))
}

// arcFetchKeys looks up the keys of the newest AMS and of every seal, each
// name once and all at the same time, so a chain of three forwarders costs
// one round trip, not three.
func arcFetchKeys(ctx context.Context, r Resolver, sets []arcSet) map[string]arcKeyResult {
	want := map[string][2]string{}
	add := func(tags map[string]string) { want[arcKeyName(tags)] = [2]string{tags["s"], tags["d"]} }
	add(sets[len(sets)-1].amsTags)
	for _, s := range sets {
		add(s.sealTags)
	}
	keys := make(map[string]arcKeyResult, len(want))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, sd := range want {
		wg.Go(func() {
			k, err := arcLookupKey(ctx, r, sd[0], sd[1])
			mu.Lock()
			keys[name] = arcKeyResult{k, err}
			mu.Unlock()
		})
	}
	wg.Wait()
	return keys
}

// arcVerifyAMS checks an ARC-Message-Signature as a DKIM signature (RFC
// 8617 4.1.2): the body hash, then the fields h= names, picked from the
// bottom up (RFC 6376 5.4.2), and the AMS itself without its b= value.
func arcVerifyAMS(fields []arcField, body []byte, s arcSet, key func(map[string]string) (crypto.PublicKey, error)) error {
	t := s.amsTags
	hc, bc, err := arcCanonModes(t["c"])
	if err != nil {
		return err
	}
	cbody := arcCanonBody(body, bc)
	if l, ok := t["l"]; ok {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bad l=%q", l)
		}
		if n > int64(len(cbody)) {
			return errors.New("l= is longer than the body")
		}
		cbody = cbody[:n]
	}
	bh, err := arcB64(t["bh"])
	if err != nil {
		return fmt.Errorf("bh=: %v", err)
	}
	if sum := sha256.Sum256(cbody); !bytes.Equal(sum[:], bh) {
		return errors.New("body hash does not match: the body changed after sealing")
	}

	var data strings.Builder
	used := map[string]int{} // per lower-case name, how many picked from the bottom
	for h := range strings.SplitSeq(t["h"], ":") {
		h = strings.ToLower(strings.Trim(h, " \t\r\n"))
		if h == "arc-seal" {
			return errors.New("h= signs ARC-Seal (RFC 8617 4.1.2)")
		}
		n := 0
		for k := len(fields) - 1; k >= 0; k-- {
			if !strings.EqualFold(fields[k].name, h) {
				continue
			}
			if n == used[h] {
				data.WriteString(arcCanonHeader(fields[k].raw, hc))
				break
			}
			n++
		}
		used[h]++ // a name signed more often than present signs "absent"
	}
	data.WriteString(strings.TrimSuffix(arcCanonHeader(arcWithoutB(s.ams.raw), hc), "\r\n"))
	return arcCheck(t, data.String(), key)
}

// arcVerifySeal checks the newest seal of sets (RFC 8617 5.1.1): relaxed
// canonicalization of AAR, AMS and AS of every set in instance order, the
// seal being checked without its b= value.
func arcVerifySeal(sets []arcSet, key func(map[string]string) (crypto.PublicKey, error)) error {
	var data strings.Builder
	for i, s := range sets {
		data.WriteString(arcRelaxedHeader(s.aar.raw))
		data.WriteString(arcRelaxedHeader(s.ams.raw))
		if i < len(sets)-1 {
			data.WriteString(arcRelaxedHeader(s.seal.raw))
		}
	}
	seal := sets[len(sets)-1]
	data.WriteString(strings.TrimSuffix(arcRelaxedHeader(arcWithoutB(seal.seal.raw)), "\r\n"))
	return arcCheck(seal.sealTags, data.String(), key)
}

func arcCheck(t map[string]string, data string, key func(map[string]string) (crypto.PublicKey, error)) error {
	sig, err := arcB64(t["b"])
	if err != nil {
		return fmt.Errorf("b=: %v", err)
	}
	k, err := key(t)
	if err != nil {
		return err
	}
	return arcVerifySig(strings.ToLower(t["a"]), k, []byte(data), sig)
}

// arcCanonModes splits c= (RFC 6376 3.5: "header/body", body simple when
// absent, both simple without c=).
func arcCanonModes(c string) (header, body string, err error) {
	header, body = "simple", "simple"
	if c == "" {
		return header, body, nil
	}
	h, b, two := strings.Cut(strings.ToLower(c), "/")
	header = h
	if two {
		body = b
	}
	for _, m := range []string{header, body} {
		if m != "simple" && m != "relaxed" {
			return "", "", fmt.Errorf("canonicalization c=%s", c)
		}
	}
	return header, body, nil
}
