package oauth

import (
	"fmt"
	"strings"

	"github.com/mxdrop/mxdrop/configs"
)

// RelayName is the account name of the top-level smtp relay. A connector's own smtp
// block is named after the connector, a poller after itself.
const RelayName = "smtp"

// Kinds of Account.
const (
	KindPoller = "poller"
	KindRelay  = "relay"
)

// Account is one configured user of auth method xoauth2: a poller, the top-level
// relay, or a connector's relay override. Its Name keys the token file.
type Account struct {
	Name     string // poller name, connector name, or RelayName
	Kind     string // KindPoller | KindRelay
	Active   bool   // an inactive poller still has an account, so it can log in first
	Username string // the mailbox the token must belong to
	Host     string // the server, for OAUTHBEARER and messages
	Port     int    // 0 when the configuration leaves the default
	OAuth    configs.OAuth
}

// Accounts returns every xoauth2 account of cfg in configuration order: pollers,
// then the top-level relay, then connectors with their own relay. It fails when two
// of them would share a name (a poller or connector called "smtp" beside an xoauth2
// top-level relay), since they would share one token file.
func Accounts(cfg *configs.Config) ([]Account, error) {
	var out []Account
	seen := map[string]bool{}
	add := func(a Account) error {
		if err := checkName(a.Name); err != nil {
			return err
		}
		if seen[a.Name] {
			return fmt.Errorf("oauth account name %q is used twice; rename the poller or connector (the top-level relay is %q)", a.Name, RelayName)
		}
		seen[a.Name] = true
		out = append(out, a)
		return nil
	}
	for _, p := range cfg.Pollers {
		if !strings.EqualFold(p.Auth.Method, "xoauth2") {
			continue
		}
		if err := add(Account{Name: p.Name, Kind: KindPoller, Active: p.IsActive(), Username: p.Username,
			Host: p.Host, Port: p.Port, OAuth: p.Auth.OAuth}); err != nil {
			return nil, err
		}
	}
	relay := func(name string, s configs.SMTP) error {
		if !strings.EqualFold(s.Auth.Method, "xoauth2") || s.Host == "" {
			return nil
		}
		return add(Account{Name: name, Kind: KindRelay, Active: true, Username: s.Auth.Username,
			Host: s.Host, Port: s.Port, OAuth: s.Auth.OAuth})
	}
	if err := relay(RelayName, cfg.SMTP); err != nil {
		return nil, err
	}
	for _, c := range cfg.Connectors {
		if c.SMTP == nil {
			continue
		}
		if err := relay(c.Name, *c.SMTP); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// FindAccount returns the xoauth2 account called name in cfg, or an error that lists
// the names there are.
func FindAccount(cfg *configs.Config, name string) (Account, error) {
	accts, err := Accounts(cfg)
	if err != nil {
		return Account{}, err
	}
	var names []string
	for _, a := range accts {
		if a.Name == name {
			return a, nil
		}
		names = append(names, a.Name)
	}
	if len(names) == 0 {
		return Account{}, fmt.Errorf("no oauth account %q: no poller or relay uses auth method xoauth2", name)
	}
	return Account{}, fmt.Errorf("no oauth account %q: the xoauth2 accounts are %s", name, strings.Join(names, ", "))
}

// checkName refuses names that cannot name a file in the token folder.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("oauth account name %q cannot name a token file", name)
	}
	return nil
}
