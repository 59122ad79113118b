// Package spam judges messages for the importer: it implements importer.Classifier with
// the rules of the configuration's spam block and, optionally, SpamAssassin's spamd.
//
// The rules run cheapest first, and the first that fires decides:
//
//  1. Blocked senders (blocked_senders, blocked_senders_file): the envelope sender,
//     then every From address, against addresses and @domain entries. An @domain entry
//     blocks the domain and all its subdomains (@bad.example blocks mx1.bad.example,
//     not notbad.example): spammers rotate host names below a domain they own.
//     Comparison is case-insensitive and IDN-aware (importer.NormalizeAddress).
//  2. The word table (words, words_file), in the decoded Subject and then in the
//     decoded text of the body (see below). Entries are whole words or phrases,
//     case-insensitive.
//  3. spamd, when configured, over the spamc protocol; only asked when 1 and 2 did not
//     fire.
//
// A hit of rules 1 or 2 is a Verdict with Spam set, Score 0 (the importer's contract:
// the score is spamd's; the X-Spam-Flag: YES field is what marks the copy) and a
// Reason naming the rule: `blocked sender spam@bad.example (From)` or
// `word "viagra" in subject`. A spamd verdict carries spamd's score and a Reason with
// the score, the threshold and the SpamAssassin tests that hit. When spamd cannot judge
// a message (refused, timed out, a malformed answer), Classify returns a *SpamdError
// and the importer delivers the message to the inbox marked unchecked.
//
// # Words
//
// A word is a run of letters, digits and combining marks; everything else separates
// words, except invisible format characters (soft hyphen, zero-width space), which are
// skipped. An entry matches whole words only: "viagra" matches "Viagra", "VIAGRA" and
// "viagra's" but not "viagras" or "aviagra". An entry of several words ("buy now")
// matches those words in a row, whatever separates them. Letters are compared after
// simple case folding: "STRASSE" does not match "straße", nor a decomposed "é" (e and
// a combining accent) a precomposed one.
//
// The body scan streams the message and holds no more of it in memory than a few
// fixed buffers (a 64 KiB line, a part header of up to 64 KiB): it follows multipart
// nesting (MaxDepth), decodes base64 and quoted-printable, converts any charset
// go-message knows to UTF-8 (an unknown charset is logged as a warning and the text
// scanned as it is), and scans text/plain and text/html parts that are not
// attachments, HTML as a browser shows it (tags, comments, scripts and styles removed,
// character references decoded). Attachments (a Content-Disposition of attachment or a
// file name), other media types, forwarded messages, and the preamble and epilogue of
// multiparts are skipped. At most MaxPartText bytes of decoded text per part and
// MaxMessageText per message are scanned, in at most MaxParts parts.
//
// # spamd
//
// The raw message goes to spamd as it arrived, with the spamc protocol's SYMBOLS
// command (SPAMC/1.5, Content-length from the body scan or a measurement, never from
// buffering the message); spamd_timeout (DefaultSpamdTimeout) bounds connecting,
// sending and the answer together. A message larger than MaxSpamdSize is not sent,
// as spamc does not send it, and is judged by rules 1 and 2 alone.
//
// A Checker is built from one configuration and never changes; a configuration reload
// builds a new one, which reads words_file and blocked_senders_file again.
package spam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// Checker is the spam check of one configuration. It is safe for concurrent use.
type Checker struct {
	words   *wordTable
	senders *senderList
	spamd   *spamdClient // nil without spamd
	log     zerolog.Logger
	bufs    sync.Pool // *scanBuffers

	checked, spam, unchecked        atomic.Uint64
	bySender, byWord, bySpamd       atomic.Uint64
	spamdChecked, spamdSkipped      atomic.Uint64
	unknownCharsets, truncatedScans atomic.Uint64
}

var _ importer.Classifier = (*Checker)(nil)

