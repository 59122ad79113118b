package pollers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/pollers/imap"
	"github.com/mxdrop/mxdrop/pollers/pace"
	"github.com/mxdrop/mxdrop/pollers/pop3"
)

// SASLFunc returns the SASL client a poller authenticates with when its auth method is
// xoauth2. It is called for every login, so it can refresh tokens; an error fails the
// cycle (and is retried with backoff).
type SASLFunc func(ctx context.Context, p configs.Poller) (sasl.Client, error)

// Deps are what a Poller needs besides its configuration.
type Deps struct {
	// Bouncer sends DSNs for failed recipients (collection mode without
	// unknown_recipients); nil: failed recipients are only logged and quarantined.
	Bouncer intake.Bouncer
	// Logger is the process logger; each poller logs through a child with
	// component=poller and poller=<name>.
	Logger zerolog.Logger
	// Clock returns the current time; nil means time.Now. It decides first-seen
	// times, keep: days expiry and the duplicate window, so tests can move it.
	Clock func() time.Time
	// XOAUTH2 authenticates pollers with auth method xoauth2; nil: such pollers fail
	// to log in with a clear error.
	XOAUTH2 SASLFunc
	// Spam judges messages for accounts with spam_check, or every message of a poller
	// with spam_check; nil: no spam check.
	Spam importer.Classifier
	// Target is the LMTP server of pollers with delivery: lmtp; nil: such pollers
	// fail to start.
	Target importer.Target
	// Observe, when not nil, is called after every cycle with its figures and its
	// error (nil on success): the metrics hook.
	Observe func(poller string, st CycleStats, err error)
	// ObserveMessage, when not nil, is called once per handled message, as for a
	// connector's messages: the metrics hook.
	ObserveMessage func(intake.Event)
}

// Poller polls one remote POP3 or IMAP account into the importer. Build it with New;
// run it with Run (a daemon) or Cycle (one pass). A Poller runs one cycle at a time:
// concurrent calls wait for each other.
type Poller struct {
	name      string
	cfg       configs.Poller
	keep      string // delete | forever | days, pollers_always_delete applied
	dir       string // state_dir/pollers/<name>: state.db, state.id, spool/
	im        *importer.Importer
	in        *intake.Intake // quarantine: state_dir/ImportFailed/<name>
	deliverTo string         // normalised deliver_to in single mode
	workers   int            // concurrent imports within a batch
	tls       *tls.Config
	deps      Deps
	now       func() time.Time
	log       zerolog.Logger

	// stateFault is handed to the state of every cycle (State.fault): tests only.
	stateFault func(scope string, c Change) error

	mu           sync.Mutex // held for a cycle
	checked      bool       // the state file's consistency check has run
	noIdleLogged bool

	healthMu sync.Mutex
	health   Health
}

// Keep policies.
const (
	KeepDelete  = "delete"
	KeepForever = "forever"
	KeepDays    = "days"
)

