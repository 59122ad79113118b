// Package pollers pulls mail from remote POP3 and IMAP accounts into the importer: one
// Poller per `pollers:` entry of the configuration, each on its own schedule, all in one
// process. It fetches, hands every message to importer.Import exactly as the drop-folder
// watcher does (bounce failed recipients, quarantine what cannot be delivered), and only
// then deletes or keeps the server copy. The protocol clients live in pollers/imap and
// pollers/pop3; this package owns scheduling, state and the order of operations.
//
// # Wiring
//
//	ps, err := pollers.NewAll(cfg, pollers.Deps{Bouncer: b, Logger: log})
//	go pollers.RunAll(ctx, ps)           // the daemon: returns when ctx is done
//	stats, err := pollers.Once(ctx, ps)  // mxdrop run --once: one cycle of each
//
// New builds one Poller (it does not connect); Run polls until ctx is done; Cycle runs
// one pass. A configuration reload builds new Pollers; stop the old ones' Run (cancel
// its context and wait) before starting the new ones, since a state file admits one
// cycle at a time (a second process waits two seconds, then fails its cycle with
// ErrStateLocked and retries with backoff).
//
// # Schedule
//
// Each poller cycles every interval ±10%. After a failure it backs off exponentially:
// min(interval, 30s), doubling, up to max(interval, 1h). An IMAP poller with idle: true
// on a server with IDLE keeps one connection: after each cycle it waits in IDLE on its
// first folder and runs the next cycle as soon as the server reports a new message, or
// after interval (25 minutes at most, below the 29 minutes of RFC 2177), which also
// covers the other folders. A failing or hanging account delays nobody else: every
// poller has its own goroutine and connection, and every network wait is bounded by
// the poller's timeout (no byte for that long), except the wait in IDLE.
//
// # State
//
// Each poller keeps a bbolt file, state_dir/pollers/<name>/state.db (schema in
// state.go): per remote folder ("pop3", "imap:<folder>") its UIDVALIDITY, a "complete"
// flag, and one entry per message on the server, keyed by UIDL or UID, with its status
// (inflight, done, too_large), the time it was first seen, its Message-ID and size; and
// the (Message-ID, account) pairs delivered within duplicate_window. Entries of messages
// gone from the server are dropped by the next cycle. Fetched messages wait in
// memory (up to 1 MiB each and 16 MiB a batch; larger ones in
// state_dir/pollers/<name>/spool/, not fsynced: a crash refetches them) while they are
// imported; quarantined ones go to state_dir/ImportFailed/<name>/ with their reason.
// max_message_size is checked against the size the server lists, and again by the
// spool as the bytes arrive (before them, for an IMAP literal's size): a message that
// grows past it is discarded, its connection closed (a transfer cannot be skipped
// without reading it to its end), and it is recorded too_large like one listed too
// large; the cycle ends there, and the messages not fetched are pending.
//
// # Crash safety
//
// A batch (at most 50 messages, 32 MiB) goes: fetch into the spool; mark in flight (one
// transaction); import (side by side, up to `workers` at once; messages sharing a
// Message-ID in their order, one after the other) and fsync each Maildir folder
// delivered into once; mark done with the Message-ID keys (one transaction); delete at
// the server. The next batch is fetched while one is imported. kill -9 anywhere loses nothing: before "in flight" nothing happened; an
// entry found in flight is imported again with Message.Recovered set, and the importer
// skips every delivery already in the Maildir, found by its file name, which derives
// from Message.ID (poller, folder, UIDVALIDITY and UID, or the UIDL) and Message.Arrived
// (IMAP INTERNALDATE, or for POP3 the date of the topmost Received field): neither
// depends on the state, so the same message always gets the same names. After "done"
// the message is never fetched again; a delete that did not happen is repeated by the
// next cycle.
//
// A state file that is lost (state.id says this poller has run before) or corrupt (moved
// aside to state.db.corrupt-<time>) is reported as an error event, and a new one is
// started. Until a cycle has gone through a folder completely, every message without an
// entry is imported as Recovered, so messages still in the Maildirs are not delivered
// twice. (With keep: forever or days, a message the user has since deleted from the
// Maildir is delivered again; restore the state file from a backup to avoid that.) A
// folder renumbered by the server (new UIDVALIDITY) keeps the entries of the messages
// it recognises by Message-ID.
//
// Messages are stored with LF line endings, the Maildir convention: the POP3 client
// converts while it reads, IMAP's CRLF is converted while spooling. POP3 commands are
// pipelined where the server announces PIPELINING; deletions (DELE) take effect at
// QUIT, at the end of the cycle. IMAP flags each batch \Deleted and expunges at the end
// of the folder (or every 1000 messages) with UID EXPUNGE, or a plain EXPUNGE only when
// every \Deleted message of the folder is the poller's own (no UIDPLUS).
//
// # Duplicates
//
// A (Message-ID, account) pair is delivered once within duplicate_window, in both modes:
// providers that hold one copy per recipient, each naming every recipient, would
// otherwise deliver N copies to each account. A (Message-ID, failed recipient) pair is
// bounced once. Messages without a Message-ID are never suppressed.
package pollers
