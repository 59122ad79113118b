package importer

import (
	"context"
	"io"
	"strconv"
	"strings"
)

// Classifier decides whether a message is spam. It lives with its consumer, the
// importer; the spam package implements it (word table, blocked senders, spamd).
type Classifier interface {
	// Classify judges the message whose header is h; open returns a new reader of the
	// raw message from its first byte (the classifier closes it). An error means the
	// message could not be checked: the importer delivers it to the inbox marked
	// unchecked, so a failing filter never loses or holds mail.
	Classify(ctx context.Context, h *Header, env Envelope, open func() (io.ReadCloser, error)) (Verdict, error)
}

// Verdict is a classifier's judgement.
type Verdict struct {
	Spam   bool
	Score  float64 // spamd's score; 0 for the built-in rules
	Reason string  // which rule or test decided, safe to show in a header
}

// spamFields returns the header lines a copy gets for a verdict (RFC 5322 field syntax,
// one line each, without line ending). checked is false when the classifier failed.
func spamFields(v Verdict, checked bool, reason string) []string {
	clean := func(s string) string {
		s = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return ' '
			}
			return r
		}, s)
		if len(s) > 200 {
			s = s[:200]
		}
		return s
	}
	switch {
	case !checked:
		return []string{"X-Spam-Status: Unchecked, " + clean(reason)}
	case v.Spam:
		return []string{
			"X-Spam-Flag: YES",
			"X-Spam-Status: Yes, score=" + formatScore(v.Score) + " reason=" + clean(v.Reason),
		}
	default:
		return []string{"X-Spam-Status: No, score=" + formatScore(v.Score)}
	}
}

func formatScore(f float64) string {
	s := strings.TrimRight(strings.TrimRight(strconv.FormatFloat(f, 'f', 1, 64), "0"), ".")
	if s == "" || s == "-" {
		return "0"
	}
	return s
}
