package bounce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/address"
	"github.com/mxdrop/mxdrop/importer/quarantine"
)

// Actions of an Outcome.
const (
	ActionNone       = "none"       // no permanently failed recipient: nothing to report
	ActionDisabled   = "disabled"   // the source has bounce: false
	ActionSuppressed = "suppressed" // a loop or backscatter rule forbids the DSN (Outcome.Rule)
	ActionQueued     = "queued"     // durable in the outbox; Run sends it
	ActionDuplicate  = "duplicate"  // the outbox already had this message's DSN
	ActionUnsent     = "unsent"     // no relay: written to the source's folder (if any), never sent
)

// Outcome is what Process did with a message's failed recipients.
type Outcome struct {
	Action string
	Rule   string // the suppressing rule, with ActionSuppressed
	// DSN is the built DSN for every action but none, disabled and suppressed. With
	// ActionDuplicate it is built anew (same Message-ID, new Date).
	DSN *DSN
	// Path is where an unsent DSN was written, "" if nowhere.
	Path string
}

// Source is how the DSNs of one source (a connector, a poller) are made and sent.
type Source struct {
	// Relay names the outbox sender (OutboxOptions.Senders) its DSNs go through.
	Relay string
	// NoRelay: its DSNs are never sent, only written to Folder.
	NoRelay bool
	// Folder receives its DSNs when NoRelay, as <message name>.<identity>.dsn.eml, for
	// messages delivered to some of their recipients; the intake keeps the DSN of a
	// message it quarantines beside that message instead. "" = nowhere (Process only
	// returns them).
	Folder string
	// ReportingMTA names the host in its DSNs.
	ReportingMTA string
	// Disabled: the source has bounce: false.
	Disabled bool
}

// Config configures a Bouncer.
type Config struct {
	// Language of the DSNs: "en" (default) or "de".
	Language string
	// RateLimit DSNs per RateWindow to one sender; 0 takes the default 10 per 1h,
	// a negative RateLimit turns the limit off.
	RateLimit  int
	RateWindow time.Duration
	// Outbox queues the DSNs of sources with a relay; nil when no source has one.
	// Its SentRetention should be at least RateWindow.
	Outbox *Outbox
	// Sources by name; a name not in the map is handled as Default.
	Sources map[string]Source
	Default Source
	// Log is the parent logger; the Bouncer logs with component=bounce.
	Log zerolog.Logger
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
}

// Bouncer decides, builds and queues the DSNs of imported messages. It is safe for
// concurrent use.
type Bouncer struct {
	cfg     Config
	log     zerolog.Logger
	limiter *Limiter
	// sources holds the per-source settings (cfg.Sources, cfg.Default), which Reload
	// replaces.
	sources atomic.Pointer[sourceSet]

	// Observe, when not nil, is called by Bounce with the source and the action
	// (queued, suppressed with its rule, duplicate, unsent, disabled): the metrics
	// hook. Set it before the Bouncer is used.
	Observe func(source, action, rule string)
}

// New returns a Bouncer. It fails for an unknown language or a reporting MTA that is
// not a host name. The rate limit starts with what the outbox recorded within the
// window, so it holds across restarts.
func New(cfg Config) (*Bouncer, error) {
	if !ValidLanguage(cfg.Language) {
		return nil, fmt.Errorf("new bouncer: unknown language %q (en, de)", cfg.Language)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 10
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = time.Hour
	}
	if err := checkSources(cfg); err != nil {
		return nil, err
	}
	b := &Bouncer{
		cfg:     cfg,
		log:     cfg.Log.With().Str("component", "bounce").Logger(),
		limiter: NewLimiter(cfg.RateLimit, cfg.RateWindow),
	}
	b.sources.Store(&sourceSet{byName: cfg.Sources, def: cfg.Default})
	if cfg.Outbox != nil {
		cfg.Outbox.Each(cfg.Now().Add(-cfg.RateWindow), func(_ string, r Record) {
			b.limiter.Record(r.Sender, r.Queued)
		})
	}
	return b, nil
}

