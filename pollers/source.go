package pollers

import (
	"context"
	"time"
)

// remoteMsg is one message of a remote folder as a listing shows it.
type remoteMsg struct {
	Key  string // state key: the decimal UID, or the UIDL
	Num  uint32 // IMAP UID, or POP3 message number in this session
	Size int64  // bytes as the server reports them; -1 until described
	// Arrived is when the server received the message (IMAP INTERNALDATE). Zero for
	// POP3, whose arrival is read from the message's header once fetched. It must not
	// depend on poller state: it is part of the delivery file names, which must come
	// out the same after a lost state file.
	Arrived time.Time
	// Gen tells apart a new message that a POP3 server listed under the UIDL of one
	// delivered before (see verifyExpired): empty for the first message of a key. It is
	// part of the message's identity, so their delivery file names differ.
	Gen string
}

// session is a logged-in connection, as a cycle uses it.
type session interface {
	// folders names the remote folders a cycle goes through, in order.
	folders() []string
	// open selects a folder.
	open(ctx context.Context, name string) (folder, error)
	// close logs out, best effort.
	close()
}

// idler is a session that can wait for new mail.
type idler interface {
	canIdle() bool
	// idle waits until new mail is reported (true), max has passed, or ctx is done.
	idle(ctx context.Context, max time.Duration) (bool, error)
}

// folder is one remote folder during a session.
type folder interface {
	// scope names the folder's part of the state ("pop3", "imap:INBOX").
	scope() string
	// validity is the folder's IMAP UIDVALIDITY; 0 for POP3.
	validity() uint32
	// id and label give a message's importer identity and its name in logs.
	id(m remoteMsg) string
	label(m remoteMsg) string
	// list returns every message of the folder, oldest first. Size and Arrived may be
	// unknown; describe fills them in.
	list(ctx context.Context) ([]remoteMsg, error)
	// describe returns msgs with Size (and Arrived where the protocol has it) filled in,
	// leaving out messages that have vanished.
	describe(ctx context.Context, msgs []remoteMsg) ([]remoteMsg, error)
	// fetch downloads msgs into spool files. It returns the messages that arrived
	// complete, in the order of msgs, also when it fails part way.
	fetch(ctx context.Context, msgs []remoteMsg, sp *spool) ([]spooled, error)
	// remove deletes msgs from the server, or marks them for removal by commit (IMAP
	// \Deleted) or at the end of the session (POP3 DELE). It returns how many it
	// removed, counting those marked for the end of a POP3 session.
	remove(ctx context.Context, msgs []remoteMsg) (int, error)
	// commit removes what remove marked for it, and returns how many. A cycle calls it
	// once it has gone through the folder; what it leaves marked is removed by a later
	// cycle, since the state says those messages are handled.
	commit(ctx context.Context) (int, error)
	// done is called when the cycle has finished with the folder.
	done()
}

// deferredRemover is a folder whose remove only marks messages, for the end of the
// session to delete (POP3 DELE, QUIT): its commit ends the session and returns how many
// the server really removed, and it logs each of them.
type deferredRemover interface {
	// fetchRefused returns, and resets, how many messages fetch found refused by the
	// server: each stays on the server unfetched, an error of the cycle.
	fetchRefused() int
}

func isDeferredRemover(f folder) bool {
	_, ok := f.(deferredRemover)
	return ok
}

// headerPrinter is a folder that can tell the headerPrint of a server copy without
// fetching the whole message (POP3 TOP n 0).
type headerPrinter interface {
	headerPrint(ctx context.Context, m remoteMsg) (string, error)
}

// renumberer is a folder that can tell the Message-IDs of its messages without
// fetching them, to carry state across a change of UIDVALIDITY.
type renumberer interface {
	messageIDs(ctx context.Context, msgs []remoteMsg) (map[string]string, error)
}
