package lmtp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// TestDovecotRestartedBetweenMessages: Dovecot restarts while mxdrop holds pooled LMTP
// sessions to it (on its unix socket and on TCP). The next message is delivered at
// once on a new session, not turned into a temporary failure by the dead one.
func TestDovecotRestartedBetweenMessages(t *testing.T) {
	srv := startAliceLMTP(t)
	for _, tc := range []struct{ name, address string }{
		{"unix", "unix:" + srv.LMTPSocket()},
		{"tcp", srv.LMTPAddr()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := newImporter(t, configs.LMTP{Address: tc.address, Connections: 1, Timeout: configs.Duration(10 * time.Second)})
			before := srv.Count(t, "alice", "INBOX")
			deliver := func(id string) {
				t.Helper()
				raw := fmt.Sprintf("Return-Path: <sender@example.net>\r\nX-Original-To: alice@example.com\r\nFrom: sender@example.net\r\n"+
					"To: alice@example.com\r\nSubject: %s\r\nMessage-ID: <%s-%s@example.net>\r\n\r\nhello\r\n", id, id, tc.name)
				res, err := im.Import(context.Background(), message(id+tc.name, []byte(raw)))
				if err != nil || res.Outcome != importer.OutcomeDelivered {
					t.Fatalf("%s: %+v, %v", id, res, err)
				}
			}
			deliver("before")
			srv.Restart(t)
			deliver("after")
			if got := srv.Count(t, "alice", "INBOX") - before; got != 2 {
				t.Errorf("INBOX got %d messages, want 2", got)
			}
		})
	}
}
