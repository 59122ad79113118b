package importer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// A Target is a mail server that takes deliveries (LMTP, RFC 2033): one transaction
// per message for all its recipients, one answer per recipient. Its user database,
// Sieve rules, quotas and indexes are the server's. Package importer/lmtp implements it.
type Target interface {
	// Deliver sends the message write produces from sender ("" = the null sender) to
	// rcpts and returns one RcptResult per recipient, in the order of rcpts. An error
	// means the transaction did not complete (connection refused or dropped, a
	// timeout): the results returned with it (possibly none) are the recipients whose
	// answer is known; every other recipient is to be tried again. write may be
	// called at most once and streams the message.
	Deliver(ctx context.Context, sender string, rcpts []string, write func(io.Writer) error) ([]RcptResult, error)
}

// RcptResult is a server's answer for one recipient.
type RcptResult struct {
	Rcpt string
	// Status is the zero Status when the server accepted the message for Rcpt, else
	// its reply code and enhanced code (Text is "" : the server's words are in Reply).
	Status Status
	// Reply is the server's reply line, for the DSN's Diagnostic-Code.
	Reply string
}

// maxDiagnostic bounds a server's reply kept for a DSN.
const maxDiagnostic = 400

// importTarget delivers a routed message through im.opts.Target. targets maps each
// RCPT address to the recipients routed to it. Recipients the server accepted on an
// earlier attempt of the same message (kept under ProgressDir) are not sent again.
func (im *Importer) importTarget(ctx context.Context, msg Message, h *Header, res *Result, order []string, targets map[string][]string) error {
	done := map[string]bool{}
	if msg.Recovered {
		done = im.progress(msg.ID)
	}
	var send []string
	for _, rcpt := range order {
		if done[rcpt] {
			res.Delivered = append(res.Delivered, Delivery{Account: rcpt, Recipients: targets[rcpt], Path: "lmtp", Existing: true})
			continue
		}
		send = append(send, rcpt)
	}
	var extra []string
	if im.opts.Spam != nil && len(send) > 0 {
		check := im.opts.SpamCheckAll
		for _, r := range send {
			check = check || im.accounts[r].SpamCheck
		}
		if check {
			sv := im.classify(ctx, msg, h, res.Envelope)
			reason := sv.reason
			if sv.checked {
				reason = sv.v.Reason
			}
			res.Spam = &SpamResult{Spam: sv.v.Spam, Checked: sv.checked, Score: sv.v.Score, Reason: reason}
			extra = spamFields(sv.v, sv.checked, sv.reason)
		}
	}
	mine := map[string]bool{}
	for _, r := range send {
		for a := range ownAddresses(im.accounts[r], append([]string{r}, targets[r]...)) {
			mine[a] = true
		}
	}
	write := func(w io.Writer) error {
		rc, err := msg.openSized()
		if err != nil {
			return fmt.Errorf("reopen message: %w", err)
		}
		defer rc.Close()
		// The server writes Return-Path and Delivered-To itself.
		return writeMessage(w, rc, h, res.Envelope, "", mine, extra)
	}
	sender := ""
	if res.Envelope.SenderKnown {
		sender = res.Envelope.Sender
	}
	var results []RcptResult
	var err error
	if len(send) > 0 {
		results, err = im.opts.Target.Deliver(ctx, sender, send, write)
	}
	answered := map[string]bool{}
	var temp *RcptResult
	for i := range results {
		r := &results[i]
		answered[r.Rcpt] = true
		switch {
		case r.Status.IsZero():
			done[r.Rcpt] = true
			res.Delivered = append(res.Delivered, Delivery{Account: r.Rcpt, Recipients: targets[r.Rcpt], Path: "lmtp"})
		case r.Status.Temporary():
			if temp == nil {
				temp = r
			}
		default:
			reply := r.Reply
			if len(reply) > maxDiagnostic {
				reply = reply[:maxDiagnostic]
			}
			rcpts := targets[r.Rcpt]
			if len(rcpts) == 0 {
				rcpts = []string{r.Rcpt}
			}
			for _, orig := range rcpts {
				res.Failed = append(res.Failed, Failure{Recipient: orig, Status: r.Status.Enhanced, Reason: r.Status.Text, Rule: "server", Diagnostic: reply})
			}
		}
	}
	if err == nil && temp == nil {
		for _, r := range send {
			if !answered[r] {
				err = fmt.Errorf("no answer for %s", r)
			}
		}
	}
	if err != nil || temp != nil {
		// Keep what the server accepted, so that the retry does not send it again.
		if perr := im.saveProgress(msg.ID, done, pendingSuffix); perr != nil {
			return &Error{Status: StatusLocalError, Op: "keep lmtp progress", Err: perr}
		}
		if err != nil {
			return &Error{Status: Status{451, "4.4.2", "mail server unavailable"}, Op: "deliver over lmtp", Err: err}
		}
		st := temp.Status
		st.Text = "mail server answered " + temp.Reply
		return &Error{Status: st, Op: "deliver over lmtp to " + temp.Rcpt, Err: errors.New(temp.Reply)}
	}
	// Finished. The source acknowledges the message next; should mxdrop die before it
	// does, the retry finds this note and sends nothing again. A process crash keeps
	// the page cache, so the note needs no fsync: only a power loss in the
	// milliseconds before the acknowledgement can still duplicate (see doneFor).
	if len(results) > 0 {
		if perr := im.saveProgress(msg.ID, done, doneSuffix); perr != nil {
			return &Error{Status: StatusLocalError, Op: "note lmtp delivery", Err: perr}
		}
	}
	if msg.Recovered {
		im.dropProgress(msg.ID, pendingSuffix)
	}
	return nil
}

