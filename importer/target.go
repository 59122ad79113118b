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
	done := im.progress(msg.ID)
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
		rc, err := msg.Open()
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
		if perr := im.saveProgress(msg.ID, done); perr != nil {
			return &Error{Status: StatusLocalError, Op: "keep lmtp progress", Err: perr}
		}
		if err != nil {
			return &Error{Status: Status{451, "4.4.2", "mail server unavailable"}, Op: "deliver over lmtp", Err: err}
		}
		st := temp.Status
		st.Text = "mail server answered " + temp.Reply
		return &Error{Status: st, Op: "deliver over lmtp to " + temp.Rcpt, Err: errors.New(temp.Reply)}
	}
	im.dropProgress(msg.ID)
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

func (im *Importer) progress(id string) map[string]bool {
	done := map[string]bool{}
	p := im.progressPath(id)
	if p == "" {
		return done
	}
	f, err := os.Open(p)
	if err != nil {
		return done
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxProgress))
	lines := strings.Split(string(b), "\n")
	if len(lines) == 0 || lines[0] != id {
		return done // another message's file (a hash collision is not expected)
	}
	for _, l := range lines[1:] {
		if l != "" {
			done[l] = true
		}
	}
	return done
}

func (im *Importer) saveProgress(id string, done map[string]bool) error {
	p := im.progressPath(id)
	if p == "" || len(done) == 0 {
		return nil
	}
	if err := durable.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(filepath.Dir(p), filepath.Base(p)+".tmp", filepath.Dir(p), filepath.Base(p), 0o600, func(w io.Writer) error {
		_, err := io.WriteString(w, strings.ReplaceAll(id, "\n", " ")+"\n")
		for r := range done {
			if err == nil {
				_, err = io.WriteString(w, r+"\n")
			}
		}
		return err
	})
}

func (im *Importer) dropProgress(id string) {
	if p := im.progressPath(id); p != "" {
		os.Remove(p)
	}
}