// checkSources checks that every enabled source has a reporting MTA that is a host
// name, and an outbox when it has a relay.
func checkSources(cfg Config) error {
	check := func(name string, s Source) error {
		if s.Disabled {
			return nil
		}
		if !address.HostName(importer.NormalizeDomain(s.ReportingMTA)) {
			return fmt.Errorf("new bouncer: source %q: reporting_mta %q is not a host name", name, s.ReportingMTA)
		}
		if !s.NoRelay && cfg.Outbox == nil {
			return fmt.Errorf("new bouncer: source %q has a relay but there is no outbox", name)
		}
		return nil
	}
	if err := check("", cfg.Default); err != nil {
		return err
	}
	for name, s := range cfg.Sources {
		if err := check(name, s); err != nil {
			return err
		}
	}
	return nil
}

// sourceSet is one generation of per-source settings.
type sourceSet struct {
	byName map[string]Source
	def    Source
}

func (b *Bouncer) source(name string) Source {
	set := b.sources.Load()
	if s, ok := set.byName[name]; ok {
		return s
	}
	return set.def
}

// Bounce is Process for a source that only needs the DSN: it returns the DSN's bytes
// (nil when none was made: suppressed, disabled, nothing failed) for a copy beside a
// quarantined original. An error means nothing durable happened: the source keeps the
// message and retries.
func (b *Bouncer) Bounce(ctx context.Context, source string, msg importer.Message, res importer.Result) ([]byte, error) {
	out, err := b.Process(ctx, source, msg, res)
	if err == nil && b.Observe != nil && out.Action != ActionNone {
		b.Observe(source, out.Action, out.Rule)
	}
	if err != nil || out.DSN == nil {
		return nil, err
	}
	return out.DSN.Data, nil
}

// Process handles the failed recipients of one imported message from source: it
// applies the loop and backscatter rules and the rate limit, builds one DSN listing
// every permanently failed recipient, and queues it durably in the outbox (or, with
// no relay, writes it to the source's folder). It returns after the DSN is durable, so
// the source may acknowledge the message next. An error is transient (disk trouble,
// ctx cancelled): nothing was queued, and the source keeps the message and retries;
// a repeated Process of the same message (same msg.ID) queues at most one DSN.
func (b *Bouncer) Process(ctx context.Context, source string, msg importer.Message, res importer.Result) (Outcome, error) {
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	src := b.source(source)
	// Only permanent failures are bounced; a temporary one is never reported as
	// failed.
	var failed []importer.Failure
	for _, f := range res.Failed {
		if f.Status == "" || strings.HasPrefix(f.Status, "5.") {
			failed = append(failed, f)
		}
	}
	if len(failed) == 0 {
		return Outcome{Action: ActionNone}, nil
	}
	res.Failed = failed
	rcpts := make([]string, len(failed))
	for i, f := range failed {
		rcpts[i] = f.Recipient
	}
	log := b.log.With().Str("source", source).Str("file", msg.Name).Str("message_id", res.MessageID).
		Str("sender", res.Envelope.Sender).Strs("failed", rcpts).Logger()
	if src.Disabled {
		log.Debug().Str("outcome", ActionDisabled).Msg("dsn not made: bounce disabled")
		return Outcome{Action: ActionDisabled}, nil
	}
	if rule := Suppress(res.Envelope, res.Header); rule != "" {
		log.Info().Str("outcome", ActionSuppressed).Str("rule", rule).Msg("dsn suppressed")
		return Outcome{Action: ActionSuppressed, Rule: rule}, nil
	}
	d, err := Build(NewReport(msg, res), Options{ReportingMTA: src.ReportingMTA, Language: b.cfg.Language, Now: b.cfg.Now})
	if errors.Is(err, ErrBadSender) {
		log.Info().Str("outcome", ActionSuppressed).Str("rule", RuleInvalidSender).Msg("dsn suppressed")
		return Outcome{Action: ActionSuppressed, Rule: RuleInvalidSender}, nil
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("bounce: %w", err)
	}
	log = log.With().Str("dsn_message_id", d.MessageID).Logger()

	if src.NoRelay {
		out := Outcome{Action: ActionUnsent, DSN: d}
		// A message delivered to none of its recipients goes to the quarantine,
		// where the intake writes this DSN beside it under the name it gets there:
		// a copy here too would be the same DSN twice.
		if src.Folder != "" && res.Outcome.DeliveredSome() {
			p, err := quarantine.Folder(src.Folder).WriteDSN(unsentName(msg), d.Data)
			if err != nil {
				return Outcome{}, fmt.Errorf("bounce: %w", err)
			}
			out.Path = p
		}
		log.Info().Str("outcome", ActionUnsent).Str("path", out.Path).Msg("dsn not sent: no relay configured")
		return out, nil
	}

	it := Item{ID: msg.ID, MessageID: res.MessageID, Relay: src.Relay, DSN: d}
	if _, dup := b.cfg.Outbox.State(msg.ID); dup {
		// A message imported again (a crash before its source was acknowledged):
		// the rate limit counted it the first time.
		if _, err := b.cfg.Outbox.Enqueue(it); err != nil {
			return Outcome{}, fmt.Errorf("bounce: %w", err)
		}
		return Outcome{Action: ActionDuplicate, DSN: d}, nil
	}
	now := b.cfg.Now()
	if !b.limiter.Allow(d.Sender, now) {
		log.Warn().Str("outcome", ActionSuppressed).Str("rule", RuleRateLimit).
			Int("rate_limit", b.cfg.RateLimit).Dur("rate_window", b.cfg.RateWindow).Msg("dsn suppressed")
		return Outcome{Action: ActionSuppressed, Rule: RuleRateLimit}, nil
	}
	queued, err := b.cfg.Outbox.Enqueue(it)
	if err != nil {
		b.limiter.Forget(d.Sender, now)
		return Outcome{}, fmt.Errorf("bounce: %w", err)
	}
	if !queued {
		b.limiter.Forget(d.Sender, now)
		return Outcome{Action: ActionDuplicate, DSN: d}, nil
	}
	return Outcome{Action: ActionQueued, DSN: d}, nil
}

