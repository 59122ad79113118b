package importer

import (
	"slices"
	"testing"
)

type envCheck func(t *testing.T, env Envelope)

func rcpts(want ...string) envCheck {
	return func(t *testing.T, env Envelope) {
		t.Helper()
		if !slices.Equal(env.Recipients, want) {
			t.Errorf("Recipients = %q, want %q", env.Recipients, want)
		}
	}
}

func sender(want string) envCheck {
	return func(t *testing.T, env Envelope) {
		t.Helper()
		if !env.SenderKnown || env.Sender != want {
			t.Errorf("Sender = %q (known %v), want %q", env.Sender, env.SenderKnown, want)
		}
	}
}

func senderUnknown() envCheck {
	return func(t *testing.T, env Envelope) {
		t.Helper()
		if env.SenderKnown || env.Sender != "" {
			t.Errorf("Sender = %q (known %v), want unknown", env.Sender, env.SenderKnown)
		}
	}
}

func source(want string) envCheck {
	return func(t *testing.T, env Envelope) {
		t.Helper()
		if env.Source != want {
			t.Errorf("Source = %q, want %q", env.Source, want)
		}
		if env.Guessed != (want == "guessed") {
			t.Errorf("Guessed = %v with Source %q", env.Guessed, env.Source)
		}
	}
}

