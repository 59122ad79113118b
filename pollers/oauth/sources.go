package oauth

import (
	"context"
	"fmt"

	"github.com/emersion/go-sasl"

	"github.com/mxdrop/mxdrop/configs"
)

// Sources holds the Source of every xoauth2 account of one configuration; build a
// new one on reload. It is safe for concurrent use.
type Sources struct {
	store *Store
	m     map[string]*Source
}

// NewSources returns a Source for every account of Accounts(cfg), with tokens under
// cfg.StateDir. It fails when an account's OAuth client cannot be built; missing
// tokens are reported by the Sources when used (and by Status).
func NewSources(cfg *configs.Config, opts Options) (*Sources, error) {
	accts, err := Accounts(cfg)
	if err != nil {
		return nil, err
	}
	ss := &Sources{store: NewStore(cfg.StateDir), m: map[string]*Source{}}
	for _, a := range accts {
		src, err := NewSource(a, ss.store, opts)
		if err != nil {
			return nil, err
		}
		ss.m[a.Name] = src
	}
	return ss, nil
}

// Store is where the Sources keep their tokens.
func (ss *Sources) Store() *Store { return ss.store }

// Get returns the Source of account name, or nil.
func (ss *Sources) Get(name string) *Source { return ss.m[name] }

// Poller returns an XOAUTH2 client for poller p with a fresh access token; its
// signature is pollers.SASLFunc, so Deps{XOAUTH2: sources.Poller} wires it. A refusal
// by the server invalidates the token, so the next login refreshes it. It fails for a
// poller without an xoauth2 account, and as Source.AccessToken.
func (ss *Sources) Poller(ctx context.Context, p configs.Poller) (sasl.Client, error) {
	return ss.PollerFor(ctx, p, nil)
}

// PollerFor is Poller for a server that offers the SASL mechanisms offered: OAUTHBEARER
// where offered, else XOAUTH2 (see ChooseMechanism).
func (ss *Sources) PollerFor(ctx context.Context, p configs.Poller, offered []string) (sasl.Client, error) {
	src := ss.m[p.Name]
	if src == nil || src.acct.Kind != KindPoller {
		return nil, fmt.Errorf("poller %s has no oauth account (auth method %q)", p.Name, p.Auth.Method)
	}
	return src.SASLClientFor(ctx, offered)
}

// Relay returns the Source of a relay with auth method xoauth2, named as
// bounce.OpenOptions.OAuth names it: "" for the top-level smtp block (account
// RelayName), else the connector's name. The Source is a bounce.SASLSource; it fails
// (never returning a nil *Source without error) when that relay has no xoauth2 account.
func (ss *Sources) Relay(relay string) (*Source, error) {
	name := relay
	if name == "" {
		name = RelayName
	}
	src := ss.m[name]
	if src == nil || src.acct.Kind != KindRelay {
		return nil, fmt.Errorf("relay %s has no oauth account (is its auth method xoauth2?)", name)
	}
	return src, nil
}
