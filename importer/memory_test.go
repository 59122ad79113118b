package importer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestImportMemoryBounded imports a 200 MB message and checks that the importer streams
// it: the bytes allocated during Import stay at a few buffers, whatever the size.
func TestImportMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and imports 200 MB")
	}
	const size = 200 << 20
	s := newSetup(t)
	src := filepath.Join(s.root, "big.eml")
	sum := writeBigMessage(t, src, size)

	im := s.importer(t, nil)
	msg := fileMessage(t, src)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := im.Import(context.Background(), msg)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeDelivered || len(res.Delivered) != 1 {
		t.Fatalf("outcome %s %+v", res.Outcome, res.Delivered)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("Import of %d MiB allocated %d KiB in %d objects", size>>20, alloc>>10, after.Mallocs-before.Mallocs)
	if alloc > 8<<20 {
		t.Errorf("Import allocated %d MiB for a %d MiB message: not streamed", alloc>>20, size>>20)
	}

	// The copy is the message, byte for byte (Return-Path and Delivered-To already say it).
	f, err := os.Open(res.Delivered[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	if n != msg.Size || !bytes.Equal(h.Sum(nil), sum) {
		t.Errorf("delivered %d bytes with another hash; want %d bytes", n, msg.Size)
	}
}

// writeBigMessage writes a Postfix-delivered message of about size bytes to path and
// returns its SHA-256.
func writeBigMessage(t testing.TB, path string, size int) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	head := lf("Return-Path: <bob@example.org>",
		"X-Original-To: alice@example.com",
		"Delivered-To: alice@example.com",
		"Received: from mail.example.org by mx.example.com (Postfix) with ESMTPS id 4BIG",
		"From: bob@example.org",
		"To: alice@example.com",
		"Subject: a very large attachment",
		"MIME-Version: 1.0",
		"Content-Type: application/octet-stream",
		"Content-Transfer-Encoding: base64",
		"", "")
	w.WriteString(head)
	line := []byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\n")
	for written := len(head); written < size; written += len(line) {
		// Vary the content so that nothing can be deduplicated along the way.
		line[0] = 'A' + byte(written/len(line)%26)
		w.Write(line)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}