func TestExtractEnvelope(t *testing.T) {
	tests := []struct {
		name   string
		in     string // a message, or "@name.eml" for a fixture
		order  []string
		checks []envCheck
	}{
		{"postfix virtual", "@postfix-virtual.eml", nil, []envCheck{
			sender("bob@example.org"), rcpts("alice@example.com"), source(ConvOriginalTo),
		}},
		{"postfix pipe with mbox From line", "@postfix-pipe-mbox.eml", nil, []envCheck{
			sender("bob@example.org"), rcpts("carol+lists@example.com"), source(ConvOriginalTo),
		}},
		{"postfix Delivered-To only", lf(
			"Return-Path: <bob@example.org>",
			"Delivered-To: alice@example.com",
			"Received: from x by mx.example.com (Postfix) with ESMTP id 1",
			"To: list@example.org", "", "b"), nil, []envCheck{
			sender("bob@example.org"), rcpts("alice@example.com"), source(ConvDeliveredTo),
		}},
		{"postfix alias: X-Original-To is preferred", lf(
			"Return-Path: <bob@example.org>",
			"X-Original-To: info@example.com",
			"Delivered-To: alice@example.com",
			"Received: from x by mx.example.com (Postfix) with ESMTP id 1",
			"To: info@example.com", "", "b"), nil, []envCheck{
			rcpts("info@example.com"), source(ConvOriginalTo),
		}},
		{"exim envelope_to_add, several recipients", "@exim-envelope-to.eml", nil, []envCheck{
			sender("newsletter-bounces+alice=example.com@news.example.net"),
			rcpts("alice@example.com", "bob@example.com", "secret-bcc@example.com"), source(ConvEnvelopeTo),
		}},
		{"exim appendfile with mbox From line", "@exim-mbox-single.eml", nil, []envCheck{
			sender("bob@example.org"), rcpts("dave@example.com"), source(ConvEnvelopeTo),
		}},
		{"IIS pickup", "@iis-pickup-crlf.eml", nil, []envCheck{
			sender("bob@example.org"), rcpts("alice@example.com", "bob@example.com", "hidden-bcc@example.com"), source(ConvIIS),
		}},
		{"System.Net.Mail pickup", "@netmail-pickup-crlf.eml", nil, []envCheck{
			sender("app@example.com"), rcpts("ops@example.com", "oncall@example.com"), source(ConvIIS),
		}},
		{"IIS x-sender is the sender, not a Return-Path in the message", crlf(
			"X-Sender: app@example.com",
			"X-Receiver: ops@example.com",
			"Return-Path: <spoofed@example.net>",
			"From: app@example.com", "", "b"), nil, []envCheck{
			sender("app@example.com"), rcpts("ops@example.com"), source(ConvIIS),
		}},
		{"a leading X-Sender alone is not an IIS block", lf(
			"X-Sender: someone@example.net",
			"Delivered-To: alice@example.com",
			"To: alice@example.com", "", "b"), nil, []envCheck{
			senderUnknown(), rcpts("alice@example.com"), source(ConvDeliveredTo),
		}},
		{"Bcc recipient only in the envelope", lf(
			"Return-Path: <bob@example.org>",
			"X-Original-To: hidden@example.com",
			"Delivered-To: hidden@example.com",
			"Received: from x by mx.example.com (Postfix) with ESMTP id 1",
			"To: alice@example.com", "Cc: carol@example.com", "", "b"), nil, []envCheck{
			rcpts("hidden@example.com"), source(ConvOriginalTo),
		}},
		{"forged X-Original-To and Delivered-To below the real ones", "@forged-original-to.eml", nil, []envCheck{
			sender("mallory@example.net"), rcpts("alice@example.com"), source(ConvOriginalTo),
		}},
		{"forged fields with no real ones: fall through to Received", lf(
			"Received: from evil.example.net by mx.example.com (Postfix) with ESMTP id 1",
			"\tfor <erin@example.com>; Fri,  5 Jan 2024 12:00:00 +0100 (CET)",
			"Return-Path: <forged@example.net>",
			"X-Original-To: bob@example.com",
			"Delivered-To: bob@example.com",
			"Envelope-to: bob@example.com",
			"X-Envelope-To: bob@example.com",
			"To: erin@example.com", "", "b"), nil, []envCheck{
			senderUnknown(), rcpts("erin@example.com"), source(ConvReceived),
		}},
		{"forged fields with no real ones and no Received for: guessed", lf(
			"Received: from evil.example.net by mx.example.com (Postfix) with ESMTP id 1;",
			"\tFri,  5 Jan 2024 12:00:00 +0100 (CET)",
			"X-Original-To: bob@example.com",
			"Delivered-To: bob@example.com",
			"To: erin@example.com", "", "b"), nil, []envCheck{
			rcpts("erin@example.com"), source("guessed"),
		}},
		{"Received for only", "@received-for-only.eml", nil, []envCheck{
			senderUnknown(), rcpts("erin@example.com"), source(ConvReceived),
		}},
		{"Received for without angle brackets (Exim)", lf(
			"Received: from a by b with esmtp (Exim 4.97) id 1 for dave@example.com; Wed, 03 Jan 2024 09:00:01 +0000",
			"To: x@example.org", "", ""), nil, []envCheck{
			rcpts("dave@example.com"), source(ConvReceived),
		}},
		{"X-Envelope-To", lf(
			"X-Envelope-To: <frank@example.com>",
			"Received: from a by b; Wed, 03 Jan 2024 09:00:01 +0000",
			"To: x@example.org", "", ""), nil, []envCheck{
			rcpts("frank@example.com"), source(ConvXEnvelopeTo),
		}},
		{"no envelope: guessed from To, Cc and Resent-To", "@guessed-to-cc.eml", nil, []envCheck{
			senderUnknown(), source("guessed"),
			rcpts("alice@example.com", "someone@elsewhere.example", "bob@example.com", "frank@example.com", "grace@example.com"),
		}},
		{"no recipients anywhere", lf("Subject: x", "", ""), nil, []envCheck{
			rcpts(), source("guessed"),
		}},
		{"null sender", "@null-sender-dsn.eml", nil, []envCheck{
			sender(""), rcpts("alice@example.com"),
		}},
		{"null sender written without brackets", lf("Return-path: <>", "Envelope-to: a@example.com", "", ""), nil, []envCheck{
			sender(""), rcpts("a@example.com"),
		}},
		{"sender from the mbox From line", lf("From bob@example.org Tue Jan  2 10:15:02 2024", "To: a@example.com", "", ""), nil, []envCheck{
			sender("bob@example.org"), rcpts("a@example.com"), source("guessed"),
		}},
		{"Return-Path below Received is not trusted", lf(
			"Delivered-To: alice@example.com",
			"Received: from a by b; Wed, 03 Jan 2024 09:00:01 +0000",
			"Return-Path: <forged@example.net>", "", ""), nil, []envCheck{
			senderUnknown(), rcpts("alice@example.com"),
		}},
		{"Return-Path with a source route", lf("Return-Path: <@relay.example.net:bob@example.org>", "Delivered-To: a@example.com", "", ""), nil, []envCheck{
			sender("bob@example.org"),
		}},
		{"Return-Path that is no address: no sender", lf("Return-Path: 0<0", "Delivered-To: a@example.com", "", ""), nil, []envCheck{
			sender(""),
		}},
		{"Return-Path with a local name", lf("Return-Path: <root>", "Delivered-To: a@example.com", "", ""), nil, []envCheck{
			sender("root"),
		}},
		{"quoted local part stays quoted", lf(`Return-Path: <"john doe"@example.org>`, `Envelope-to: "a b"@example.com, "plain"@example.com`, "", ""), nil, []envCheck{
			sender(`"john doe"@example.org`), rcpts(`"a b"@example.com`, "plain@example.com"),
		}},
		{"topmost Delivered-To wins", lf(
			"Delivered-To: alice@example.com",
			"Delivered-To: list-owner@example.com",
			"Received: from a by b; Wed, 03 Jan 2024 09:00:01 +0000", "", ""), nil, []envCheck{
			rcpts("alice@example.com"),
		}},
		{"recipients deduplicated case-insensitively", lf("Envelope-to: A@Example.com, a@example.com, b@example.com", "", ""), nil, []envCheck{
			rcpts("A@Example.com", "b@example.com"),
		}},
		{"folded Envelope-to", lf("Envelope-to: a@example.com,", "\tb@example.com", "", ""), nil, []envCheck{
			rcpts("a@example.com", "b@example.com"),
		}},
		{"custom order: Delivered-To before X-Original-To", lf(
			"X-Original-To: info@example.com",
			"Delivered-To: alice@example.com",
			"Received: from a by b; Wed, 03 Jan 2024 09:00:01 +0000", "", ""),
			[]string{ConvDeliveredTo, ConvOriginalTo}, []envCheck{
				rcpts("alice@example.com"), source(ConvDeliveredTo),
			}},
		{"custom order names are case-insensitive", lf(
			"X-Original-To: info@example.com",
			"Delivered-To: alice@example.com",
			"Received: from a by b; Wed, 03 Jan 2024 09:00:01 +0000", "", ""),
			[]string{"Delivered-To"}, []envCheck{
				rcpts("alice@example.com"), source(ConvDeliveredTo),
			}},
		{"custom order without IIS ignores x-receiver", "@iis-pickup-crlf.eml", []string{ConvEnvelopeTo}, []envCheck{
			sender("bob@example.org"), rcpts("alice@example.com", "bob@example.com"), source("guessed"),
		}},
		{"custom order: Received only", "@postfix-virtual.eml", []string{ConvReceived}, []envCheck{
			rcpts("alice@example.com"), source(ConvReceived),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if len(in) > 0 && in[0] == '@' {
				in = string(fixture(t, in[1:]))
			}
			env := ExtractEnvelope(parse(t, in), tc.order)
			for _, c := range tc.checks {
				c(t, env)
			}
		})
	}
}

