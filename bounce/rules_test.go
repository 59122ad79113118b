package bounce

import (
	"strconv"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/importer"
)

func TestSuppress(t *testing.T) {
	const plain = "From: a@b.example\nSubject: hello\n\n"
	known := func(s string) importer.Envelope { return importer.Envelope{Sender: s, SenderKnown: true} }
	for _, tc := range []struct {
		name   string
		env    importer.Envelope
		header string
		want   string
	}{
		{"ordinary mail", known("alice@sender.example"), plain, ""},
		{"unknown sender", importer.Envelope{}, plain, RuleUnknownSender},
		{"recipients guessed from To/Cc", importer.Envelope{Sender: "alice@sender.example", SenderKnown: true, Guessed: true}, plain, RuleGuessedRecipients},
		{"null sender", known(""), plain, RuleNullSender},
		{"null sender in brackets", known("<>"), plain, RuleNullSender},
		{"sender without domain", known("alice"), plain, RuleInvalidSender},
		{"sender with space", known("a b@c.example"), plain, RuleInvalidSender},
		{"mailer-daemon", known("MAILER-DAEMON@mx.sender.example"), plain, RuleMailerDaemon},
		{"mailer-daemon lower case", known("mailer-daemon@mx.sender.example"), plain, RuleMailerDaemon},
		{"postmaster writing", known("postmaster@sender.example"), plain, ""},
		{"postmaster bounce by subject", known("postmaster@sender.example"), "Subject: Undeliverable: hello\n\n", RulePostmasterBounce},
		{"postmaster bounce, encoded German subject", known("Postmaster@sender.example"), "Subject: =?utf-8?q?Unzustellbar=3A_Hallo?=\n\n", RulePostmasterBounce},
		{"postmaster bounce by X-Failed-Recipients", known("postmaster@sender.example"), "X-Failed-Recipients: x@y\nSubject: x\n\n", RulePostmasterBounce},
		{"postmaster bounce by From", known("postmaster@sender.example"), "From: Mail Delivery System <MAILER-DAEMON@sender.example>\n\n", RulePostmasterBounce},
		{"postmaster report", known("postmaster@sender.example"), "Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n", RulePostmasterBounce},
		{"auto-submitted auto-replied", known("a@b.example"), "Auto-Submitted: auto-replied\n\n", RuleAutoSubmitted},
		{"auto-submitted auto-generated with comment", known("a@b.example"), "Auto-Submitted: Auto-Generated (cron)\n\n", RuleAutoSubmitted},
		{"auto-submitted no", known("a@b.example"), "Auto-Submitted: no\n\n", ""},
		{"auto-submitted no with parameter", known("a@b.example"), "Auto-Submitted: No; x=y (person)\n\n", ""},
		{"auto-submitted empty", known("a@b.example"), "Auto-Submitted:\n\n", RuleAutoSubmitted},
		{"auto-submitted below other fields", known("a@b.example"), "Subject: x\nReceived: y\nAuto-Submitted: auto-notified\n\n", RuleAutoSubmitted},
		{"x-auto-response-suppress all", known("a@b.example"), "X-Auto-Response-Suppress: All\n\n", RuleAutoResponseSuppress},
		{"x-auto-response-suppress ndr", known("a@b.example"), "X-Auto-Response-Suppress: DR, NDR\n\n", RuleAutoResponseSuppress},
		{"x-auto-response-suppress oof", known("a@b.example"), "X-Auto-Response-Suppress: OOF\n\n", ""},
		{"multipart/report dsn", known("a@b.example"), "Content-Type: multipart/report; report-type=delivery-status;\n boundary=\"b\"\n\n", RuleDeliveryReport},
		{"multipart/report mdn", known("a@b.example"), "Content-Type: Multipart/Report; report-type=disposition-notification; boundary=b\n\n", RuleDeliveryReport},
		{"report-type alone", known("a@b.example"), "Content-Type: multipart/mixed; report-type=delivery-status; boundary=b\n\n", RuleDeliveryReport},
		{"bare delivery-status", known("a@b.example"), "Content-Type: message/delivery-status\n\n", RuleDeliveryReport},
		{"malformed report content type", known("a@b.example"), "Content-Type: multipart/report; ;;boundary\n\n", RuleDeliveryReport},
		{"ordinary multipart", known("a@b.example"), "Content-Type: multipart/mixed; boundary=b\n\n", ""},
		{"precedence bulk", known("a@b.example"), "Precedence: bulk\n\n", RulePrecedence},
		{"precedence junk", known("a@b.example"), "Precedence: JUNK\n\n", RulePrecedence},
		{"precedence list", known("a@b.example"), "Precedence: list\n\n", RulePrecedence},
		{"precedence first-class", known("a@b.example"), "Precedence: first-class\n\n", ""},
		{"list mail without precedence", known("list-bounces+x=y@lists.example"), "List-Id: <l.lists.example>\nList-Unsubscribe: <mailto:u@lists.example>\n\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Suppress(tc.env, parseHeader(t, tc.header)); got != tc.want {
				t.Errorf("Suppress = %q, want %q", got, tc.want)
			}
		})
	}
	if got := Suppress(importer.Envelope{Sender: "a@b.example", SenderKnown: true}, nil); got != "" {
		t.Errorf("Suppress without header = %q", got)
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(2, time.Hour)
	for i, tc := range []struct {
		sender string
		at     time.Duration
		want   bool
	}{
		{"a@x.example", 0, true},
		{"A@X.example", time.Minute, true}, // the same sender, written differently
		{"a@x.example", 2 * time.Minute, false},
		{"b@x.example", 2 * time.Minute, true}, // another sender has its own budget
		{"a@x.example", 59 * time.Minute, false},
		{"a@x.example", time.Hour + time.Second, true}, // the first DSN left the window
		{"a@x.example", time.Hour + 2*time.Second, false},
	} {
		if got := l.Allow(tc.sender, t0.Add(tc.at)); got != tc.want {
			t.Errorf("step %d: Allow(%s, +%v) = %v, want %v", i, tc.sender, tc.at, got, tc.want)
		}
	}

	l = NewLimiter(1, time.Hour)
	if !l.Allow("a@x.example", t0) {
		t.Fatal("first DSN refused")
	}
	l.Forget("a@x.example", t0)
	if !l.Allow("a@x.example", t0) {
		t.Error("a forgotten DSN still counts")
	}
	l.Record("c@x.example", t0.Add(-30*time.Minute))
	if l.Allow("c@x.example", t0) {
		t.Error("a recorded DSN does not count")
	}

	off := NewLimiter(-1, time.Hour)
	for i := 0; i < 100; i++ {
		if !off.Allow("a@x.example", t0) {
			t.Fatal("a switched-off limit refused")
		}
	}

	// Memory follows the recent senders.
	l = NewLimiter(1, time.Minute)
	for i := 0; i < 2048; i++ {
		l.Allow(string(rune('a'+i%26))+time.Duration(i).String()+"@x.example", t0)
	}
	l.Allow("late@x.example", t0.Add(time.Hour))
	for i := 0; i < 1024; i++ {
		l.Allow("late@x.example", t0.Add(time.Hour))
	}
	// One sender, its domain and the global count.
	if n := len(l.hits); n > 3 {
		t.Errorf("%d keys kept after the window passed", n)
	}
}

