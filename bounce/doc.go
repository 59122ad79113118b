// Package bounce turns the failed recipients of an imported message into one delivery
// status notification (DSN, RFC 3464 inside an RFC 6522 multipart/report), decides
// whether it may be sent at all (loop and backscatter rules, a per-sender rate limit),
// keeps it in a durable outbox folder until an SMTP relay has taken it, and exports
// the recipients mxdrop serves as a Postfix or Exim map so the MTA can reject unknown
// recipients at SMTP time and bounces are rarely needed.
//
// # Wiring
//
// cmd/mxdrop calls Open with the loaded configuration, runs Bouncer.Run in its errgroup
// and calls Close after Run has returned. A source (a drop-folder connector, a poller)
// imports a message and, when the Result has failed recipients, calls Bouncer.Bounce
// (or Process, for the detailed Outcome) before it acknowledges the message, that is
// before it removes the drop file, quarantines it, or sends DELE/expunge:
//
//	res, err := imp.Import(ctx, msg)              // error: keep the message, retry
//	dsn, err := b.Bounce(ctx, source, msg, res)   // error: keep the message, retry
//	quarantine (with the DSN copy), acknowledge   // the source leaves only now
//
// importer/intake runs this sequence for every source.
//
// Bounce returns only once the DSN is durable in the outbox, or deliberately not
// queued: suppressed by a rule (logged with the rule), bounce disabled, or no relay
// configured (then it is written to the source's folder, a connector's ImportFailed/).
// The outbox file is named after the message identity (importer.Message.ID), so when
// the source dies between Bounce and its acknowledgement and imports the message
// again, the second Bounce finds the first DSN and queues nothing. Run sends the
// queue; a DSN is sent twice only if mxdrop dies between the relay's acceptance and
// the outbox update.
//
// # Outbox layout
//
//	<state_dir>/outbox/
//	  lock            flock held by the one process that owns the outbox
//	  tmp/            temporary files of durable writes
//	  queue/K.eml     a DSN waiting to be sent, K derived from the message identity
//	  queue/K.json    its metadata (the commit record: an .eml without it is an
//	                  interrupted enqueue and is removed when the outbox is opened)
//	  sent/K.*        sent DSNs, kept for a retention period: they make a repeated
//	                  enqueue a no-op and they are the rate limit's memory
//	  failed/K.*      DSNs given up on (5xx from the relay, or retry_for exceeded);
//	                  never deleted by mxdrop
package bounce
