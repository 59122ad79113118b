package bounce

import (
	"strings"
	"sync"
	"time"

	"github.com/mxdrop/mxdrop/importer"
)

// Limiter is a sliding-window rate limit of DSNs per sender: at most limit DSNs to
// one sender within any window. It is safe for concurrent use. Its memory holds one
// timestamp per DSN counted within the window.
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

func limiterKey(sender string) string {
	if n, ok := importer.NormalizeAddress(sender); ok {
		return n
	}
	return strings.ToLower(strings.TrimSpace(sender))
}

// Allow reports whether sender may get another DSN at now and, if so, counts it.
func (l *Limiter) Allow(sender string, now time.Time) bool {
	if l.limit <= 0 || l.window <= 0 {
		return true
	}
	k := limiterKey(sender)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%1024 == 0 {
		l.sweep(now)
	}
	recent := l.prune(l.hits[k], now)
	if len(recent) >= l.limit {
		l.hits[k] = recent
		return false
	}
	l.hits[k] = append(recent, now)
	return true
}

// Record counts a DSN to sender at t without checking the limit: how the Bouncer
// replays the outbox after a restart.
func (l *Limiter) Record(sender string, t time.Time) {
	if l.limit <= 0 || l.window <= 0 {
		return
	}
	k := limiterKey(sender)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hits[k] = append(l.hits[k], t)
}

// Forget takes back one DSN counted at t, when it was not queued after all.
func (l *Limiter) Forget(sender string, t time.Time) {
	k := limiterKey(sender)
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hits[k]
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Equal(t) {
			l.hits[k] = append(h[:i:i], h[i+1:]...)
			return
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
