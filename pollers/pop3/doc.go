// Package pop3 is the POP3 client of mxdrop's pollers: RFC 1939 with CAPA (RFC 2449), STLS
// (RFC 2595), AUTH with any SASL mechanism (RFC 5034) and the response codes of RFC 2449
// and RFC 3206, over plaintext, STARTTLS or implicit TLS.
//
// A session is
//
//	c, err := pop3.Dial(ctx, pop3.Options{Addr: "pop.example.com:995", TLS: pop3.TLSImplicit})
//	err = c.Login(user, password)          // or c.AuthPlain, or c.Auth(saslClient)
//	uids, err := c.UIDL()
//	r, err := c.Retr(n)                    // stream; read to io.EOF, then r.Close()
//	err = c.Dele(n)
//	err = c.Quit()                         // only QUIT commits the deletions
//
// # Guarantees
//
//   - A message is streamed, never held in memory: Retr returns a reader that undoes the
//     dot-stuffing on the fly. The connection serves no other command until that reader
//     has reached the end or has been closed (Close reads the rest and throws it away).
//   - A message cut short (connection lost, idle timeout) surfaces as an error from Read,
//     io.ErrUnexpectedEOF for a lost connection, never as a clean io.EOF of a truncated
//     message; and the Client is then unusable.
//   - Deletions happen only at QUIT (RFC 1939 section 6, the UPDATE state). Close, a lost
//     connection or a crash before a successful Quit leaves every message on the server, so
//     a poller that dies between RETR and QUIT fetches the same messages again next time;
//     it recognises them by their UIDL.
//   - TLSStartTLS never falls back to plaintext: when the server refuses STLS, or sends
//     anything after its +OK before the handshake, Dial fails before any credential is sent.
//   - Timeout is an idle timeout: a read or write that makes no progress for that long
//     fails (the deadline is renewed on every read and write), however long a whole
//     message takes.
//   - A -ERR reply is an *Error with the command, the RFC 2449/3206 response code and the
//     server's text; errors.As tells a failed login from a temporary condition. Passwords
//     and SASL responses never appear in error text.
//
// # Why not github.com/knadh/go-pop3
//
// go-pop3 v1.0.0 (the POP3 client of listmonk) was read and judged unfit, for reasons that
// go beyond the features it lacks:
//
//   - RetrRaw and Retr read the whole message into a bytes.Buffer (Cmd -> ReadAll), and Retr
//     then parses it with go-message: memory grows with message size, against mxdrop's
//     bounded-memory guarantee.
//   - ReadAll does no dot-unstuffing: a body line "..x" comes back as "..x", not ".x".
//   - It ignores bufio.Reader.ReadLine's isPrefix, so a line longer than the 4 KiB buffer is
//     split by an inserted CRLF: the message is silently changed.
//   - No STLS, no CAPA, no AUTH/SASL (so no XOAUTH2 or OAUTHBEARER), only USER/PASS.
//   - No deadlines of any kind after dialling: a server that stops sending hangs the poller
//     forever. No context.
//   - TLS is either verified with the system roots or not verified at all; no way to pass a
//     tls.Config (a private CA, a client certificate).
//   - Errors are errors.New(server text): no type to tell an authentication failure from
//     [IN-USE] or [SYS/TEMP]. Stat indexes the reply without checking its length (a panic
//     on a short reply), and Quit leaks the connection when QUIT fails.
//
// Fixing that would be a rewrite of nearly every function of its 450 lines, so this package
// is written on net/textproto instead, at about the same size.
//
// A Client is not safe for concurrent use, except that Close may be called from another
// goroutine to abort a call that is blocked on the network.
package pop3
