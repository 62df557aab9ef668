package mailauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Bounds of what a Recorder keeps for one message: a message's checks make
// a dozen lookups, a hostile one (many DKIM signatures, an SPF record that
// includes everything) may make hundreds, and the record goes into the store.
const (
	maxRecorded    = 100
	maxLookupBytes = 8 << 10  // the values of one lookup
	maxRecordBytes = 64 << 10 // the values of all lookups
)

// The types recorded, and the error kind of a name or record that does not
// exist (StaticServfail and StaticTimeout are the others).
const (
	recordedTypeTXT  = "TXT"
	recordedTypeMX   = "MX"
	recordedTypeA    = "A"
	recordedTypeAAAA = "AAAA"
	recordedTypePTR  = "PTR"
	LookupNotFound   = "NXDOMAIN"
)

// Lookup is one name and type the checks asked for, with what they got:
// the values (in the form of context.dns, SPEC 6), or an error kind.
type Lookup struct {
	Name   string   `json:"name"` // lower case, without the final dot
	Type   string   `json:"type"` // TXT, MX, A, AAAA, PTR
	Values []string `json:"values,omitempty"`
	// Error is NXDOMAIN (the name or the record does not exist: NODATA
	// too), SERVFAIL (any other failure) or TIMEOUT; "" when answered.
	Error string `json:"error,omitempty"`
	// Truncated: values were left out to keep the record bounded, so
	// replaying it may not give the same results.
	Truncated bool `json:"truncated,omitempty"`
}

// Key is the lookup's context.dns key, "NAME TYPE".
func (l Lookup) Key() string { return l.Name + " " + l.Type }

// DNSLog is what a message's checks looked up, in the order first asked.
type DNSLog struct {
	Lookups []Lookup `json:"lookups"`
	// Dropped counts the lookups past the bound, not recorded.
	Dropped int `json:"dropped,omitempty"`
}

// Records is the log as context.dns: what NewStaticResolver answers the
// same way. NXDOMAIN is the absence of a key.
func (l *DNSLog) Records() map[string][]string {
	out := make(map[string][]string, len(l.Lookups))
	for _, lk := range l.Lookups {
		switch lk.Error {
		case LookupNotFound:
		case "":
			out[lk.Key()] = append([]string{}, lk.Values...)
		default:
			out[lk.Key()] = []string{lk.Error}
		}
	}
	return out
}

// WriteYAML writes the log as the entries of a context.dns mapping, each
// line starting with indent, sorted by key, so that an operator can paste
// it into a fixture and replay the decision offline. Lookups that found
// nothing are comments: NXDOMAIN is what a name not listed answers.
func (l *DNSLog) WriteYAML(w io.Writer, indent string) {
	lks := append([]Lookup(nil), l.Lookups...)
	sort.Slice(lks, func(i, j int) bool { return lks[i].Key() < lks[j].Key() })
	for _, lk := range lks {
		key := yamlString(lk.Key())
		switch lk.Error {
		case LookupNotFound:
			fmt.Fprintf(w, "%s# %s: %s\n", indent, key, lk.Error)
			continue
		case "":
			vals := make([]string, len(lk.Values))
			for i, v := range lk.Values {
				vals[i] = yamlString(v)
			}
			fmt.Fprintf(w, "%s%s: [%s]\n", indent, key, strings.Join(vals, ", "))
		default:
			fmt.Fprintf(w, "%s%s: %s\n", indent, key, lk.Error)
		}
		if lk.Truncated {
			fmt.Fprintf(w, "%s  # answers left out (the record keeps %d KB of one lookup, %d KB in all)\n", indent, maxLookupBytes>>10, maxRecordBytes>>10)
		}
	}
	if l.Dropped > 0 {
		fmt.Fprintf(w, "%s# %d more lookups not recorded (the record keeps %d)\n", indent, l.Dropped, maxRecorded)
	}
}

// yamlString quotes s as a YAML double-quoted scalar (a JSON string is one;
// <, > and & are left as they are, for the reader).
func yamlString(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// Recorder is a Resolver that keeps what every lookup through it answered,
// so that a decision can be explained later without DNS: the relay wraps
// its resolver in one per connection and puts Log into the decision record.
// It is safe for concurrent use (the checks run side by side) and bounded.
type Recorder struct {
	r Resolver

	mu      sync.Mutex
	lookups []Lookup
	index   map[string]int // by Key, into lookups
	bytes   int            // of the values kept
	dropped int
	// The lookups before mark (and the count dropped then) outlive Rewind.
	mark, markDropped int
}

// NewRecorder returns a Recorder asking r.
func NewRecorder(r Resolver) *Recorder {
	return &Recorder{r: r, index: make(map[string]int)}
}

// Log returns a copy of the lookups recorded, nil when none.
func (rec *Recorder) Log() *DNSLog {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.lookups) == 0 && rec.dropped == 0 {
		return nil
	}
	out := &DNSLog{Lookups: make([]Lookup, len(rec.lookups)), Dropped: rec.dropped}
	for i, lk := range rec.lookups {
		lk.Values = append([]string(nil), lk.Values...)
		out.Lookups[i] = lk
	}
	return out
}

// Reset forgets every lookup: a new connection.
func (rec *Recorder) Reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.lookups, rec.bytes, rec.dropped = rec.lookups[:0], 0, 0
	rec.mark, rec.markDropped = 0, 0
	clear(rec.index)
}