// progressPath is the file that keeps the recipients a server accepted for message
// id while other recipients wait for a retry; "" without a ProgressDir.
func (im *Importer) progressPath(id string) string {
	if im.opts.ProgressDir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(im.opts.ProgressDir, hex.EncodeToString(sum[:16]))
}

// maxProgress bounds the progress file read back.
const maxProgress = 1 << 20

// Progress files: ".pending" while recipients wait for a retry (fsynced, removed when
// the message is finished); ".done" once the server answered every recipient (not
// fsynced, swept doneFor after it was written: by then the source has acknowledged
// the message).
const (
	pendingSuffix = ".pending"
	doneSuffix    = ".done"
	doneFor       = 10 * time.Minute
)

// progress returns the recipients the server accepted on earlier attempts of id.
func (im *Importer) progress(id string) map[string]bool {
	done := map[string]bool{}
	p := im.progressPath(id)
	if p == "" {
		return done
	}
	for _, suffix := range []string{pendingSuffix, doneSuffix} {
		f, err := os.Open(p + suffix)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(f, maxProgress))
		f.Close()
		lines := strings.Split(string(b), "\n")
		if len(lines) == 0 || lines[0] != oneLine(id) {
			continue // another message's file (a hash collision is not expected)
		}
		for _, l := range lines[1:] {
			if l != "" {
				done[l] = true
			}
		}
	}
	return done
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// saveProgress writes the progress file of id with suffix: fsynced for pendingSuffix,
// written and renamed only for doneSuffix.
func (im *Importer) saveProgress(id string, done map[string]bool, suffix string) error {
	p := im.progressPath(id)
	if p == "" || len(done) == 0 {
		return nil
	}
	dir := filepath.Dir(p)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(oneLine(id) + "\n")
	for r := range done {
		b.WriteString(r + "\n")
	}
	if suffix == pendingSuffix {
		return durable.WriteFile(dir, filepath.Base(p)+".tmp", dir, filepath.Base(p)+suffix, 0o600, func(w io.Writer) error {
			_, err := io.WriteString(w, b.String())
			return err
		})
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, p+suffix); err != nil {
		os.Remove(tmp)
		return err
	}
	im.sweep(dir)
	return nil
}

func (im *Importer) dropProgress(id, suffix string) {
	if p := im.progressPath(id); p != "" {
		os.Remove(p + suffix)
	}
}

// sweep removes, at most once a minute and in the background, the ".done" files older
// than doneFor.
func (im *Importer) sweep(dir string) {
	im.sweepMu.Lock()
	defer im.sweepMu.Unlock()
	if time.Since(im.swept) < time.Minute {
		return
	}
	im.swept = time.Now()
	go func() {
		d, err := os.Open(dir)
		if err != nil {
			return
		}
		defer d.Close()
		for {
			ents, err := d.ReadDir(1024)
			for _, e := range ents {
				if !strings.HasSuffix(e.Name(), doneSuffix) {
					continue
				}
				if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > doneFor {
					os.Remove(filepath.Join(dir, e.Name()))
				}
			}
			if err != nil {
				return
			}
		}
	}()
}
