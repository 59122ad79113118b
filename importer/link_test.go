package importer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/internal/testenv"
)

// postfixMessage is a message as Postfix virtual(8) writes it for one recipient:
// Return-Path and Delivered-To on top.
func postfixMessage(rcpt, id string) []byte {
	return []byte(fmt.Sprintf("Return-Path: <s@remote.test>\nX-Original-To: %s\nDelivered-To: %s\n"+
		"Received: from mx.remote.test by mx.example.com; Sun, 22 Nov 2026 12:00:00 +0000\n"+
		"From: s@remote.test\nTo: %s\nMessage-ID: <%s@remote.test>\nSubject: link\n\n%s", rcpt, rcpt, rcpt, id, strings.Repeat("body line\n", 100)))
}

// linkDrop writes b as a drop file the way Postfix virtual does (mode 0600) and returns
// its Message with Path set, as the watcher hands it over.
func (s *testSetup) linkDrop(t *testing.T, name string, b []byte) (Message, string) {
	t.Helper()
	msg, p := s.dropFile(t, name, b)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	msg.Path = p
	return msg, p
}

// TestImportLinks: a Postfix-style message for one account, on the Maildir's file
// system, is delivered as the drop file itself: same inode, two names, same bytes;
// after the drop file is removed the delivery stays whole.
func TestImportLinks(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	in := postfixMessage("alice@example.com", "linked")
	msg, src := s.linkDrop(t, "m1", in)
	res, err := im.Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || !res.Delivered[0].Linked || !res.Linked() {
		t.Fatalf("delivered %+v, want one linked delivery", res.Delivered)
	}
	srcIno, n := testenv.Inode(t, src)
	dstIno, _ := testenv.Inode(t, res.Delivered[0].Path)
	if srcIno != dstIno || n != 2 {
		t.Errorf("delivery inode %d, drop file inode %d with %d links: want one inode, two names", dstIno, srcIno, n)
	}
	sameBytes(t, onlyCopy(t, s.maildir("alice")), in)
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, onlyCopy(t, s.maildir("alice")), in)
	if _, n := testenv.Inode(t, res.Delivered[0].Path); n != 1 {
		t.Errorf("%d links after the drop file went", n)
	}
}

// TestImportCopiesWhenNotIdentical: whatever would make the copy differ from the file,
// or make a link unsafe, gets a written copy (its own inode), with the bytes a copy
// always had.
func TestImportCopiesWhenNotIdentical(t *testing.T) {
	pf := postfixMessage("alice@example.com", "c")
	tests := []struct {
		name string
		in   []byte
		mod  func(*Options)
		mode os.FileMode
		path bool // Message.Path set
	}{
		{"no path offered (a poller)", pf, nil, 0o600, false},
		{"no Delivered-To on top", withoutFields(pf, "Delivered-To"), nil, 0o600, true},
		{"source's sender differs from Return-Path", pf, nil, 0o600, true},
		{"mbox From line", append([]byte("From s@remote.test Sun Nov 22 12:00:00 2026\n"), pf...), nil, 0o600, true},
		{"spam fields added", pf, func(o *Options) { o.Spam, o.SpamCheckAll = &fakeClassifier{}, true }, 0o600, true},
		{"readable by others", pf, nil, 0o644, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			msg, src := s.linkDrop(t, "m", tc.in)
			os.Chmod(src, tc.mode)
			if !tc.path {
				msg.Path = ""
			}
			if strings.HasPrefix(tc.name, "source's sender") {
				msg.Envelope = &Envelope{Sender: "other@remote.test", SenderKnown: true, Recipients: []string{"alice@example.com"}}
			}
			res, err := s.importer(t, tc.mod).Import(context.Background(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Delivered) != 1 || res.Delivered[0].Linked || res.Linked() {
				t.Fatalf("delivered %+v, want one written copy", res.Delivered)
			}
			if _, n := testenv.Inode(t, src); n != 1 {
				t.Errorf("drop file has %d links", n)
			}
			want := new(bytes.Buffer)
			h := parse(t, string(tc.in))
			im := s.importer(t, tc.mod)
			env := res.Envelope
			var extra []string
			if res.Spam != nil {
				extra = spamFields(Verdict{Score: res.Spam.Score}, true, "")
			}
			acct := im.accounts["alice@example.com"]
			if err := writeMessage(want, bytes.NewReader(tc.in), h, env, "alice@example.com", ownAddresses(acct, res.Delivered[0].Recipients), extra); err != nil {
				t.Fatal(err)
			}
			sameBytes(t, onlyCopy(t, s.maildir("alice")), want.Bytes())
		})
	}
}

