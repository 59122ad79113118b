package importer

import (
	"bytes"
	"context"
	"strconv"
	"sync/atomic"
	"testing"
)

// benchMessage is a Postfix-delivered message of about 10 KB.
func benchMessage() []byte {
	var b bytes.Buffer
	b.WriteString(lf("Return-Path: <bob@example.org>",
		"X-Original-To: alice@example.com",
		"Delivered-To: alice@example.com",
		"Received: from mail.example.org (mail.example.org [203.0.113.7])",
		"\tby mx.example.com (Postfix) with ESMTPS id 4Tq2Xk1ZP3z9sQ",
		"\tfor <alice@example.com>; Tue,  2 Jan 2024 10:15:02 +0100 (CET)",
		"From: Bob <bob@example.org>",
		"To: Alice <alice@example.com>",
		"Subject: benchmark",
		"Message-ID: <bench@example.org>",
		"Content-Type: text/plain; charset=utf-8",
		"", ""))
	for b.Len() < 10_000 {
		b.WriteString("The quick brown fox jumps over the lazy dog, again and again and again.\n")
	}
	return b.Bytes()
}

// BenchmarkImport measures a whole import of a 10 KB message into one account: header
// parsing, envelope, routing, and a durable Maildir delivery (two fsyncs). Serial shows
// the latency of one import; parallel (GOMAXPROCS goroutines) and parallel-x8 (8 per
// GOMAXPROCS, like the worker pool) show how concurrent imports share fsyncs.
func BenchmarkImport(b *testing.B) {
	msgBytes := benchMessage()
	run := func(b *testing.B, parallelism int) {
		s := newSetup(b)
		im := s.importer(b, nil)
		var seq atomic.Int64
		one := func() {
			msg := bytesMessage("bench-"+strconv.FormatInt(seq.Add(1), 10), msgBytes)
			res, err := im.Import(context.Background(), msg)
			if err != nil || res.Outcome != OutcomeDelivered {
				b.Fatalf("%v %s", err, res.Outcome)
			}
		}
		one() // create the Maildir outside the timing
		b.SetBytes(int64(len(msgBytes)))
		b.ReportAllocs()
		b.ResetTimer()
		if parallelism > 0 {
			b.SetParallelism(parallelism) // goroutines per GOMAXPROCS, like a worker pool
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
	}
	b.Run("serial", func(b *testing.B) { run(b, 0) })
	b.Run("parallel", func(b *testing.B) { run(b, 1) })
	b.Run("parallel-x8", func(b *testing.B) { run(b, 8) })
}

// BenchmarkReadHeader measures parsing the header block of a typical message.
func BenchmarkReadHeader(b *testing.B) {
	in := fixture(b, "postfix-virtual.eml")
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadHeader(bufioReader(in)); err != nil {
			b.Fatal(err)
		}
	}
}