// unsentName is the file name stem of an unsent DSN: the message's name (bounded as a
// quarantined message's is) when it is a plain file name, else "dsn", and a short
// digest of its identity. The digest keeps the DSNs of messages that had one name (a
// writer that reuses names) from replacing each other, and lets the same message
// imported again (a crash before its acknowledgement) replace its own.
func unsentName(msg importer.Message) string {
	n := msg.Name
	if n == "" || n != filepath.Base(n) || strings.HasPrefix(n, ".") || strings.ContainsAny(n, "/\\\x00") {
		n = "dsn"
	}
	return quarantine.FitName(n) + "." + outboxKey(msg.ID)[:12]
}

// Run sends the outbox until ctx is cancelled and returns nil then. Without an outbox
// it just waits for ctx.
func (b *Bouncer) Run(ctx context.Context) error {
	if b.cfg.Outbox == nil {
		<-ctx.Done()
		return nil
	}
	return b.cfg.Outbox.Run(ctx)
}

// Close releases the outbox (see Outbox.Close).
func (b *Bouncer) Close() error {
	if b.cfg.Outbox == nil {
		return nil
	}
	return b.cfg.Outbox.Close()
}

// Outbox returns the Bouncer's outbox, nil without one.
func (b *Bouncer) Outbox() *Outbox { return b.cfg.Outbox }

// OpenOptions complete Open.
type OpenOptions struct {
	// Log is the parent logger.
	Log zerolog.Logger
	// OAuth returns the SASL source of a relay with auth method xoauth2 (relay is ""
	// for the top-level smtp block, else the connector's name). nil makes such a
	// relay an error.
	OAuth func(relay string, cfg configs.SMTP) (SASLSource, error)
	// UnsentFolder receives the DSNs of sources other than connectors (pollers) when
	// the top-level smtp block has no host; "" keeps them nowhere. A connector's go
	// to its drop_folder/ImportFailed.
	UnsentFolder string
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
}

// Open builds the bounce side of a loaded configuration: a Relay for the top-level
// smtp block and one for every connector with an smtp block of its own (a whole
// relay; an empty host means no relay for that connector), the outbox in
// state_dir/outbox when any relay has a host, and the Bouncer. Connectors are
// sources by name; every other source (pollers) uses the top-level relay. Close the
// Bouncer to release the outbox.
func Open(cfg *configs.Config, o OpenOptions) (*Bouncer, error) {
	bc, senders, err := plan(cfg, o)
	if err != nil {
		return nil, err
	}
	if len(senders) > 0 {
		retention := max(DefaultSentRetention, bc.RateWindow)
		ob, err := OpenOutbox(OutboxOptions{
			Dir:           filepath.Join(cfg.StateDir, "outbox"),
			Senders:       senders,
			RetryFor:      cfg.Bounce.RetryFor.D(),
			MinBackoff:    cfg.Bounce.MinBackoff.D(),
			MaxBackoff:    cfg.Bounce.MaxBackoff.D(),
			SentRetention: retention,
			Now:           o.Now,
			Log:           o.Log,
		})
		if err != nil {
			return nil, fmt.Errorf("open bounce: %w", err)
		}
		bc.Outbox = ob
	}
	b, err := New(bc)
	if err != nil {
		if bc.Outbox != nil {
			bc.Outbox.Close()
		}
		return nil, err
	}
	return b, nil
}

