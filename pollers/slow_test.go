package pollers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/pollers/pace"
)

// TestPOP3TrickleCutOff: a server that sends a message a line at a time, each just
// before the idle timeout would end the read, no longer holds the poller until
// max_message_size: the cycle ends within a few idle timeouts, logged with reason
// server_too_slow; nothing is delivered, kept in the spool or deleted. The next cycle,
// the server behaving, delivers the message and deletes it.
func TestPOP3TrickleCutOff(t *testing.T) {
	const timeout = time.Second
	data := message("slow@x")
	srv := newFakePOP3(t, func(session int) []fakeMsg {
		m := fakeMsg{uid: "slow", data: data}
		if session == 1 {
			m.trickle = timeout * 6 / 10
		}
		return []fakeMsg{m}
	})
	e := newEnv(t, "alice@example.com")
	pc := srv.config()
	pc.Timeout = configs.Duration(timeout)
	p := e.poller(pc)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := p.Cycle(ctx)
	var slow *pace.SlowError
	if !errors.As(err, &slow) {
		t.Fatalf("cycle error %v, want a *pace.SlowError", err)
	}
	if d := time.Since(start); d > 6*timeout {
		t.Errorf("cycle took %v, want within a few idle timeouts", d)
	}
	if log := e.log.String(); !strings.Contains(log, `"reason":"server_too_slow"`) {
		t.Errorf("the cut is not logged with its reason:\n%s", log)
	}
	if s := srv.session(1); strings.Contains(s, "DELE") {
		t.Errorf("session deleted: %s", s)
	}
	e.wantDelivered("alice@example.com")
	checkSpoolEmpty(t, p)

	e.cycle(p)
	e.wantDelivered("alice@example.com", "<slow@x>")
	if got := srv.removedUIDs(); len(got) != 1 || got[0] != "slow" {
		t.Errorf("removed %v after the second cycle, want [slow]", got)
	}
}