// TestImportMultiAccountCopies: a message for two accounts gets two written copies,
// each naming only its own recipient, and the drop file keeps its one name.
func TestImportMultiAccountCopies(t *testing.T) {
	s := newSetup(t)
	in := []byte("Return-Path: <s@remote.test>\nX-Original-To: alice@example.com, bob@example.com\nDelivered-To: alice@example.com\n" +
		"From: s@remote.test\nTo: alice@example.com, bob@example.com\nMessage-ID: <multi@remote.test>\nSubject: two\n\nhello\n")
	msg, src := s.linkDrop(t, "m", in)
	res, err := s.importer(t, nil).Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 2 {
		t.Fatalf("delivered %+v", res.Delivered)
	}
	srcIno, n := testenv.Inode(t, src)
	for _, d := range res.Delivered {
		if d.Linked {
			t.Errorf("%s linked", d.Account)
		}
		if ino, _ := testenv.Inode(t, d.Path); ino == srcIno {
			t.Errorf("%s's copy is the drop file's inode", d.Account)
		}
	}
	if n != 1 {
		t.Errorf("drop file has %d links", n)
	}
	if b := onlyCopy(t, s.maildir("bob")); bytes.Contains(b, []byte("alice@")) && bytes.Contains(b, []byte("X-Original-To: alice")) {
		t.Errorf("bob's copy names alice in its envelope fields:\n%s", b)
	}
}

// TestImportCopiesAcrossFileSystems: a Maildir on a tmpfs, the drop file on the disk:
// the link fails (EXDEV) and the message is copied, once, whole.
func TestImportCopiesAcrossFileSystems(t *testing.T) {
	dir := mountTmpfs(t, "size=4m")
	s := newSetup(t)
	md := filepath.Join(dir, "alice")
	s.accounts = []configs.Account{{Address: "alice@example.com", Maildir: md}}
	in := postfixMessage("alice@example.com", "exdev")
	msg, src := s.linkDrop(t, "m", in)
	res, err := s.importer(t, nil).Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || res.Delivered[0].Linked {
		t.Fatalf("delivered %+v, want one written copy", res.Delivered)
	}
	sameBytes(t, onlyCopy(t, md), in)
	if _, n := testenv.Inode(t, src); n != 1 {
		t.Errorf("drop file has %d links", n)
	}
}

// TestImportLinksWithQuota: with a Maildir++ quota the linked delivery's name carries
// its size (S=), and maildirsize counts it.
func TestImportLinksWithQuota(t *testing.T) {
	s := newSetup(t)
	s.accounts[0].Quota = 1 << 20
	in := postfixMessage("alice@example.com", "quota")
	msg, src := s.linkDrop(t, "m", in)
	res, err := s.importer(t, nil).Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || !res.Delivered[0].Linked {
		t.Fatalf("delivered %+v, want one linked delivery", res.Delivered)
	}
	if !strings.HasSuffix(res.Delivered[0].Path, fmt.Sprintf(",S=%d", len(in))) {
		t.Errorf("path %s carries no S=%d", res.Delivered[0].Path, len(in))
	}
	a, _ := testenv.Inode(t, src)
	b, _ := testenv.Inode(t, res.Delivered[0].Path)
	if a != b {
		t.Error("not the drop file's inode")
	}
	if _, u := readMaildirsize(t, s.maildir("alice")); u.Bytes != int64(len(in)) || u.Messages != 1 {
		t.Errorf("maildirsize says %+v", u)
	}
	// Over quota, a message that would be linked is refused like any other.
	s.accounts[0].Quota = configs.Size(len(in) + 10)
	msg2, src2 := s.linkDrop(t, "m2", postfixMessage("alice@example.com", "over"))
	res, err = s.importer(t, nil).Import(context.Background(), msg2)
	if err != nil || len(res.Delivered) != 0 || len(res.Failed) != 1 {
		t.Fatalf("over quota: %+v, %v", res, err)
	}
	if _, n := testenv.Inode(t, src2); n != 1 {
		t.Errorf("refused drop file has %d links", n)
	}
}

