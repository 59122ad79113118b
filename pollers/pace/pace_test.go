package pace

import (
	"errors"
	"os"
	"testing"
	"time"
)

// A server that keeps up MinRate, however it spreads its bytes, keeps the whole idle
// timeout; a stall as long as nearly the timeout is still allowed once.
func TestSteadyServerKeepsTheTimeout(t *testing.T) {
	c := New(time.Minute)
	for i := 0; i < 1000; i++ {
		// 16 KiB every second: far above MinRate.
		if d, budget := c.Wait(); budget || d != time.Minute {
			t.Fatalf("read %d may wait %v (budget %v), want the idle timeout", i, d, budget)
		}
		c.Read(time.Second, 16<<10, false, nil)
	}
	c.Read(59*time.Second, 64<<10, false, nil) // a long stall, then data again
	if d, _ := c.Wait(); d != time.Minute {
		t.Errorf("after a stall and 64 KiB the next read may wait %v, want 1m", d)
	}
}

// A server that sends a byte just before each idle timeout (every 59 s of a 1 m
// timeout) runs out of budget at its second byte's wait, not after max_message_size
// bytes.
func TestTricklingServerIsCutOff(t *testing.T) {
	c := New(time.Minute)
	var spent time.Duration
	for i := 0; ; i++ {
		d, budget := c.Wait()
		if d < 59*time.Second {
			// The read times out before the server's next byte.
			if !budget {
				t.Fatal("cut off, but not by the budget")
			}
			spent += d
			var slow *SlowError
			if err := c.Read(d, 0, budget, os.ErrDeadlineExceeded); !errors.As(err, &slow) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the timed-out read returned %v, want a *SlowError wrapping the deadline", err)
			}
			break
		}
		spent += 59 * time.Second
		c.Read(59*time.Second, 1, false, nil)
		if i > 10 {
			t.Fatalf("still reading after %d bytes (%v)", i, spent)
		}
	}
	if spent > 2*time.Minute {
		t.Errorf("cut off after %v, want within two idle timeouts", spent)
	}
}

// Half of MinRate drains the budget at half speed: cut off after about two timeouts.
func TestHalfRateIsCutOffAfterTwoTimeouts(t *testing.T) {
	c := New(10 * time.Second)
	var spent time.Duration
	for {
		d, _ := c.Wait()
		if d <= 0 {
			break
		}
		step := min(d, 100*time.Millisecond)
		spent += step
		c.Read(step, int(MinRate/2*step/time.Second), true, nil) // MinRate/2 bytes per second
		if spent > time.Minute {
			t.Fatal("never cut off")
		}
	}
	if spent < 19*time.Second || spent > 21*time.Second {
		t.Errorf("cut off after %v, want about 20s", spent)
	}
}
