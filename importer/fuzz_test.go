package importer

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/mxdrop/mxdrop/configs"
)

// seedMessages adds every fixture and a few hand-made corner cases to a corpus.
func seedMessages(f *testing.F) {
	for _, name := range fixtureNames(f) {
		f.Add(fixture(f, name))
	}
	for _, s := range []string{
		"", "\n", "\r\n", "From \n", "From x\nA: b\n\n", "A: b", "A: b\n c", "A:\n b\n\nbody",
		"A: 1\nnot a field\n", "A: 1\n\rX\n", "x-sender: a@b\nx-receiver: c@d\n",
		"X-Sender: a@b\r\nX-Receiver: <c@d>, e@f\r\nReturn-Path: <z@y>\r\n\r\n",
		"Received: x for <a@b>;\nDelivered-To: c@d\n\n", "Return-Path: <>\nEnvelope-to: a@b, c@d\n\nb",
		"Delivered-To: \"a b\"@example.com\n\n", "Envelope-to: @r1,@r2:a@b\n\n",
		"Subject: =?UTF-8?B?w6TDtsO8?=\n\n", "Subject: caf\xe9\n\n", "A: 1\x00\n",
	} {
		f.Add([]byte(s))
	}
	// Long folds: one field over many continuation lines, and one just over
	// MaxHeaderSize. Their reading must stay linear in their size.
	f.Add(foldedHeader(64 << 10))
	f.Add(append([]byte("X-Long: a\r\n"), bytes.Repeat([]byte("\t b \r\n \r\n"), 4096)...))
	f.Add(foldedHeader(MaxHeaderSize + 1))
}

func FuzzReadHeader(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, size := range []int{64 << 10, 16} {
			r := bufio.NewReaderSize(bytes.NewReader(data), size)
			h, err := ReadHeader(r)
			rest, _ := io.ReadAll(r)
			if err != nil {
				var ie *InputError
				if !errors.As(err, &ie) {
					t.Fatalf("a bytes.Reader cannot fail, yet: %v", err)
				}
				continue
			}
			checkHeaderInvariants(t, data, h, rest)
			for _, fl := range h.Fields {
				if fl.Value != unfold(fl.Raw) {
					t.Fatalf("field %s: value %q, unfolded raw %q", fl.Name, fl.Value, unfold(fl.Raw))
				}
			}
		}
	})
}

func FuzzExtractEnvelope(f *testing.F) {
	seedMessages(f)
	r, err := NewRouter(nil, []string{"example.com", "*.example.org"}, nil, "", "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
		if err != nil {
			return
		}
		for _, order := range [][]string{nil, {ConvReceived, ConvDeliveredTo}} {
			env := ExtractEnvelope(h, order)
			for _, a := range env.Recipients {
				if strings.TrimSpace(a) == "" {
					t.Fatalf("empty recipient in %q", env.Recipients)
				}
				if strings.ContainsAny(a, "\r\n") {
					t.Fatalf("recipient %q spans lines", a)
				}
				rt := r.Route(a, env.Guessed)
				if rt.Account == "" && !rt.Ignored && rt.Status.Code/100 != 5 {
					t.Fatalf("recipient %q neither routed, ignored nor failed: %+v", a, rt)
				}
			}
			if strings.ContainsFunc(env.Sender, func(r rune) bool { return r < ' ' || r == 0x7f || r == '<' || r == '>' }) {
				t.Fatalf("sender %q would break the Return-Path line", env.Sender)
			}
			if !env.SenderKnown && env.Sender != "" {
				t.Fatalf("unknown sender %q", env.Sender)
			}
			if env.Source == "" || env.Guessed != (env.Source == "guessed") {
				t.Fatalf("source %q guessed %v", env.Source, env.Guessed)
			}
		}
	})
}

// FuzzWriteCopy checks a delivered copy: the body is untouched, the copy parses, and
// its trusted envelope fields name only the account's own addresses (Bcc privacy).
func FuzzWriteCopy(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
		if err != nil {
			return
		}
		env := ExtractEnvelope(h, nil)
		for _, rcpt := range env.Recipients {
			norm, ok := NormalizeAddress(rcpt)
			if !ok {
				continue
			}
			mine := ownAddresses(configs.Account{Address: rcpt}, []string{rcpt})
			var out bytes.Buffer
			if err := writeMessage(&out, bytes.NewReader(data), h, env, norm, mine, nil); err != nil {
				t.Fatal(err)
			}
			cp := out.Bytes()
			if identicalCopy(h, env, norm, mine, nil) && !bytes.Equal(cp, data) {
				t.Fatalf("identicalCopy says the copy is the message, it differs:\n%q\n%q", data, cp)
			}
			if !bytes.HasSuffix(cp, data[h.Size:]) {
				t.Fatal("body changed")
			}
			h2, err := ReadHeader(bufio.NewReaderSize(bytes.NewReader(cp), 64<<10))
			if err != nil {
				t.Fatalf("copy does not parse: %v\n%q", err, cp)
			}
			if h2.MboxFrom != "" {
				t.Fatalf("copy starts with an mbox line")
			}
			env2 := ExtractEnvelope(h2, nil)
			switch env2.Source {
			case ConvIIS, ConvEnvelopeTo, ConvOriginalTo, ConvDeliveredTo, ConvXEnvelopeTo:
				for _, a := range env2.Recipients {
					if n, _ := NormalizeAddress(a); !mine[n] {
						t.Fatalf("copy for %s names %q in %s\n%q", norm, a, env2.Source, cp)
					}
				}
			}
		}
	})
}

func FuzzNormalizeAddress(f *testing.F) {
	for _, s := range []string{
		"alice@example.com", "Alice@Example.COM.", "<a@b>", "@r1,@r2:a@b", "info@bücher.example",
		"info@XN--BCHER-KVA.example", `"a@b"@c`, "a@[192.0.2.1]", "a@", "@b", "", "a@b@c",
		"ＡＢ@ＥＸＡＭＰＬＥ.com", "a@xn--", "a@-x-.example", "a@ex ample.com", "a@ß.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n, ok := NormalizeAddress(in)
		if !ok {
			if n != "" {
				t.Fatalf("not ok but %q", n)
			}
			return
		}
		at := strings.LastIndexByte(n, '@')
		if at <= 0 || at == len(n)-1 {
			t.Fatalf("%q -> %q: empty part", in, n)
		}
		if n != strings.ToLower(n) && strings.ToLower(n[:at]) == n[:at] {
			// The local part is lower-cased; the domain is lower case or punycode.
			t.Fatalf("%q -> %q: domain not lower case", in, n)
		}
		if n2, ok2 := NormalizeAddress(n); !ok2 || n2 != n {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, n, n2, ok2)
		}
	})
}
