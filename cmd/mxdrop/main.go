// Command mxdrop imports mail that an MTA drops into a folder, and mail fetched from
// POP3/IMAP accounts, into local Maildir accounts, and bounces what it cannot deliver.
//
//	mxdrop [--config FILE] [run [--once]]   run the daemon (the default command)
//	mxdrop [--config FILE] check-config     validate and explain the configuration
//	mxdrop version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/mxdrop/mxdrop/configs"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if err != flag.ErrHelp && err.Error() != "" {
		fmt.Fprintln(os.Stderr, "mxdrop:", err)
	}
	os.Exit(code)
}

const usage = `usage: mxdrop [--config FILE] [command] [flags]

commands:
  run [--once]        watch the drop folders and run the pollers (default);
                      --once imports what is there now and exits
  check-config        validate the configuration and print what it means
  export-recipients   print the accepted recipients as a Postfix or Exim map
  replay [--connector NAME] [FILE...]
                      move quarantined files back into the drop folder after the
                      configuration is fixed (their reason files are removed)
  oauth login NAME [--device]
                      the one-time OAuth consent of an xoauth2 poller or relay
  oauth status        each OAuth account's token state, without secrets
  status              backlog, quarantine, outbox and pollers as they are on disk
  version             print the version

With no --config, the embedded default configuration runs: drop folder ./var/drop,
every domain accepted, everything delivered to the Maildir ./var/mail/catchall.
`

// run dispatches a command line; it is main without the process exit, for tests.
func run(args []string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("mxdrop", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	configPath := global.String("config", "", "configuration file (YAML)")
	if err := global.Parse(args); err != nil {
		return err
	}
	rest := global.Args()
	cmd := "run"
	if len(rest) > 0 {
		cmd, rest = rest[0], rest[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(*configPath, rest, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(*configPath, rest, stdout, stderr)
	case "export-recipients":
		return cmdExportRecipients(*configPath, rest, stdout, stderr)
	case "oauth":
		return cmdOAuth(*configPath, rest, stdout, stderr)
	case "status":
		return cmdStatus(*configPath, rest, stdout, stderr)
	case "replay":
		return cmdReplay(*configPath, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "mxdrop", versionString())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: fmt.Errorf("unknown command %q", cmd)}
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// subFlags returns a flag set for a command that also accepts --config after the
// command name, where administrators often put it.
func subFlags(name string, configPath *string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mxdrop "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(configPath, "config", *configPath, "configuration file (YAML)")
	return fs
}

// parseAndLoad parses a command's flags (which may set *configPath) and loads the
// configuration. A flag error is returned as it is; a configuration error exits 1.
func parseAndLoad(fs *flag.FlagSet, args []string, configPath *string) (*configs.Config, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return nil, &exitError{code: 1, err: err}
	}
	return cfg, nil
}