// Reload replaces the per-source settings (relays, reporting MTAs, bounce on or off,
// the folders of unsent DSNs) with those cfg gives, as Open builds them, so that a
// connector added or changed by a configuration reload bounces through its own smtp
// block. The outbox, what it holds and the rate limit stay. It fails without changing
// anything, also when cfg needs an outbox and the Bouncer was opened without one (a
// first relay takes effect at the next start).
func (b *Bouncer) Reload(cfg *configs.Config, o OpenOptions) error {
	bc, senders, err := plan(cfg, o)
	if err != nil {
		return err
	}
	if len(senders) > 0 && b.cfg.Outbox == nil {
		return errors.New("reload bounce: the first relay needs an outbox: it takes effect at the next start")
	}
	bc.Outbox = b.cfg.Outbox
	if err := checkSources(bc); err != nil {
		return fmt.Errorf("reload bounce: %w", err)
	}
	if b.cfg.Outbox != nil {
		b.cfg.Outbox.setSenders(senders)
	}
	b.sources.Store(&sourceSet{byName: bc.Sources, def: bc.Default})
	return nil
}

// plan builds a Bouncer's Config (without its outbox) and the relays of cfg.
func plan(cfg *configs.Config, o OpenOptions) (Config, map[string]Sender, error) {
	host, _ := os.Hostname()
	topMTA := cfg.SMTP.ReportingMTA
	if topMTA == "" {
		topMTA = host
	}
	senders := map[string]Sender{}
	relay := func(name string, s configs.SMTP, mta string) error {
		ro := RelayOptions{LocalName: mta}
		if strings.EqualFold(s.Auth.Method, "xoauth2") {
			if o.OAuth == nil {
				return fmt.Errorf("open bounce: relay %s: auth xoauth2 needs an OAuth token source", s.Host)
			}
			src, err := o.OAuth(name, s)
			if err != nil {
				return fmt.Errorf("open bounce: relay %s: %w", s.Host, err)
			}
			ro.SASL = src
		}
		r, err := NewRelay(s, ro)
		if err != nil {
			return fmt.Errorf("open bounce: %w", err)
		}
		senders[name] = r
		return nil
	}
	bc := Config{
		Language:   cfg.Bounce.Language,
		RateLimit:  cfg.Bounce.RateLimit,
		RateWindow: cfg.Bounce.RateWindow.D(),
		Sources:    map[string]Source{},
		Default:    Source{ReportingMTA: topMTA, NoRelay: cfg.SMTP.Host == "", Folder: o.UnsentFolder},
		Log:        o.Log,
		Now:        o.Now,
	}
	if !bc.Default.NoRelay {
		if err := relay("", cfg.SMTP, topMTA); err != nil {
			return Config{}, nil, err
		}
	}
	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		s := Source{
			ReportingMTA: topMTA,
			NoRelay:      cfg.SMTP.Host == "",
			Folder:       quarantine.ForConnector(c.DropFolder).Path(),
			Disabled:     !c.BounceEnabled(),
		}
		// An empty smtp block is no override (the loader may also leave it nil).
		if c.SMTP != nil && !reflect.ValueOf(*c.SMTP).IsZero() {
			s.Relay = c.Name
			s.NoRelay = c.SMTP.Host == ""
			if c.SMTP.ReportingMTA != "" {
				s.ReportingMTA = c.SMTP.ReportingMTA
			}
			if !s.NoRelay && !s.Disabled {
				if err := relay(c.Name, *c.SMTP, s.ReportingMTA); err != nil {
					return Config{}, nil, err
				}
			}
		}
		bc.Sources[c.Name] = s
	}
	return bc, senders, nil
}
