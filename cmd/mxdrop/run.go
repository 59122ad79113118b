package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/bounce"
	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
	"github.com/mxdrop/mxdrop/importer/intake"
	"github.com/mxdrop/mxdrop/importer/lmtp"
	"github.com/mxdrop/mxdrop/importer/quarantine"
	"github.com/mxdrop/mxdrop/importer/spam"
	"github.com/mxdrop/mxdrop/pollers"
	"github.com/mxdrop/mxdrop/pollers/oauth"
	"github.com/mxdrop/mxdrop/watcher"
)

// loadConfig loads the file at path, or the embedded default when path is "".
func loadConfig(path string) (*configs.Config, error) {
	if path == "" {
		return configs.Default()
	}
	return configs.Load(path)
}

// newLogger returns the process logger as the configuration asks: JSON events on
// stderr, or a console format for humans.
func newLogger(cfg *configs.Config, stderr io.Writer) zerolog.Logger {
	var w io.Writer = stderr
	if cfg.Log.Format == "console" {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.RFC3339}
	}
	lvl, err := zerolog.ParseLevel(cfg.Log.Level)
	if err != nil || cfg.Log.Level == "" {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// app is what one configuration generation builds.
type app struct {
	cfg        *configs.Config
	connectors []*watcher.Connector
	pollers    []*pollers.Poller
	spam       *spam.Checker // nil when no source or account checks for spam
	lmtp       *lmtp.Client  // nil without an lmtp block
}

// spamWanted reports whether any account, connector or poller asks for the spam check.
func spamWanted(cfg *configs.Config) bool {
	for _, a := range cfg.Accounts {
		if a.SpamCheck {
			return true
		}
	}
	for _, c := range cfg.Connectors {
		if c.SpamCheck && c.IsActive() {
			return true
		}
	}
	for _, p := range cfg.Pollers {
		if p.SpamCheck && p.IsActive() {
			return true
		}
	}
	return false
}

// build turns a configuration into running parts. It fails without side effects
// beyond creating folders, so a bad reload keeps the old generation. bouncer may be nil
// (check-config).
func build(cfg *configs.Config, log zerolog.Logger, bouncer *bounce.Bouncer, mt *metrics, tokens *oauth.Sources) (*app, error) {
	a := &app{cfg: cfg}
	var classifier importer.Classifier
	if spamWanted(cfg) {
		checker, err := spam.New(cfg.Spam, log.With().Str("component", "spam").Logger())
		if err != nil {
			return nil, err
		}
		classifier = checker
		a.spam = checker
	}
	// One pool of LMTP sessions for every source that delivers over LMTP. It dials
	// nothing until the first message.
	var target importer.Target
	if cfg.LMTP.Address != "" {
		cl, err := lmtp.New(cfg.LMTP, cfg.SMTP.ReportingMTA)
		if err != nil {
			return nil, err
		}
		target, a.lmtp = cl, cl
	}
	progressDir := filepath.Join(cfg.StateDir, "lmtp")
	for _, c := range cfg.Connectors {
		if !c.IsActive() {
			continue
		}
		var ct importer.Target
		if c.Delivery == configs.DeliveryLMTP {
			ct = target
		}
		im, err := importer.New(importer.Options{
			Target:          ct,
			ProgressDir:     progressDir,
			Accounts:        cfg.Accounts,
			Domains:         c.Subdomains,
			Mailboxes:       c.Mailboxes,
			UnknownTo:       c.UnknownRecipients,
			EnvelopeHeaders: c.EnvelopeHeaders,
			MaxMessageSize:  c.MaxMessageSize,
			Spam:            classifier,
			SpamCheckAll:    c.SpamCheck,
			SpamFolder:      cfg.Spam.Folder,
		})
		if err != nil {
			return nil, fmt.Errorf("connector %s: %w", c.Name, err)
		}
		cl := log.With().Str("component", "watcher").Str("connector", c.Name).Logger()
		in := &intake.Intake{
			Source: c.Name, Kind: intake.KindConnector, Importer: im,
			Quarantine: quarantine.ForConnector(c.DropFolder), Log: cl,
		}
		if bouncer != nil {
			in.Bouncer = bouncer
		}
		if mt != nil {
			in.Observe = mt.observeMessage
		}
		a.connectors = append(a.connectors, &watcher.Connector{
			Name:         c.Name,
			DropFolder:   c.DropFolder,
			Settle:       c.Settle.D(),
			Watch:        c.Watch,
			PollInterval: c.PollInterval.D(),
			ClaimLease:   c.ClaimLease.D(),
			KeepImported: c.KeepImported,
			Intake:       in,
			Log:          cl,
		})
	}
	deps := pollers.Deps{Logger: log, Spam: classifier, Target: target}
	if tokens != nil {
		deps.XOAUTH2 = tokens.Poller
	}
	if mt != nil {
		deps.Observe = mt.observeCycle
		deps.ObserveMessage = mt.observeMessage
	}
	if bouncer != nil {
		deps.Bouncer = bouncer
	}
	ps, err := pollers.NewAll(cfg, deps)
	if err != nil {
		return nil, err
	}
	a.pollers = ps
	return a, nil
}

func cmdRun(configPath string, args []string, stdout, stderr io.Writer) error {
	fs := subFlags("run", &configPath, stderr)
	once := fs.Bool("once", false, "import every file now present, print a summary and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	setProcs()
	log := newLogger(cfg, stderr)
	tokens, err := oauth.NewSources(cfg, oauth.Options{Logger: log})
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	bouncer, err := bounce.Open(cfg, bounceOptions(cfg, log, tokens))
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	defer bouncer.Close()
	mt := newMetrics()
	bouncer.Observe = mt.observeBounce
	a, err := build(cfg, log, bouncer, mt, tokens)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	for _, c := range a.connectors {
		if err := os.MkdirAll(c.DropFolder, 0o750); err != nil {
			log.Error().Err(err).Str("connector", c.Name).Msg("cannot create drop folder")
		}
	}
	m := watcher.NewManager(watcher.NewInstanceID(), cfg.Workers, log)
	if *once {
		return runOnce(m, a, bouncer, stdout)
	}
	return runDaemon(m, a, bouncer, mt, tokens, configPath, log)
}

// bounceOptions are the options of bounce.Open and Bouncer.Reload.
func bounceOptions(cfg *configs.Config, log zerolog.Logger, tokens *oauth.Sources) bounce.OpenOptions {
	return bounce.OpenOptions{
		Log:          log,
		UnsentFolder: filepath.Join(cfg.StateDir, quarantine.FolderName),
		OAuth: func(relay string, _ configs.SMTP) (bounce.SASLSource, error) {
			src, err := tokens.Relay(relay)
			if err != nil {
				return nil, err
			}
			return src, nil
		},
	}
}

// runOnce imports what is in the drop folders now and prints one summary line. It
// fails when a transient error left files behind.
func runOnce(m *watcher.Manager, a *app, bouncer *bounce.Bouncer, stdout io.Writer) error {
	start := time.Now()
	var pstats []pollers.CycleStats
	var perr error
	var wg sync.WaitGroup
	if len(a.pollers) > 0 {
		wg.Go(func() { pstats, perr = pollers.Once(context.Background(), a.pollers) })
	}
	err := m.Once(context.Background(), a.connectors)
	wg.Wait()
	if ob := bouncer.Outbox(); ob != nil {
		// One delivery attempt for the DSNs that are due; the rest wait in the outbox
		// for the next run or the daemon.
		ob.ProcessDue(context.Background())
	}
	c := m.Counts()
	line := fmt.Sprintf("imported %d, failed %d, skipped %d, retry %d, waiting %d",
		c.Imported.Load(), c.Quarantined.Load(), c.Skipped.Load(), c.Retry.Load(), c.Waiting.Load())
	if len(a.pollers) > 0 {
		var fetched, delivered, quarantined, errs int
		for _, st := range pstats {
			fetched += st.Fetched
			delivered += st.Delivered
			quarantined += st.Quarantined
			errs += st.Errors
		}
		line += fmt.Sprintf("; pollers: fetched %d, delivered %d, failed %d, errors %d", fetched, delivered, quarantined, errs)
	}
	fmt.Fprintf(stdout, "%s in %s\n", line, time.Since(start).Round(time.Millisecond))
	if err == nil {
		err = perr
	}
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if n := c.Retry.Load(); n > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d files met a transient error; they stay claimed and are retried by the next run", n)}
	}
	return nil
}

// runDaemon runs until SIGINT or SIGTERM, then finishes the messages in flight and
// returns; a second signal exits at once. SIGHUP and a change of the configuration
// file reload the configuration; an invalid one is logged and the old one kept.
func runDaemon(m *watcher.Manager, a *app, bouncer *bounce.Bouncer, mt *metrics, tokens *oauth.Sources, configPath string, log zerolog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// A second signal exits at once. Catch it before NotifyContext lets go, so
		// no signal falls into the default action in between.
		force := make(chan os.Signal, 1)
		signal.Notify(force, syscall.SIGINT, syscall.SIGTERM)
		stop()
		<-force
		log.Warn().Msg("second signal: exiting without finishing messages in flight")
		os.Exit(130)
	}()

	pg := &pollerGroup{}
	reload := make(chan string, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			select {
			case reload <- "sighup":
			default:
			}
		}
	}()
	if configPath != "" {
		watchConfigFile(ctx, configPath, reload, log)
	}
	running := a.cfg
	// The LMTP pool of the running generation: a reload replaces it, and it is closed
	// (its idle sessions end with QUIT) when mxdrop stops.
	var lmtpMu sync.Mutex
	runningLMTP := a.lmtp
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case why := <-reload:
				sdNotify("RELOADING=1")
				cfg, err := configs.Load(configPath)
				sdNotify("READY=1")
				if err != nil {
					log.Error().Err(err).Str("trigger", why).Msg("configuration reload failed; keeping the running configuration")
					continue
				}
				if !reflect.DeepEqual(cfg.Bounce, running.Bounce) {
					log.Warn().Msg("bounce settings (language, rate limit, retries) take effect at the next restart")
				}
				ntokens, err := oauth.NewSources(cfg, oauth.Options{Logger: log})
				if err != nil {
					log.Error().Err(err).Str("trigger", why).Msg("configuration reload failed; keeping the running configuration")
					continue
				}
				na, err := build(cfg, log, bouncer, mt, ntokens)
				if err != nil {
					log.Error().Err(err).Str("trigger", why).Msg("configuration reload failed; keeping the running configuration")
					continue
				}
				// The sources' bounce settings (a connector's own smtp block) change
				// before the sources that use them start.
				if err := bouncer.Reload(cfg, bounceOptions(cfg, log, ntokens)); err != nil {
					log.Warn().Err(err).Str("trigger", why).Msg("smtp settings take effect at the next restart")
				}
				m.Update(na.connectors)
				pg.replace(ctx, na.pollers)
				mt.setLive(&liveState{a: na, m: m, bouncer: bouncer, ps: na.pollers})
				lmtpMu.Lock()
				if runningLMTP != nil {
					runningLMTP.Close() // its idle sessions; the new generation dials its own
				}
				runningLMTP = na.lmtp
				lmtpMu.Unlock()
				running = cfg
				log.Info().Str("trigger", why).Int("connectors", len(na.connectors)).Int("pollers", len(na.pollers)).Msg("configuration reloaded")
			}
		}
	}()

	outboxDone := make(chan error, 1)
	go func() { outboxDone <- bouncer.Run(ctx) }()
	pg.replace(ctx, a.pollers)
	mt.setLive(&liveState{a: a, m: m, bouncer: bouncer, ps: a.pollers})
	if addr := a.cfg.Metrics.Listen; addr != "" {
		go func() {
			if err := mt.serve(ctx, addr, log); err != nil {
				log.Error().Err(err).Str("listen", addr).Msg("metrics endpoint failed")
			}
		}()
	}
	logStartup(log, a.cfg)
	log.Info().Str("version", versionString()).Int("connectors", len(a.connectors)).Int("workers", a.cfg.Workers).Int("go_procs", runtime.GOMAXPROCS(0)).Msg("mxdrop started")
	sdNotify("READY=1")
	go func() {
		<-ctx.Done()
		sdNotify("STOPPING=1")
	}()
	err := m.Run(ctx, a.connectors)
	pg.stop()
	lmtpMu.Lock()
	if runningLMTP != nil {
		runningLMTP.Close()
	}
	lmtpMu.Unlock()
	if oerr := <-outboxDone; oerr != nil && err == nil {
		err = oerr
	}
	log.Info().Msg("mxdrop stopped")
	return err
}