// New builds a Checker from cfg: the inline words and blocked senders, the entries of
// words_file and blocked_senders_file (read now: one entry a line, '#' comments and
// blank lines ignored), and spamd's address and timeout (DefaultSpamdTimeout when
// cfg.SpamdTimeout is 0). It returns an error naming the configuration key and the
// entry, or the file and line, of the first entry it cannot use, or a file it cannot
// read. log receives the Checker's events with component=spam.
func New(cfg configs.Spam, log zerolog.Logger) (*Checker, error) {
	c := &Checker{
		words:   newWordTable(),
		senders: newSenderList(),
		log:     log.With().Str("component", "spam").Logger(),
	}
	if err := loadList("spam.words", cfg.Words, "spam.words_file", cfg.WordsFile, c.words.add); err != nil {
		return nil, err
	}
	if err := loadList("spam.blocked_senders", cfg.BlockedSenders, "spam.blocked_senders_file", cfg.BlockedSendersFile, c.senders.add); err != nil {
		return nil, err
	}
	c.bufs.New = func() any { return newScanBuffers(c.words) }
	if cfg.Spamd != "" {
		t := cfg.SpamdTimeout.D()
		if t <= 0 {
			t = DefaultSpamdTimeout
		}
		c.spamd = &spamdClient{addr: cfg.Spamd, timeout: t}
	}
	return c, nil
}

// Classify implements importer.Classifier: it applies the rules in the order of the
// package documentation and returns the first verdict. It opens the message through
// open at most three times (the body scan; with spamd, a measurement of its size when
// no scan read it to the end, by Stat when it is a file; sending it to spamd) and
// closes what open returns. It
// returns an error when the message could not be checked: a *SpamdError when spamd
// failed, another error when the message could not be read or ctx ended. A failure is
// logged here (warn, with its cause); a verdict only at debug level, since the
// importer logs the message's outcome.
func (c *Checker) Classify(ctx context.Context, h *importer.Header, env importer.Envelope, open func() (io.ReadCloser, error)) (importer.Verdict, error) {
	start := time.Now()
	msgID, _ := h.Get("message-id")
	v, rule, err := c.classify(ctx, h, env, open, msgID)
	if err != nil {
		c.unchecked.Add(1)
		ev := c.log.Warn().Str("message_id", msgID).Str("outcome", "unchecked").
			Int64("duration_ms", time.Since(start).Milliseconds())
		var se *SpamdError
		if errors.As(err, &se) {
			ev = ev.Str("spamd", c.spamd.addr).Str("stage", se.Stage).Err(se.Err)
		} else {
			ev = ev.Err(err)
		}
		ev.Msg("spam check failed; the message goes to the inbox unchecked")
		return importer.Verdict{}, err
	}
	c.checked.Add(1)
	// Debug: the importer logs the message's one event, with the verdict.
	outcome := "clean"
	if v.Spam {
		c.spam.Add(1)
		switch rule {
		case "sender":
			c.bySender.Add(1)
		case "word":
			c.byWord.Add(1)
		case "spamd":
			c.bySpamd.Add(1)
		}
		outcome = "spam"
	}
	c.log.Debug().Str("message_id", msgID).Str("outcome", outcome).Str("rule", rule).
		Str("reason", v.Reason).Float64("score", v.Score).
		Int64("duration_ms", time.Since(start).Milliseconds()).Msg("spam check")
	return v, nil
}

// classify returns the verdict and the kind of rule that decided it (sender, word,
// spamd; "" for a clean message).
func (c *Checker) classify(ctx context.Context, h *importer.Header, env importer.Envelope, open func() (io.ReadCloser, error), msgID string) (importer.Verdict, string, error) {
	if r := c.senders.check(h, env); r != "" {
		return importer.Verdict{Spam: true, Reason: r}, "sender", nil
	}
	size := int64(-1)
	if !c.words.empty() {
		if subj, ok := h.Get("subject"); ok {
			if e := c.scanSubject(subj, msgID); e != "" {
				return importer.Verdict{Spam: true, Reason: "word " + quoteEntry(e) + " in subject"}, "word", nil
			}
		}
		e, n, err := c.scanBody(ctx, h, open, msgID)
		if err != nil {
			return importer.Verdict{}, "", err
		}
		if e != "" {
			return importer.Verdict{Spam: true, Reason: "word " + quoteEntry(e) + " in body"}, "word", nil
		}
		size = n
	}
	if c.spamd == nil {
		return importer.Verdict{}, "", nil
	}
	if size < 0 {
		n, err := messageSize(open)
		if err != nil {
			return importer.Verdict{}, "", err
		}
		size = n
	}
	if size > MaxSpamdSize {
		c.spamdSkipped.Add(1)
		c.log.Debug().Str("message_id", msgID).Int64("size", size).Msg("message larger than MaxSpamdSize: not sent to spamd")
		return importer.Verdict{}, "", nil
	}
	res, err := c.spamd.check(ctx, open, size)
	if err != nil {
		return importer.Verdict{}, "", err
	}
	c.spamdChecked.Add(1)
	rule := ""
	if res.spam {
		rule = "spamd"
	}
	return importer.Verdict{Spam: res.spam, Score: res.score, Reason: res.reason()}, rule, nil
}

