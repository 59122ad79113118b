package importer

import (
	"time"

	"github.com/rs/zerolog"
)

// LogResult emits the one event of a message's import with the field names of the log
// contract: file, message_id, from, recipients, accounts, failed, outcome, reason,
// size, duration_ms; linked when the delivery was the message's own file, hard linked
// (Delivery.Linked). action says what the source did with the message afterwards
// (removed, kept, quarantined, retry). err is a transient import error, or nil.
func LogResult(l zerolog.Logger, msg Message, res Result, action string, err error, start time.Time) {
	var ev *zerolog.Event
	switch {
	case err != nil:
		ev = l.Warn().Err(err).Str("outcome", "retry")
	case res.Outcome == OutcomeDelivered:
		ev = l.Info().Str("outcome", string(res.Outcome))
	default:
		ev = l.Warn().Str("outcome", string(res.Outcome))
	}
	ev = ev.Str("file", msg.Name).
		Str("message_id", res.MessageID).
		Str("from", res.Envelope.Sender).
		Strs("recipients", res.Envelope.Recipients).
		Str("envelope_source", res.Envelope.Source).
		Strs("accounts", res.SortedAccounts()).
		Int64("size", res.Size).
		Int64("duration_ms", time.Since(start).Milliseconds()).
		Str("action", action)
	if len(res.Failed) > 0 {
		ev = ev.Strs("failed", res.FailedRecipients())
	}
	if len(res.Ignored) > 0 {
		ev = ev.Strs("ignored", res.Ignored)
	}
	if res.Reason != "" {
		ev = ev.Str("reason", res.Reason)
	}
	if res.Spam != nil {
		switch {
		case !res.Spam.Checked:
			ev = ev.Str("spam", "unchecked").Str("spam_reason", res.Spam.Reason)
		case res.Spam.Spam:
			ev = ev.Str("spam", "yes").Str("spam_reason", res.Spam.Reason)
		default:
			ev = ev.Str("spam", "no")
		}
	}
	if res.Linked() {
		ev = ev.Bool("linked", true)
	}
	if res.Envelope.Guessed {
		ev = ev.Bool("recipients_guessed", true)
	}
	ev.Msg("message")
}
