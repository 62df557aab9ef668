// Package store keeps the relay's state that outlives a message: sliding
// window counters (hourly_sent, daily_sent, any rule's counts), dynamic
// lists (bounces, unsubscribes, blocked, per-account lists) with reason,
// source, time and optional expiry, and records (decisions, holding-area
// metadata) with a time to live.
//
// Two implementations pass one contract suite (contract_test.go):
//
//   - Embedded, on Pebble (github.com/cockroachdb/pebble/v2), the default:
//     no server to run. Pebble was chosen over bbolt and SQLite because the
//     hot path is one small read-modify-write per message: an LSM with a
//     write-ahead log takes such writes at memory speed without an fsync
//     each (counters are written without sync: a process crash loses
//     nothing, an OS crash at most the last moments, and the log's
//     checksums never let a torn write corrupt the store), while list
//     changes, which operators make, are synced. bbolt would need an fsync
//     per transaction (about 1,500/s here) or its unsafe NoSync mode, and
//     SQLite would bring cgo or a transpiled engine for the same result.
//   - Redis (github.com/redis/go-redis/v9), for several relay nodes sharing
//     one limit: each counter is one hash updated and read by one Lua
//     script call, keys are hash-tagged so everything works on Redis
//     Cluster.
//
// Counters have one-minute resolution: a window of an hour counts the
// events of the current minute and the 59 before it, sliding every
// minute, so a burst at 10:59 still counts at 11:00 (no double burst at a
// fixed window's edge). Counters keep 24 hours of history.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Store is the state shared by the relay's sessions (and, on Redis, by
// several relays).
type Store interface {
	// Count adds n (0: nothing) events to each key at now, then returns
	// for each key the number of events in each window ending at now.
	// One call per message does the update and the read (one round trip
	// on Redis, pipelined over the keys).
	Count(ctx context.Context, now time.Time, n int, keys []string, windows []time.Duration) ([][]int, error)

	// Distinct records member under key at now (unless member is "") and
	// returns how many distinct members key saw within window, e.g. the
	// sender addresses one SMTP user used in the last hour.
	Distinct(ctx context.Context, now time.Time, key, member string, window time.Duration) (int, error)

	// ListAdd puts an entry on a list, replacing one with the same key.
	ListAdd(ctx context.Context, e Entry) error
	// ListRemove takes a key off a list; it reports whether it was there.
	ListRemove(ctx context.Context, list, key string) (bool, error)
	// ListGet returns the live entry for key, nil if absent or expired.
	ListGet(ctx context.Context, list, key string, now time.Time) (*Entry, error)
	// ListEntries returns the live entries of a list, sorted by key.
	ListEntries(ctx context.Context, list string, now time.Time) ([]Entry, error)

	// Put stores a record (a decision, a held message's metadata) for ttl
	// (0: for good); Get returns nil for an absent or expired record.
	Put(ctx context.Context, kind, id string, data []byte, ttl time.Duration) error
	Get(ctx context.Context, kind, id string) ([]byte, error)

	Indexer

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	Close() error
}

// Entry is one key on a dynamic list.
type Entry struct {
	List    string    `json:"list"`
	Key     string    `json:"key"`
	Reason  string    `json:"reason,omitempty"`
	Source  string    `json:"source,omitempty"` // who put it there: an operator, a rule, a bounce, a complaint
	Added   time.Time `json:"added"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
}

// Live reports whether the entry has not expired at now.
func (e *Entry) Live(now time.Time) bool { return e.Expires.IsZero() || now.Before(e.Expires) }

// NormalizeKey is how list keys and counter keys compare: addresses and
// domains are case-insensitive, angle brackets and spaces are dropped.
func NormalizeKey(k string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(k), "<>"))
}

// ErrUnavailable wraps every error of a store that cannot be reached, so
// the relay can apply its failure policy.
var ErrUnavailable = errors.New("store unavailable")

// History is how long counters keep events: the longest window.
const History = 24 * time.Hour

func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

func windowMinutes(w time.Duration) int64 {
	m := int64((w + time.Minute - 1) / time.Minute)
	return max(1, min(m, int64(History/time.Minute)))
}

// encodeEntry checks and serializes an entry for ListAdd; it returns the
// normalized key.
func encodeEntry(e Entry) (string, []byte, error) {
	if err := checkList(e.List, e.Key); err != nil {
		return "", nil, err
	}
	e.Key = NormalizeKey(e.Key)
	b, err := json.Marshal(e)
	return e.Key, b, err
}

// decodeEntry reads a stored entry.
func decodeEntry(list, key string, v []byte) (*Entry, error) {
	e := &Entry{}
	if err := json.Unmarshal(v, e); err != nil {
		return nil, fmt.Errorf("store: list %s key %s: %w", list, key, err)
	}
	return e, nil
}

func checkList(list, key string) error {
	if list == "" || strings.ContainsRune(list, 0) {
		return errors.New("store: a list needs a name without NUL")
	}
	if key == "" {
		return errors.New("store: an empty key")
	}
	return nil
}

// IndexEntry is one line of an index: a small summary of a record (never
// message content) by time, so that records, which the store cannot list,
// can be searched.
type IndexEntry struct {
	At   time.Time `json:"at"`
	ID   string    `json:"id"`
	Data []byte    `json:"data,omitempty"`
}

// Indexer is a store that keeps capped, time-ordered indexes: append-only
// logs of small entries, trimmed by count and by age, shared (on Redis)
// by every relay using the store.
type Indexer interface {
	// IndexAdd appends e to the index name, then drops entries older
	// than e.At-maxAge and the oldest beyond the newest max. The
	// embedded store trims in batches: it may keep as few as
	// max-max/100 entries after a trim, never more than max.
	IndexAdd(ctx context.Context, name string, e IndexEntry, max int, maxAge time.Duration) error
	// IndexScan calls fn with the entries of name whose time is within
	// [from, to] (a zero bound is open), newest first, until fn returns
	// false.
	IndexScan(ctx context.Context, name string, from, to time.Time, fn func(IndexEntry) bool) error
}

// indexKeep is how many entries survive a count trim of an index capped at
// max (see Indexer.IndexAdd).
func indexKeep(max int) int { return max - max/100 }