// scanSubject returns the table entry found in the decoded Subject, "" if none.
func (c *Checker) scanSubject(subj, msgID string) string {
	dec := *headerDecoder
	dec.CharsetReader = lenientCharset(func(name string) { c.unknownCharset(msgID, "subject", name) })
	text, err := dec.DecodeHeader(subj)
	if err != nil {
		text = subj // not reached with a lenient charset reader; the raw value is still text
	}
	sc := newTextScanner(c.words)
	sc.reset(false)
	sc.writeString(text)
	return sc.end()
}

// scanBody scans the text parts of the message for the word table. It returns the entry
// found, "" if none, and the size of the message when it read it to the end (-1 when it
// stopped early). An error means the message could not be read, or ctx ended.
func (c *Checker) scanBody(ctx context.Context, h *importer.Header, open func() (io.ReadCloser, error), msgID string) (string, int64, error) {
	rc, err := open()
	if err != nil {
		return "", -1, fmt.Errorf("open message: %w", err)
	}
	defer rc.Close()
	src := &countingReader{r: rc}
	io.CopyN(io.Discard, src, h.Size) // the header block: h has it already
	bufs := c.bufs.Get().(*scanBuffers)
	defer func() {
		bufs.br.Reset(nil) // drop the references to the message
		bufs.qp.Reset(nil)
		c.bufs.Put(bufs)
	}()
	w := newWalker(ctx, src, bufs, func(name string) { c.unknownCharset(msgID, "body", name) })
	if src.err == nil {
		w.entity(topHeader(h), 0)
	}
	switch {
	case src.err != nil:
		return "", -1, fmt.Errorf("read message: %w", src.err)
	case w.found != "":
		return w.found, -1, nil
	case ctx.Err() != nil:
		return "", -1, ctx.Err()
	}
	if w.limited || w.truncated {
		c.truncatedScans.Add(1)
		c.log.Debug().Str("message_id", msgID).Int("parts", w.parts).Int64("text_bytes", w.text).
			Msg("body scan cut at a bound; the rest of the text is not scanned")
	}
	if !w.eof {
		return "", -1, nil
	}
	return "", src.n, nil
}

func (c *Checker) unknownCharset(msgID, where, name string) {
	c.unknownCharsets.Add(1)
	c.log.Warn().Str("message_id", msgID).Str("charset", name).Str("where", where).
		Msg("unknown charset: text scanned undecoded")
}

// countingReader counts the bytes read and records an error other than io.EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// Counts are a Checker's counters since New: totals for metrics. Every Classify call
// adds one to Checked (a verdict) or to Unchecked (an error); Spam counts the spam
// verdicts among Checked, split by rule into BySender, ByWord and BySpamd.
type Counts struct {
	Checked, Spam, Unchecked  uint64
	BySender, ByWord, BySpamd uint64
	// SpamdChecked counts spamd's answers; SpamdSkipped the messages larger than
	// MaxSpamdSize that were not sent.
	SpamdChecked, SpamdSkipped uint64
	// UnknownCharsets counts texts scanned undecoded; TruncatedScans the body scans
	// cut at a bound (MaxPartText, MaxMessageText, MaxParts).
	UnknownCharsets, TruncatedScans uint64
}

// Counts returns the counters. Each is read atomically, not all at one instant, so
// a snapshot taken during a check may be off by that check. A reload builds a new
// Checker whose counters start at zero: a metrics exporter adds the old Checker's
// last counts to its own totals.
func (c *Checker) Counts() Counts {
	return Counts{
		Checked: c.checked.Load(), Spam: c.spam.Load(), Unchecked: c.unchecked.Load(),
		BySender: c.bySender.Load(), ByWord: c.byWord.Load(), BySpamd: c.bySpamd.Load(),
		SpamdChecked: c.spamdChecked.Load(), SpamdSkipped: c.spamdSkipped.Load(),
		UnknownCharsets: c.unknownCharsets.Load(), TruncatedScans: c.truncatedScans.Load(),
	}
}