// New returns the Poller of p, one of cfg.Pollers, as loaded (defaults applied,
// secrets read). It checks what it needs (protocol, TLS mode, keep policy, the
// accounts named, the CA file) and fails without side effects; it does not connect.
// An inactive poller is built too: Run, RunAll and Once skip it.
func New(cfg *configs.Config, p configs.Poller, deps Deps) (*Poller, error) {
	if p.Name == "" || strings.ContainsAny(p.Name, `/\`) || strings.HasPrefix(p.Name, ".") {
		return nil, fmt.Errorf("poller name %q cannot name a folder", p.Name)
	}
	fail := func(format string, a ...any) (*Poller, error) {
		return nil, fmt.Errorf("poller %s: "+format, append([]any{p.Name}, a...)...)
	}
	p.ApplyDefaults() // the defaults of Load, for a Poller built without it
	switch p.Protocol {
	case "imap", "pop3":
	default:
		return fail("protocol %q is not pop3 or imap", p.Protocol)
	}
	switch p.TLS {
	case imap.TLSNone, imap.TLSStartTLS, imap.TLSImplicit:
	default:
		return fail("tls %q is not none, starttls or implicit", p.TLS)
	}
	if p.Host == "" || p.Port <= 0 {
		return fail("host and port are required")
	}
	keep := p.Keep
	if cfg.PollersAlwaysDelete {
		keep = KeepDelete
	}
	switch keep {
	case KeepDelete, KeepForever:
	case KeepDays:
		if p.KeepDays <= 0 {
			return fail("keep: days needs keep_days > 0")
		}
	default:
		return fail("keep %q is not delete, forever or days", keep)
	}
	opts := importer.Options{Accounts: cfg.Accounts, Spam: deps.Spam, SpamCheckAll: p.SpamCheck, SpamFolder: cfg.Spam.Folder}
	if p.Delivery == configs.DeliveryLMTP {
		if deps.Target == nil {
			return fail("delivery lmtp needs the lmtp block")
		}
		// single mode: RCPT is deliver_to, which may be any of the server's users.
		opts.Target, opts.ProgressDir = deps.Target, filepath.Join(cfg.StateDir, "lmtp")
	}
	switch p.Mode {
	case "single":
		if p.DeliverTo == "" {
			return fail("mode single needs deliver_to")
		}
		opts.DeliverTo = p.DeliverTo
		opts.Domains = []string{"."}
	case "collection":
		if len(p.AcceptedDomains) == 0 {
			return fail("mode collection needs accepted_domains")
		}
		opts.Domains = p.AcceptedDomains
		opts.UnknownTo = p.UnknownRecipients
	default:
		return fail("mode %q is not single or collection", p.Mode)
	}
	im, err := importer.New(opts)
	if err != nil {
		return fail("%v", err)
	}
	var deliverTo string
	if opts.DeliverTo != "" {
		deliverTo, _ = importer.NormalizeAddress(opts.DeliverTo)
	}
	tc, err := tlsConfig(p)
	if err != nil {
		return fail("%v", err)
	}
	now := deps.Clock
	if now == nil {
		now = time.Now
	}
	stateDir := cfg.StateDir
	if stateDir == "" {
		stateDir = filepath.Join("var", "state")
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = 1
	}
	log := deps.Logger.With().Str("component", "poller").Str("poller", p.Name).Logger()
	return &Poller{
		name: p.Name,
		cfg:  p,
		keep: keep,
		dir:  filepath.Join(stateDir, "pollers", p.Name),
		im:   im,
		in: &intake.Intake{
			Source: p.Name, Kind: intake.KindPoller, Importer: im, Bouncer: deps.Bouncer,
			Quarantine: quarantine.ForPoller(stateDir, p.Name), Log: log, Observe: deps.ObserveMessage,
		},
		deliverTo: deliverTo,
		workers:   workers,
		tls:       tc,
		deps:      deps,
		now:       now,
		log:       log,
	}, nil
}

// NewAll returns a Poller for every active poller of cfg, in configuration order, or
// the first error.
func NewAll(cfg *configs.Config, deps Deps) ([]*Poller, error) {
	var out []*Poller
	for _, pc := range cfg.Pollers {
		if !pc.IsActive() {
			continue
		}
		p, err := New(cfg, pc, deps)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Name is the poller's name.
func (p *Poller) Name() string { return p.name }

// Active reports whether the poller is configured to run.
func (p *Poller) Active() bool { return p.cfg.IsActive() }

// StatePath is the poller's state file.
func (p *Poller) StatePath() string { return filepath.Join(p.dir, "state.db") }

// Intake is the poller's intake; its Quarantine is where the poller quarantines the
// messages it cannot import, and its Replay brings them back without the server.
func (p *Poller) Intake() *intake.Intake { return p.in }

// tlsConfig returns the client TLS configuration of p: the system roots plus the
// certificates of ca_file, verified against the configured host.
func tlsConfig(p configs.Poller) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if p.CAFile != "" {
		pem, err := os.ReadFile(p.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", p.CAFile)
		}
	}
	return &tls.Config{ServerName: p.Host, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// LoginError is a login the server refused: wrong credentials, or an account it
// locked. Cycle returns it wrapped; errors.As finds it.
type LoginError struct {
	Host, Username string
	Err            error
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("login as %s at %s failed: %v", e.Username, e.Host, e.Err)
}
func (e *LoginError) Unwrap() error { return e.Err }

// connect dials and logs in. An OAuth login the server refuses is tried once more on a
// new connection: the refused token was marked bad, so the second attempt refreshes it
// (a revoked consent then fails with the error naming the fix). A new connection,
// because Dovecot drops an IMAP connection after a refused XOAUTH2 exchange.
func (p *Poller) connect(ctx context.Context) (session, error) {
	sess, err := p.connectOnce(ctx)
	var le *LoginError
	if err != nil && p.cfg.Auth.Method == "xoauth2" && errors.As(err, &le) {
		p.log.Info().Err(err).Msg("oauth login refused; refreshing the token and trying once more")
		sess, err = p.connectOnce(ctx)
	}
	return sess, err
}

// connectOnce dials the server and logs in.
func (p *Poller) connectOnce(ctx context.Context) (session, error) {
	addr := net.JoinHostPort(p.cfg.Host, strconv.Itoa(p.cfg.Port))
	switch p.cfg.Protocol {
	case "imap":
		c, err := imap.Dial(ctx, imap.Options{Addr: addr, TLS: p.cfg.TLS, TLSConfig: p.tls, Timeout: p.cfg.Timeout.D(), MaxMessageSize: p.maxMessageSize()})
		if err != nil {
			return nil, fmt.Errorf("imap %s: %w", addr, err)
		}
		if err := p.login(ctx, c); err != nil {
			c.Close()
			return nil, err
		}
		return newIMAPSession(p, c), nil
	case "pop3":
		return p.connectPOP3(ctx, addr)
	}
	return nil, fmt.Errorf("protocol %q", p.cfg.Protocol)
}

// authenticator is what both protocol clients offer for logging in.
type authenticator interface {
	Login(user, password string) error
	Authenticate(sc sasl.Client) error
}

func (p *Poller) login(ctx context.Context, c authenticator) error {
	var err error
	switch p.cfg.Auth.Method {
	case "", "password":
		err = c.Login(p.cfg.Username, p.cfg.Auth.Password.Reveal())
	case "xoauth2":
		if p.deps.XOAUTH2 == nil {
			return &LoginError{Host: p.cfg.Host, Username: p.cfg.Username, Err: errors.New("auth method xoauth2 is not available in this build")}
		}
		sc, serr := p.deps.XOAUTH2(ctx, p.cfg)
		if serr != nil {
			return fmt.Errorf("xoauth2 token: %w", serr)
		}
		err = c.Authenticate(sc)
	default:
		return fmt.Errorf("auth method %q", p.cfg.Auth.Method)
	}
	if err == nil {
		return nil
	}
	if isAuthError(err) {
		return &LoginError{Host: p.cfg.Host, Username: p.cfg.Username, Err: err}
	}
	return fmt.Errorf("login: %w", err)
}

func isAuthError(err error) bool {
	var ie *imap.AuthError
	return errors.As(err, &ie) || isPOP3AuthError(err)
}

// CycleStats counts what one cycle did.
type CycleStats struct {
	Poller      string
	Fetched     int // messages downloaded
	Delivered   int // imported into at least one Maildir
	Quarantined int // put into ImportFailed/
	Duplicates  int // suppressed: already delivered within duplicate_window
	Deleted     int // removed from the server (this cycle's and expired kept ones)
	Kept        int // handled this cycle and left on the server (keep: forever | days)
	TooLarge    int // over max_message_size, left on the server
	Pending     int // left for the next cycle by max_per_cycle
	Errors      int // messages or folders that failed and will be retried
	Duration    time.Duration
}

func (s *CycleStats) add(o CycleStats) {
	s.Fetched += o.Fetched
	s.Delivered += o.Delivered
	s.Quarantined += o.Quarantined
	s.Duplicates += o.Duplicates
	s.Deleted += o.Deleted
	s.Kept += o.Kept
	s.TooLarge += o.TooLarge
	s.Pending += o.Pending
	s.Errors += o.Errors
}

// replyTooLarge reports whether err ended a session because the server sent more
// than mxdrop reads for one command (IMAP's read budget, POP3's listing bounds).
func replyTooLarge(err error) bool {
	return errors.As(err, new(*imap.LimitError)) || errors.Is(err, pop3.ErrReplyTooLong)
}

// logCycle emits the one event of a cycle. A refused login is an error event of its
// own kind, so that it is never mistaken for a network hiccup.
func (p *Poller) logCycle(st CycleStats, err error) {
	p.recordCycle(st, err)
	var ev *zerolog.Event
	msg := "cycle"
	var le *LoginError
	switch {
	case errors.As(err, &le):
		ev = p.log.Error().Err(err).Str("reason", "login_failed").Str("host", p.cfg.Host).Str("username", p.cfg.Username)
		msg = "login failed"
	case replyTooLarge(err):
		// The session ended; nothing was deleted on the strength of the reply.
		ev = p.log.Error().Err(err).Str("reason", "server_reply_too_large").Str("host", p.cfg.Host)
		msg = "cycle failed"
	case errors.As(err, new(*pace.SlowError)):
		// A message came slower than pace.MinRate: the session ended; the message
		// stays on the server and is fetched again next cycle.
		ev = p.log.Error().Err(err).Str("reason", "server_too_slow").Str("host", p.cfg.Host)
		msg = "cycle failed"
	case err != nil:
		ev = p.log.Error().Err(err)
		msg = "cycle failed"
	case st.Errors > 0:
		ev = p.log.Warn()
	default:
		ev = p.log.Info()
	}
	ev.Int("fetched", st.Fetched).Int("delivered", st.Delivered).Int("quarantined", st.Quarantined).
		Int("duplicates", st.Duplicates).Int("deleted", st.Deleted).Int("kept", st.Kept).
		Int("too_large", st.TooLarge).Int("pending", st.Pending).Int("errors", st.Errors).
		Int64("duration_ms", st.Duration.Milliseconds()).Msg(msg)
}