// pollerGroup runs one configuration generation's pollers. A poller's state file allows
// one cycle at a time, so a reload stops the old pollers before the new ones start.
type pollerGroup struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func (g *pollerGroup) replace(ctx context.Context, ps []*pollers.Poller) {
	g.stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	g.cancel, g.done = cancel, done
	go func() {
		defer close(done)
		pollers.RunAll(pctx, ps)
	}()
}

func (g *pollerGroup) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cancel != nil {
		g.cancel()
		<-g.done
		g.cancel, g.done = nil, nil
	}
}

// watchConfigFile asks for a reload when the configuration file changes. It watches the
// folder, because editors and configuration managers replace the file by a rename. The
// watch is in place when it returns (before mxdrop reports that it started, so a change
// made after that is never missed); its events are read on a goroutine until ctx ends.
func watchConfigFile(ctx context.Context, path string, reload chan<- string, log zerolog.Logger) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn().Err(err).Msg("cannot watch the configuration file; reload with SIGHUP")
		return
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		w.Close()
		log.Warn().Err(err).Msg("cannot watch the configuration file; reload with SIGHUP")
		return
	}
	go func() {
		defer w.Close()
		var timer *time.Timer
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Name != abs || !ev.Has(fsnotify.Write|fsnotify.Create|fsnotify.Rename) {
					continue
				}
				// Editors write in several steps: reload once the file has been quiet.
				if timer != nil {
					timer.Stop()
				}
				timer = time.AfterFunc(200*time.Millisecond, func() {
					select {
					case reload <- "config_file_changed":
					default:
					}
				})
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				if !errors.Is(err, fsnotify.ErrEventOverflow) {
					log.Warn().Err(err).Msg("configuration file watch")
				}
			}
		}
	}()
}

func cmdCheckConfig(configPath string, args []string, stdout, stderr io.Writer) error {
	fs := subFlags("check-config", &configPath, stderr)
	cfg, err := parseAndLoad(fs, args, &configPath)
	if err != nil {
		return err
	}
	if _, err := build(cfg, zerolog.Nop(), nil, nil, nil); err != nil {
		return &exitError{code: 1, err: err}
	}
	if err := configs.Describe(stdout, cfg); err != nil {
		return err
	}
	if len(cfg.Connectors) > 0 {
		fmt.Fprintf(stdout, "\nWatching (on this host)\n")
		describeWatch(stdout, cfg, "  ")
	}
	return nil
}

func cmdExportRecipients(configPath string, args []string, stdout, stderr io.Writer) error {
	fs := subFlags("export-recipients", &configPath, stderr)
	format := fs.String("format", "postfix", "postfix | exim | plain")
	cfg, err := parseAndLoad(fs, args, &configPath)
	if err != nil {
		return err
	}
	if err := bounce.WriteRecipientMap(stdout, cfg, *format); err != nil {
		return &exitError{code: 1, err: err}
	}
	return nil
}