// TestLimiterTagsAndCaps: +tag variants of a sender share its count, and the
// per-domain and global caps stop a flood of distinct forged senders.
func TestLimiterTagsAndCaps(t *testing.T) {
	l := NewLimiter(2, time.Hour)
	allowed := 0
	for i := 0; i < 20; i++ {
		if l.Allow("v20+"+strconv.Itoa(i)+"@x.example", t0) {
			allowed++
		}
	}
	if allowed != 2 {
		t.Errorf("+tag variants of one sender got %d DSNs, want 2", allowed)
	}
	if !l.Allow(`"v20+q"@x.example`, t0) {
		t.Error("a quoted local part with + was counted as a +tag of another sender")
	}

	l = NewLimiter(2, time.Hour)
	allowed = 0
	for i := 0; i < 100; i++ {
		if l.Allow("s"+strconv.Itoa(i)+"@flood.example", t0) {
			allowed++
		}
	}
	if want := 2 * DomainFactor; allowed != want {
		t.Errorf("distinct senders of one domain got %d DSNs, want the domain cap %d", allowed, want)
	}

	l = NewLimiter(1, time.Hour)
	allowed = 0
	for i := 0; i < 1000; i++ {
		if l.Allow("s@d"+strconv.Itoa(i)+".example", t0) {
			allowed++
		}
	}
	if want := GlobalFactor; allowed != want {
		t.Errorf("distinct domains got %d DSNs, want the global cap %d", allowed, want)
	}
}