// Mark makes the lookups so far outlive Rewind: those of the connection's
// facts (fcrdns, dnsbl on client_ip), which every message of the connection
// is judged with.
func (rec *Recorder) Mark() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.mark, rec.markDropped = len(rec.lookups), rec.dropped
}

// Rewind forgets the lookups since Mark: a new message on the connection.
func (rec *Recorder) Rewind() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, lk := range rec.lookups[rec.mark:] {
		delete(rec.index, lk.Key())
		rec.bytes -= valuesSize(lk.Values)
	}
	rec.lookups = rec.lookups[:rec.mark]
	rec.dropped = rec.markDropped
}

func valuesSize(vals []string) int {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	return n
}

// record keeps the outcome of looking up name and typ: vals, or the kind of
// err. A later lookup of the same name and type replaces an earlier one:
// the checks used the last answer.
func (rec *Recorder) record(name, typ string, vals []string, err error) {
	name = staticName(name)
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return // no key can carry it; replayed, it is NXDOMAIN as it was
	}
	lk := Lookup{Name: name, Type: typ}
	if err != nil {
		lk.Error = errorKind(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	i, seen := rec.index[lk.Key()]
	if seen {
		rec.bytes -= valuesSize(rec.lookups[i].Values)
	} else if len(rec.lookups) >= maxRecorded {
		rec.dropped++
		return
	}
	if err == nil {
		lk.Values = make([]string, 0, len(vals))
		budget := min(maxLookupBytes, maxRecordBytes-rec.bytes)
		for _, v := range vals {
			// Whole values or none: a value cut short would replay as
			// another record (a broken key, a different SPF policy).
			if len(v) > budget {
				lk.Truncated = true
				continue
			}
			budget -= len(v)
			lk.Values = append(lk.Values, v)
		}
		rec.bytes += valuesSize(lk.Values)
	}
	if seen {
		rec.lookups[i] = lk
		return
	}
	rec.index[lk.Key()] = len(rec.lookups)
	rec.lookups = append(rec.lookups, lk)
}

// errorKind is how context.dns replays err: NXDOMAIN for "not found",
// TIMEOUT for a timeout, SERVFAIL for any other failure.
func errorKind(err error) string {
	var de *net.DNSError
	switch {
	case IsNotFound(err):
		return LookupNotFound
	case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return StaticTimeout
	}
	return StaticServfail
}

// LookupTXT records name's TXT records.
func (rec *Recorder) LookupTXT(ctx context.Context, name string) ([]string, error) {
	vals, err := rec.r.LookupTXT(ctx, name)
	rec.record(name, recordedTypeTXT, vals, err)
	return vals, err
}

// LookupMX records name's MX records as "PREFERENCE HOST".
func (rec *Recorder) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, err := rec.r.LookupMX(ctx, name)
	vals := make([]string, len(mxs))
	for i, mx := range mxs {
		vals[i] = fmt.Sprintf("%d %s", mx.Pref, mx.Host)
	}
	rec.record(name, recordedTypeMX, vals, err)
	return mxs, err
}

// LookupAddr records the PTR records of addr's reverse name.
func (rec *Recorder) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	names, err := rec.r.LookupAddr(ctx, addr)
	if rev, rerr := dns.ReverseAddr(addr); rerr == nil {
		rec.record(rev, recordedTypePTR, names, err)
	}
	return names, err
}

// LookupIPAddr records host's A and AAAA records.
func (rec *Recorder) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, err := rec.r.LookupIPAddr(ctx, host)
	ips := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	rec.recordIPs(host, "ip", ips, err)
	return addrs, err
}

// LookupNetIP records host's A records (network "ip4"), AAAA ("ip6") or
// both ("ip"). DNSBL asks this way, for A records only.
func (rec *Recorder) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var ips []netip.Addr
	var err error
	if nr, ok := rec.r.(netIPResolver); ok {
		ips, err = nr.LookupNetIP(ctx, network, host)
	} else {
		ips, err = lookupIPAddrs(ctx, rec.r, host)
		ips = filterIPs(ips, network)
		if err == nil && len(ips) == 0 {
			err = notFoundError(host, "no answer")
		}
	}
	rec.recordIPs(host, network, ips, err)
	return ips, err
}

// filterIPs keeps the addresses of network ("ip4", "ip6", "ip").
func filterIPs(ips []netip.Addr, network string) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		ip = ip.Unmap()
		if network == "ip" || ip.Is4() == (network == "ip4") {
			out = append(out, ip)
		}
	}
	return out
}

// recordIPs records an address lookup as its A and AAAA parts. Resolvers
// give the answers of one type even when the other failed, so a type
// without answers is recorded only when the whole lookup failed; replayed,
// it answers NODATA, and the lookup gives the same addresses.
func (rec *Recorder) recordIPs(host, network string, ips []netip.Addr, err error) {
	if _, perr := netip.ParseAddr(host); perr == nil {
		return // an address answers itself
	}
	var types []string
	switch network {
	case "ip4":
		types = []string{recordedTypeA}
	case "ip6":
		types = []string{recordedTypeAAAA}
	default:
		types = []string{recordedTypeA, recordedTypeAAAA}
	}
	if len(ips) == 0 && err == nil {
		err = notFoundError(host, "no answer")
	}
	for _, t := range types {
		if len(ips) == 0 {
			rec.record(host, t, nil, err)
			continue
		}
		var vals []string
		for _, ip := range ips {
			if ip.Unmap().Is4() == (t == recordedTypeA) {
				vals = append(vals, ip.Unmap().String())
			}
		}
		if len(vals) > 0 {
			rec.record(host, t, vals, nil)
		}
	}
}