// TestImportLinkRecovered: an interrupted linked delivery is found again by its name
// (no second copy), and a leftover link in tmp/ is replaced, not delivered twice.
func TestImportLinkRecovered(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	in := postfixMessage("alice@example.com", "rec")
	msg, src := s.linkDrop(t, "m", in)
	md := s.maildir("alice")
	if err := Maildir(md).Init(); err != nil {
		t.Fatal(err)
	}
	// Killed after the link into tmp/, before the rename.
	name := DeliveryName(msg, "alice@example.com")
	if err := os.Link(src, filepath.Join(md, "tmp", name)); err != nil {
		t.Fatal(err)
	}
	msg.Recovered = true
	res, err := im.Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || res.Delivered[0].Existing {
		t.Fatalf("delivered %+v", res.Delivered)
	}
	sameBytes(t, onlyCopy(t, md), in)
	// Killed after the rename, before the drop file went: found, not delivered again.
	res, err = im.Import(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || !res.Delivered[0].Existing {
		t.Fatalf("second attempt delivered %+v", res.Delivered)
	}
	sameBytes(t, onlyCopy(t, md), in)
}

// TestIdenticalCopy: the decision to link is the copy writer's own plan: when
// identicalCopy says yes, writeMessage writes the input unchanged.
func TestIdenticalCopy(t *testing.T) {
	alice := configs.Account{Address: "alice@example.com", Aliases: []string{"a.smith@example.com"}}
	tests := []struct {
		name  string
		in    string
		extra []string
		want  bool
	}{
		{"postfix virtual", string(postfixMessage("alice@example.com", "x")), nil, true},
		{"postfix virtual, CRLF", strings.ReplaceAll(string(postfixMessage("alice@example.com", "x")), "\n", "\r\n"), nil, true},
		{"alias in Delivered-To", string(postfixMessage("a.smith@example.com", "x")), nil, true},
		{"no Return-Path, no sender known", lf("Delivered-To: alice@example.com", "Subject: s", "", "b"), nil, true},
		{"spam field", string(postfixMessage("alice@example.com", "x")), []string{"X-Spam-Status: No, score=0"}, false},
		{"no Delivered-To", lf("Return-Path: <s@remote.test>", "X-Original-To: alice@example.com", "Subject: s", "", "b"), nil, false},
		{"Return-Path not first", lf("Delivered-To: alice@example.com", "Return-Path: <s@remote.test>", "Subject: s", "", "b"), nil, false},
		{"other recipient named", lf("Return-Path: <s@remote.test>", "Delivered-To: alice@example.com", "X-Original-To: alice@example.com, bob@example.com", "", "b"), nil, false},
		{"IIS block", lf("x-sender: s@remote.test", "x-receiver: alice@example.com", "Delivered-To: alice@example.com", "Subject: s", "", "b"), nil, false},
		{"mbox From line", lf("From s@remote.test Sun Nov 22 12:00:00 2026", "Return-Path: <s@remote.test>", "Delivered-To: alice@example.com", "", "b"), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := parse(t, tc.in)
			env := ExtractEnvelope(h, nil)
			rcpts := []string{"alice@example.com"}
			got := identicalCopy(h, env, "alice@example.com", ownAddresses(alice, rcpts), tc.extra)
			if got != tc.want {
				t.Errorf("identicalCopy = %v, want %v (envelope %+v)", got, tc.want, env)
			}
			var out bytes.Buffer
			if err := writeMessage(&out, strings.NewReader(tc.in), h, env, "alice@example.com", ownAddresses(alice, rcpts), tc.extra); err != nil {
				t.Fatal(err)
			}
			if same := out.String() == tc.in; same != tc.want {
				t.Errorf("copy identical: %v, decision %v\n%q", same, tc.want, out.String())
			}
		})
	}
}

// TestImportLinkRecoveredAfterDataLoss: a linked copy is visible before its data sync
// (durable.LinkTemp). A power loss in between can leave the drop file, and so the
// delivered name, shorter; its claim is then imported again under the identity of its
// new size, whose delivery name was never used. The copy is found by its inode instead
// of being delivered a second time.
func TestImportLinkRecoveredAfterDataLoss(t *testing.T) {
	s := newSetup(t)
	im := s.importer(t, nil)
	in := postfixMessage("alice@example.com", "lost")
	msg, src := s.linkDrop(t, "m", in)
	res, err := im.Import(context.Background(), msg)
	if err != nil || len(res.Delivered) != 1 || !res.Delivered[0].Linked {
		t.Fatalf("first import: %+v, %v", res.Delivered, err)
	}
	// What reached the disk before the power loss: the first half.
	if err := os.Truncate(src, int64(len(in)/2)); err != nil {
		t.Fatal(err)
	}
	again := fileMessage(t, src)
	again.Path, again.Recovered = src, true
	if DeliveryName(again, "alice@example.com") == DeliveryName(msg, "alice@example.com") {
		t.Fatal("the shortened file kept its delivery name: this test would show nothing")
	}
	res, err = im.Import(context.Background(), again)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Delivered) != 1 || !res.Delivered[0].Existing {
		t.Errorf("recovered import delivered %+v, want the linked copy found", res.Delivered)
	}
	if n := len(testenv.ListDir(t, filepath.Join(s.maildir("alice"), "new"))); n != 1 {
		t.Errorf("new/ holds %d messages, want 1", n)
	}
}
