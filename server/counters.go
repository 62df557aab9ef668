package server

import (
	"sync"
	"time"
)

// sendCounter counts relayed messages per key (the SMTP user, or the client
// address without AUTH) in one-minute buckets over the last 24 hours, for
// hourly_sent and daily_sent. It is in memory, per process: the shared,
// persistent store (embedded or Redis) replaces it.
type sendCounter struct {
	mu   sync.Mutex
	keys map[string]*minuteRing
}

// minuteRing holds counts for the 1440 minutes of the last day.
type minuteRing struct {
	counts [1440]uint32
	minute [1440]int64 // which minute each slot counts, to skip stale ones
	last   int64
}

func newSendCounter() *sendCounter { return &sendCounter{keys: map[string]*minuteRing{}} }

func (c *sendCounter) add(key string, now time.Time) {
	m := now.Unix() / 60
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.keys[key]
	if r == nil {
		r = &minuteRing{}
		c.keys[key] = r
	}
	i := m % 1440
	if r.minute[i] != m {
		r.minute[i], r.counts[i] = m, 0
	}
	r.counts[i]++
	r.last = m
	if len(c.keys) > 50000 {
		c.prune(m)
	}
}

// count is the number of messages counted in the window before now.
func (c *sendCounter) count(key string, window time.Duration, now time.Time) int {
	m := now.Unix() / 60
	minutes := int64(window / time.Minute)
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.keys[key]
	if r == nil {
		return 0
	}
	n := 0
	for i := range r.minute {
		if age := m - r.minute[i]; age >= 0 && age < minutes {
			n += int(r.counts[i])
		}
	}
	return n
}

func (c *sendCounter) prune(m int64) {
	for k, r := range c.keys {
		if m-r.last >= 1440 {
			delete(c.keys, k)
		}
	}
}
