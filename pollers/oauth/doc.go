// Package oauth gives pollers and bounce relays with auth method xoauth2 their OAuth
// 2.0 access tokens (RFC 6749) and the SASL mechanisms that carry them: XOAUTH2
// (Google, Microsoft) and OAUTHBEARER (RFC 7628). It also runs the one-time consent
// behind "mxdrop oauth login" and the report of "mxdrop oauth status".
//
// # Accounts
//
// Every poller with auth method xoauth2 is an account named after the poller; the
// top-level smtp relay is the account "smtp" (RelayName); a connector's own smtp block
// is an account named after the connector. Each has its own consent and token file,
// even where two share a mailbox. The provider is google, microsoft (tenant "common"
// unless oauth.tenant says otherwise) or custom (auth_url, token_url); the scopes
// default to the provider's mail scopes (GoogleScopes, MicrosoftScopes).
//
// # Consent
//
// Login is the authorization code flow with PKCE (RFC 7636, S256) and a loopback
// redirect (RFC 8252): it prints the address to open in a browser, waits on
// 127.0.0.1 (localhost for Microsoft) for the redirect, checks its state, exchanges
// the code, and stores the grant. For a browser on another machine the user pastes
// the address the browser ended at into LoginOptions.In, or tunnels a fixed
// LoginOptions.Listen port over SSH. DeviceLogin is the device authorization grant
// (RFC 8628) for Microsoft and custom providers with a device endpoint; Google does
// not allow its Gmail scope in that flow.
//
// # Tokens
//
// Store keeps one JSON file per account, state_dir/oauth/<name>.json, mode 0600 in a
// 0700 folder, replaced durably (importer/durable): version, account, provider,
// client_id, username, subject (who signed in, from the id_token), scopes,
// token_type, access_token, refresh_token, expiry, obtained (the consent), refreshed
// (the last refresh), last_error and last_error_at (a refresh refused for good). A
// lock file <name>.lock beside it serialises refreshes and logins across processes.
//
// A Source serves one account: the stored access token while it is valid for more
// than the refresh margin (2 minutes), else a refreshed one, stored with the rotated
// refresh token before it is returned. A token file replaced by mxdrop oauth login is
// picked up by a running daemon at its next use. Invalidate (called by the SASL
// clients themselves when the server sends an error challenge) makes the next use
// refresh; Source.Authenticate logs in, and after a refusal refreshes and tries once
// more. A refresh the provider refuses for good (invalid_grant: consent revoked,
// password changed) is a *LoginRequiredError whose text names the account and
// "mxdrop oauth login NAME".
//
// Tokens and client secrets never appear in errors, logs or output: Token holds them
// as configs.Secret, errors carry the provider's error code and description with any
// secret replaced, and Status shows only state and times.
//
// # Wiring
//
//	sources, err := oauth.NewSources(cfg, oauth.Options{Logger: log})
//	pollers.Deps{XOAUTH2: sources.Poller}
//	bounce.OpenOptions{OAuth: func(relay string, _ configs.SMTP) (bounce.SASLSource, error) {
//		src, err := sources.Relay(relay)
//		if err != nil {
//			return nil, err
//		}
//		return src, nil
//	}}
//	oauth.Login(ctx, cfg, name, os.Stdout, oauth.LoginOptions{In: os.Stdin})
//	oauth.Status(os.Stdout, cfg, oauth.NewStore(cfg.StateDir))
//
// # Quirks
//
// go-imap v2 (v2.0.0-beta.8) sends an empty AUTHENTICATE continuation as "=", which
// Dovecot refuses as invalid base64 with BAD and a disconnect (emersion/go-imap#760).
// XOAUTH2 answers a refusal with an empty response, so over IMAP a refused XOAUTH2
// login ends the connection and its retry needs a new one; OAUTHBEARER, preferred by
// ChooseMechanism where offered, answers with 0x01 and is not affected. POP3 and SMTP
// send an empty line, as they should.
package oauth
