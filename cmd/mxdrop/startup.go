package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer"
)

// logStartup tells a newcomer, at start, what the daemon watches and where mail goes:
// one event per connector (drop folder, watch mode, target) and per poller, and with
// the embedded default a plain sentence of what to do.
func logStartup(log zerolog.Logger, cfg *configs.Config) {
	for i := range cfg.Connectors {
		c := &cfg.Connectors[i]
		if !c.IsActive() {
			continue
		}
		mode := watchChoice(c)
		log.Info().Str("connector", c.Name).Str("drop_folder", shortPath(c.DropFolder)).
			Str("watch", mode.Mode).Str("watch_reason", mode.Reason).
			Str("delivery", targetOf(cfg, c.Delivery, c.Mailboxes, "")).Msg("connector")
	}
	for i := range cfg.Pollers {
		p := &cfg.Pollers[i]
		if !p.IsActive() {
			continue
		}
		log.Info().Str("poller", p.Name).Str("protocol", p.Protocol).Str("host", p.Host).
			Str("username", p.Username).Str("delivery", targetOf(cfg, p.Delivery, nil, p.DeliverTo)).
			Dur("interval", p.Interval.D()).Msg("poller")
	}
	if cfg.File == "" && len(cfg.Connectors) == 1 && len(cfg.Accounts) == 1 {
		log.Info().Msgf("embedded default configuration: drop .eml files into %s; mail lands in %s",
			shortPath(cfg.Connectors[0].DropFolder), shortPath(cfg.Accounts[0].Maildir))
	}
}

// targetOf says where a source's mail goes: the LMTP server, or the Maildirs of the
// accounts it serves (deliverTo alone for a single-account poller).
func targetOf(cfg *configs.Config, delivery string, mailboxes []string, deliverTo string) string {
	if delivery == configs.DeliveryLMTP {
		return "lmtp " + cfg.LMTP.Address
	}
	serves := func(addr string) bool {
		if deliverTo != "" {
			return sameAddress(addr, deliverTo)
		}
		if len(mailboxes) == 0 {
			return true
		}
		for _, m := range mailboxes {
			if sameAddress(addr, m) {
				return true
			}
		}
		return false
	}
	var dirs []string
	for _, a := range cfg.Accounts {
		if serves(a.Address) {
			dirs = append(dirs, shortPath(a.Maildir))
		}
	}
	const most = 5
	if len(dirs) > most {
		dirs = append(dirs[:most], "...")
	}
	return "maildir " + strings.Join(dirs, ", ")
}

func sameAddress(a, b string) bool {
	na, ok1 := importer.NormalizeAddress(a)
	nb, ok2 := importer.NormalizeAddress(b)
	return ok1 && ok2 && na == nb
}

// shortPath is path relative to the working folder when it lies inside it ("./var/drop"),
// else path.
func shortPath(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return path
	}
	return "." + string(filepath.Separator) + rel
}
