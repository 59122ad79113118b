package bounce

import (
	"strings"
	"sync"
	"time"

	"github.com/mxdrop/mxdrop/importer/address"
)

// Limiter is a sliding-window rate limit of DSNs: at most limit DSNs to one sender
// within any window, at most DomainFactor*limit to one sender domain and at most
// GlobalFactor*limit in all. A sender is counted by its normalised address without
// its +tag, so "v+a@x" and "v+b@x" share one count: a forged sender cannot escape the
// limit by varying its tag, nor a forged domain by varying its local parts. It is safe
// for concurrent use. Its memory holds one timestamp per DSN and key within the window.
//
// The Limiter itself lives in memory. The Bouncer seeds it at start-up from the
// outbox, whose queued, sent and failed records carry sender and time, so the limit
// holds across restarts without a state file of its own.
type Limiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	hits   map[string][]time.Time
	calls  int
}

// NewLimiter returns a Limiter of limit DSNs per window; limit <= 0 or window <= 0
// allows everything.
func NewLimiter(limit int, window time.Duration) *Limiter {
	return &Limiter{limit: limit, window: window, hits: map[string][]time.Time{}}
}

// The per-domain and global caps, as multiples of the per-sender limit.
const (
	DomainFactor = 10
	GlobalFactor = 100
)

// globalKey counts every DSN; domain keys start with "@", which no sender key does.
const globalKey = "*"

// limiterKeys returns the keys a DSN to sender counts under, with their limits: the
// sender without its +tag, its domain, and the global key.
func (l *Limiter) limiterKeys(sender string) [3]string {
	n, ok := address.Normalize(sender)
	if !ok {
		n = strings.ToLower(strings.TrimSpace(sender))
	}
	local, domain := n, ""
	if at := strings.LastIndexByte(n, '@'); at >= 0 {
		local, domain = n[:at], n[at+1:]
	}
	return [3]string{address.Untagged(local) + "@" + domain, "@" + domain, globalKey}
}

func (l *Limiter) limitOf(i int) int {
	switch i {
	case 0:
		return l.limit
	case 1:
		return l.limit * DomainFactor
	}
	return l.limit * GlobalFactor
}

// Allow reports whether sender may get another DSN at now and, if so, counts it.
func (l *Limiter) Allow(sender string, now time.Time) bool {
	if l.limit <= 0 || l.window <= 0 {
		return true
	}
	keys := l.limiterKeys(sender)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%1024 == 0 {
		l.sweep(now)
	}
	allow := true
	for i, k := range keys {
		recent := l.prune(l.hits[k], now)
		l.hits[k] = recent
		if len(recent) >= l.limitOf(i) {
			allow = false
		}
	}
	if !allow {
		return false
	}
	for _, k := range keys {
		l.hits[k] = append(l.hits[k], now)
	}
	return true
}

// Record counts a DSN to sender at t without checking the limit: how the Bouncer
// replays the outbox after a restart.
func (l *Limiter) Record(sender string, t time.Time) {
	if l.limit <= 0 || l.window <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.limiterKeys(sender) {
		l.hits[k] = append(l.hits[k], t)
	}
}

// Forget takes back one DSN counted at t, when it was not queued after all.
func (l *Limiter) Forget(sender string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.limiterKeys(sender) {
		h := l.hits[k]
		for i := len(h) - 1; i >= 0; i-- {
			if h[i].Equal(t) {
				l.hits[k] = append(h[:i:i], h[i+1:]...)
				break
			}
		}
	}
}

// prune returns the hits within the window before now.
func (l *Limiter) prune(h []time.Time, now time.Time) []time.Time {
	from := now.Add(-l.window)
	out := h[:0]
	for _, t := range h {
		if t.After(from) {
			out = append(out, t)
		}
	}
	return out
}

// sweep drops senders without a hit in the window, so memory follows the senders
// seen recently rather than all senders ever seen.
func (l *Limiter) sweep(now time.Time) {
	for k, h := range l.hits {
		if h = l.prune(h, now); len(h) == 0 {
			delete(l.hits, k)
		} else {
			l.hits[k] = h
		}
	}
}