// The order argument must not be changed, and DefaultEnvelopeHeaders neither.
func TestExtractEnvelopeDoesNotModifyOrder(t *testing.T) {
	before := slices.Clone(DefaultEnvelopeHeaders)
	order := []string{"Delivered-To", ConvOriginalTo}
	ExtractEnvelope(parse(t, lf("Delivered-To: a@example.com", "", "")), order)
	ExtractEnvelope(parse(t, lf("Delivered-To: a@example.com", "", "")), nil)
	if order[0] != "Delivered-To" || !slices.Equal(before, DefaultEnvelopeHeaders) {
		t.Fatalf("order changed: %q, default %q", order, DefaultEnvelopeHeaders)
	}
}

// TestDefaultEnvelopeHeadersAreConventions: the list the configuration validates
// against names exactly the conventions ExtractEnvelope knows, in the default order.
func TestDefaultEnvelopeHeadersAreConventions(t *testing.T) {
	want := []string{ConvIIS, ConvEnvelopeTo, ConvOriginalTo, ConvDeliveredTo, ConvXEnvelopeTo, ConvReceived}
	if !slices.Equal(DefaultEnvelopeHeaders, want) {
		t.Fatalf("DefaultEnvelopeHeaders = %q, want %q", DefaultEnvelopeHeaders, want)
	}
}
