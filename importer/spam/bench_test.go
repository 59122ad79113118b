package spam

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// benchConfig is a spam block of realistic size: 200 words and phrases, 50 blocked
// senders, none of which the benchmark messages contain.
func benchConfig() configs.Spam {
	var cfg configs.Spam
	for i := range 200 {
		if i%4 == 0 {
			cfg.Words = append(cfg.Words, fmt.Sprintf("special offer %d", i))
		} else {
			cfg.Words = append(cfg.Words, fmt.Sprintf("spamword%d", i))
		}
	}
	for i := range 50 {
		cfg.BlockedSenders = append(cfg.BlockedSenders, fmt.Sprintf("@spammer%d.example", i))
	}
	return cfg
}

const benchTop = "Return-Path: <bob@example.org>\n" +
	"X-Original-To: alice@example.com\n" +
	"Delivered-To: alice@example.com\n" +
	"Received: from mail.example.org (mail.example.org [203.0.113.7])\n" +
	"\tby mx.example.com (Postfix) with ESMTPS id 4Tq2Xk1ZP3z9sQ\n" +
	"\tfor <alice@example.com>; Tue,  2 Jan 2024 10:15:02 +0100 (CET)\n" +
	"From: Bob <bob@example.org>\n" +
	"To: Alice <alice@example.com>\n" +
	"Subject: =?utf-8?q?benchmark_=E2=80=93_weekly_report?=\n" +
	"Message-ID: <bench@example.org>\n" +
	"MIME-Version: 1.0\n"

// benchPlain is a text/plain message of about 10 KB, as the importer's benchmark uses.
func benchPlain() []byte {
	var b bytes.Buffer
	b.WriteString(benchTop + "Content-Type: text/plain; charset=utf-8\n\n")
	for b.Len() < 10_000 {
		b.WriteString("The quick brown fox jumps over the lazy dog, again and again and again.\n")
	}
	return b.Bytes()
}

// benchMultipart is a multipart/alternative message of about 20 KB: a quoted-printable
// text part and a base64 HTML part of about 10 KB of text each.
func benchMultipart() []byte {
	var text, html bytes.Buffer
	for text.Len() < 10_000 {
		text.WriteString("Gr=C3=BC=C3=9Fe: the quick brown fox jumps over the lazy dog, again and =\nagain.\n")
		html.WriteString("<p>Gr&uuml;&szlig;e: the <b>quick</b> brown fox jumps over the <i>lazy</i> dog.</p>\n")
	}
	var b bytes.Buffer
	b.WriteString(benchTop + "Content-Type: multipart/alternative; boundary=\"b-1\"\n\n--b-1\n" +
		"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n")
	b.Write(text.Bytes())
	b.WriteString("--b-1\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n")
	enc := []byte(base64Lines(html.Bytes()))
	b.Write(enc)
	b.WriteString("--b-1--\n")
	return b.Bytes()
}

func base64Lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(s) > 76 {
		out.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	out.WriteString(s + "\n")
	return out.String()
}

// BenchmarkClassify measures the built-in rules alone (no disk): the throughput of the
// body scan.
func BenchmarkClassify(b *testing.B) {
	c, err := New(benchConfig(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []struct {
		name string
		raw  []byte
	}{{"plain-10KB", benchPlain()}, {"multipart-qp-base64-html-20KB", benchMultipart()}} {
		b.Run(m.name, func(b *testing.B) {
			h := parse(b, string(m.raw))
			env := importer.ExtractEnvelope(h, nil)
			open := opener(m.raw, nil)
			b.SetBytes(int64(len(m.raw)))
			b.ReportAllocs()
			for b.Loop() {
				if v, err := c.Classify(b.Context(), h, env, open); err != nil || v.Spam {
					b.Fatal(v, err)
				}
			}
		})
	}
}

// BenchmarkImport measures whole imports of the 10 KB message into one Maildir (header
// parsing, routing, a durable delivery with two fsyncs) with the spam check off and
// with the built-in rules on (SpamCheckAll): the ratio is the cost of the check.
// Serial is one import at a time; parallel-x8 runs 8 goroutines per GOMAXPROCS, like the
// worker pool.
func BenchmarkImport(b *testing.B) {
	msgBytes := benchPlain()
	for _, mode := range []string{"spam-off", "spam-builtin"} {
		for _, par := range []int{0, 8} {
			name := mode + "/serial"
			if par > 0 {
				name = mode + "/parallel-x" + strconv.Itoa(par)
			}
			b.Run(name, func(b *testing.B) {
				opts := importer.Options{
					Accounts: []configs.Account{{Address: "alice@example.com", Maildir: filepath.Join(b.TempDir(), "alice")}},
					Domains:  []string{"example.com"},
				}
				if mode == "spam-builtin" {
					c, err := New(benchConfig(), zerolog.Nop())
					if err != nil {
						b.Fatal(err)
					}
					opts.Spam, opts.SpamCheckAll = c, true
				}
				im, err := importer.New(opts)
				if err != nil {
					b.Fatal(err)
				}
				var seq atomic.Int64
				one := func() {
					id := "bench-" + strconv.FormatInt(seq.Add(1), 10)
					res, err := im.Import(b.Context(), importer.Message{
						ID: id, Name: id, Size: int64(len(msgBytes)), Arrived: time.Unix(1704186901, 0),
						Open: opener(msgBytes, nil),
					})
					if err != nil || res.Outcome != importer.OutcomeDelivered || (res.Spam != nil && res.Spam.Spam) {
						b.Fatalf("%v %s %+v", err, res.Outcome, res.Spam)
					}
				}
				one() // create the Maildir outside the timing
				b.SetBytes(int64(len(msgBytes)))
				b.ReportAllocs()
				b.ResetTimer()
				if par > 0 {
					b.SetParallelism(par)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							one()
						}
					})
					return
				}
				for b.Loop() {
					one()
				}
			})
		}
	}
}
