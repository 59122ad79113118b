package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/mxdrop/mxdrop/pollers/oauth"
)

// cmdOAuth runs `mxdrop oauth login NAME [--device] [--listen HOST:PORT]` (the one-time
// consent of an xoauth2 poller or relay) and `mxdrop oauth status`.
func cmdOAuth(configPath string, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &exitError{code: 2, err: errors.New("usage: mxdrop oauth login NAME [--device] [--listen HOST:PORT] | mxdrop oauth status")}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "status":
		fs := subFlags("oauth status", &configPath, stderr)
		cfg, err := parseAndLoad(fs, args, &configPath)
		if err != nil {
			return err
		}
		if err := oauth.Status(stdout, cfg, oauth.NewStore(cfg.StateDir)); err != nil {
			return &exitError{code: 1, err: err}
		}
		return nil
	case "login":
		fs := subFlags("oauth login", &configPath, stderr)
		device := fs.Bool("device", false, "use the device-code flow (a headless server: open the URL on any machine)")
		listen := fs.String("listen", "", "loopback address of the redirect listener (default 127.0.0.1 on a free port)")
		// The account name may come before or after the flags.
		var name string
		if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
			name, args = args[0], args[1:]
		}
		if err := fs.Parse(args); err != nil {
			return err
		}
		if name == "" && fs.NArg() > 0 {
			name = fs.Arg(0)
		}
		if name == "" {
			return &exitError{code: 2, err: errors.New("oauth login: name the poller, connector or \"smtp\" relay whose token to request")}
		}
		cfg, err := loadConfig(configPath)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		defer cancel()
		if *device {
			_, err = oauth.DeviceLogin(ctx, cfg, name, stdout, oauth.LoginOptions{})
		} else {
			_, err = oauth.Login(ctx, cfg, name, stdout, oauth.LoginOptions{Listen: *listen, In: os.Stdin})
		}
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		fmt.Fprintf(stdout, "token of %s stored in %s\n", name, oauth.NewStore(cfg.StateDir).Dir())
		return nil
	default:
		return &exitError{code: 2, err: fmt.Errorf("oauth: unknown command %q (login, status)", sub)}
	}
}
