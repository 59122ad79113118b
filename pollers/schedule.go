package pollers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

const (
	// jitterFraction spreads cycles of pollers with the same interval: each wait is the
	// nominal one ±10%.
	jitterFraction = 0.1
	// backoffFirstMax caps the first wait after a failure: a short outage is retried
	// soon, even with a long interval.
	backoffFirstMax = 30 * time.Second
	// backoffMax caps the wait after repeated failures (unless the interval is longer).
	backoffMax = time.Hour
	// idleRenew is the longest IDLE wait before the poller leaves IDLE, runs a cycle and
	// enters IDLE again: below the 29 minutes after which servers may drop an idle
	// client (RFC 2177 section 3), and a full cycle at least this often covers folders
	// that are not watched by IDLE.
	idleRenew = 25 * time.Minute
	// idleMinGap is the least time between the starts of two cycles that IDLE
	// triggers: a server that reported changes after every command could otherwise keep
	// a poller cycling without pause.
	idleMinGap = time.Second
	// startSpreadMax caps the random delay before a poller's first cycle, so that many
	// pollers do not all connect in the same instant at start-up.
	startSpreadMax = 2 * time.Second
)

// nextWait returns how long a poller waits before its next cycle. After a success
// (failures 0) it is interval; after the nth failure in a row it is
// min(interval, 30s)·2^(n-1), capped at max(interval, 1h). Either is varied by ±10%
// with r, a random number in [0, 1).
func nextWait(interval time.Duration, failures int, r float64) time.Duration {
	if interval <= 0 {
		interval = time.Minute
	}
	d := interval
	if failures > 0 {
		d = min(interval, backoffFirstMax)
		limit := max(interval, backoffMax)
		for i := 1; i < failures && d < limit; i++ {
			d *= 2
		}
		d = min(d, limit)
	}
	return jitter(d, r)
}

// jitter varies d by ±jitterFraction with r in [0, 1).
func jitter(d time.Duration, r float64) time.Duration {
	return time.Duration(float64(d) * (1 + jitterFraction*(2*r-1)))
}

// startDelay is the random delay before a poller's first cycle.
func startDelay(interval time.Duration, r float64) time.Duration {
	return time.Duration(float64(min(interval/10, startSpreadMax)) * r)
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Run polls until ctx is done: a first cycle after a short random delay, then one
// cycle per interval (±10%), or, for an IMAP poller with idle: true on a server that
// offers IDLE, one connection that waits in IDLE on the first folder and runs a cycle
// whenever the server reports new mail, and at least every interval (at most 25
// minutes). After a failure it waits with exponential backoff (see nextWait); a cycle
// in which only some folders failed (FolderErrors) is not a failure for that. Every
// cycle is logged; Run itself returns nil once ctx is done, and returns at once for
// an inactive poller. A panic in a cycle is recovered, logged and counted as a
// failure.
func (p *Poller) Run(ctx context.Context) error {
	if !p.Active() {
		return nil
	}
	wait := startDelay(p.cfg.Interval.D(), rand.Float64())
	failures := 0
	for sleep(ctx, wait) {
		progressed, err := p.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		failures = countFailures(failures, progressed, err)
		wait = nextWait(p.cfg.Interval.D(), failures, rand.Float64())
		if err != nil {
			p.log.Debug().Int("failures", failures).Dur("retry_in", wait).Msg("backing off")
		}
	}
	return nil
}

// countFailures returns the failures in a row after a cycle (or IDLE session) that
// ended with err, given the count before: none after a success or a cycle in which only
// some folders failed; one after an IDLE session that made progress before its error,
// since a long session's end starts the backoff afresh; one more otherwise.
func countFailures(before int, progressed bool, err error) int {
	var partial *FolderErrors
	switch {
	case err == nil, errors.As(err, &partial):
		return 0
	case progressed:
		return 1
	}
	return before + 1
}

// runOnce runs one cycle, or one IDLE session of many cycles. progressed reports that
// at least one cycle succeeded.
func (p *Poller) runOnce(ctx context.Context) (progressed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			p.log.Error().Str("panic", fmt.Sprint(r)).Msg("poller cycle panicked")
		}
	}()
	if p.cfg.Protocol == "imap" && p.cfg.IDLEEnabled() {
		return p.runIdle(ctx)
	}
	_, err = p.Cycle(ctx)
	return err == nil, err
}

// runIdle keeps one IMAP connection: a cycle, then IDLE until new mail or the
// interval, then a cycle again. It returns when the connection or a cycle fails (not
// just some of its folders: FolderErrors), or
// after one cycle when the server has no IDLE (Run then polls by interval).
func (p *Poller) runIdle(ctx context.Context) (progressed bool, err error) {
	start := time.Now()
	sess, err := p.connect(ctx)
	if err != nil {
		p.logCycle(CycleStats{Poller: p.name, Errors: 1, Duration: time.Since(start)}, err)
		return false, err
	}
	defer sess.close()
	id, ok := sess.(idler)
	if ok && !id.canIdle() {
		if !p.noIdleLogged {
			p.noIdleLogged = true
			p.log.Info().Msg("server does not offer IDLE; polling every interval")
		}
		ok = false
	}
	for {
		if _, err := p.cycleLocked(ctx, sess, start); err != nil {
			var partial *FolderErrors
			if !errors.As(err, &partial) {
				return progressed, err
			}
			// Some folders failed (logged with the cycle): IDLE goes on.
		}
		progressed = true
		if !ok {
			return true, nil
		}
		wait := min(jitter(p.cfg.Interval.D(), rand.Float64()), idleRenew)
		newMail, err := id.idle(ctx, wait)
		if err != nil {
			if ctx.Err() == nil {
				ev := p.log.Warn().Err(err)
				if replyTooLarge(err) {
					ev = ev.Str("reason", "server_reply_too_large").Str("host", p.cfg.Host)
				}
				ev.Msg("idle failed; reconnecting")
			}
			return progressed, err
		}
		if newMail {
			p.log.Debug().Msg("idle: new mail")
			if !sleep(ctx, idleMinGap-time.Since(start)) {
				return progressed, nil
			}
		}
		start = time.Now()
	}
}

// RunAll runs every active poller of ps, each in its own goroutine on its own
// schedule, so that a failing or slow account never delays another, until ctx is done.
// It returns nil after every poller has stopped.
func RunAll(ctx context.Context, ps []*Poller) error {
	var wg sync.WaitGroup
	for _, p := range ps {
		if p == nil || !p.Active() {
			continue
		}
		wg.Go(func() { p.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// Once runs one cycle of every active poller of ps, concurrently, and returns their
// statistics in the order of ps (inactive pollers are left out) and the errors of the
// cycles that failed, joined, each prefixed with the poller's name. It is
// `mxdrop run --once`.
func Once(ctx context.Context, ps []*Poller) ([]CycleStats, error) {
	var active []*Poller
	for _, p := range ps {
		if p != nil && p.Active() {
			active = append(active, p)
		}
	}
	stats := make([]CycleStats, len(active))
	errs := make([]error, len(active))
	var wg sync.WaitGroup
	for i, p := range active {
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					errs[i] = fmt.Errorf("poller %s: panic: %v", p.name, r)
				}
			}()
			st, err := p.Cycle(ctx)
			stats[i] = st
			if err != nil {
				errs[i] = fmt.Errorf("poller %s: %w", p.name, err)
			}
		})
	}
	wg.Wait()
	return stats, errors.Join(errs...)
}
