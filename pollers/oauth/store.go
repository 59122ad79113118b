package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mxdrop/mxdrop/configs"
	"github.com/mxdrop/mxdrop/importer/durable"
)

// Token is the stored grant of one account. Its secrets are configs.Secret, so
// printing a Token (fmt, zerolog, JSON) shows "***" in their place.
type Token struct {
	Account  string   // the account name the file is stored under
	Provider string   // configs.OAuth.Provider at login
	ClientID string   // the client the grant belongs to; a refresh needs the same
	Username string   // the configured mailbox at login
	Subject  string   // who signed in, from the provider's id_token (email, else sub); "" if none came
	Scopes   []string // the scopes requested at login

	TokenType    string         // "Bearer"
	AccessToken  configs.Secret // "" until the first token
	RefreshToken configs.Secret // "" when the provider issued none: a login is needed when the access token expires
	Expiry       time.Time      // of the access token; zero when the provider said nothing

	Obtained  time.Time // when the consent (Login, DeviceLogin) produced the grant
	Refreshed time.Time // the last successful refresh; zero before the first
	// LastError is the provider's error code ("invalid_grant") of the last refresh that
	// failed for good, at LastErrorAt; a later success clears both.
	LastError   string
	LastErrorAt time.Time
}

// tokenFile is the file format, version 1: JSON, one object.
type tokenFile struct {
	Version      int       `json:"version"`
	Account      string    `json:"account"`
	Provider     string    `json:"provider"`
	ClientID     string    `json:"client_id"`
	Username     string    `json:"username"`
	Subject      string    `json:"subject,omitempty"`
	Scopes       []string  `json:"scopes,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	Obtained     time.Time `json:"obtained,omitzero"`
	Refreshed    time.Time `json:"refreshed,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
}

const tokenFileVersion = 1

// maxTokenFile bounds what Load reads: a token file is a few kilobytes.
const maxTokenFile = 1 << 20

// ErrNoToken is returned (wrapped) by Store.Load for an account without a token file.
var ErrNoToken = errors.New("no token stored")

// errDamaged marks a token file that exists but cannot be used: only a new login
// replaces it.
var errDamaged = errors.New("damaged token file")

// Store keeps one token file per account: <state_dir>/oauth/<name>.json, mode 0600
// in a 0700 folder, written durably (temporary file, fsync, rename, folder fsync), so
// a crash leaves the old file or the new one. A Store is safe for concurrent use; its
// callers serialise writers of one account (Source does, across processes too).
type Store struct {
	dir string
}

// NewStore returns the Store under stateDir; nothing is created until Save.
func NewStore(stateDir string) *Store {
	return &Store{dir: filepath.Join(stateDir, "oauth")}
}

// Dir is the folder of the token files.
func (s *Store) Dir() string { return s.dir }

// Path is the token file of account name.
func (s *Store) Path(name string) string { return filepath.Join(s.dir, name+".json") }

// Load reads the token of account name. A missing file is an error wrapping
// ErrNoToken; an unreadable, malformed or unknown version of file is an error that
// names the file, never its content.
func (s *Store) Load(name string) (*Token, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(s.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load token of %s: %w", name, ErrNoToken)
	}
	if err != nil {
		return nil, fmt.Errorf("load token of %s: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, fmt.Errorf("load token of %s: %w", name, err)
	}
	if len(b) > maxTokenFile {
		return nil, fmt.Errorf("load token of %s: %w: %s is larger than %d bytes", name, errDamaged, s.Path(name), maxTokenFile)
	}
	var tf tokenFile
	// The decoder's errors quote no input beyond a type name or an offset.
	if err := json.Unmarshal(b, &tf); err != nil {
		return nil, fmt.Errorf("load token of %s: %w: %s is not a token file (%v)", name, errDamaged, s.Path(name), jsonErrorKind(err))
	}
	if tf.Version != tokenFileVersion {
		return nil, fmt.Errorf("load token of %s: %w: %s has version %d, this mxdrop reads %d", name, errDamaged, s.Path(name), tf.Version, tokenFileVersion)
	}
	return &Token{
		Account: name, Provider: tf.Provider, ClientID: tf.ClientID, Username: tf.Username,
		Subject: tf.Subject, Scopes: tf.Scopes, TokenType: tf.TokenType,
		AccessToken: configs.Secret(tf.AccessToken), RefreshToken: configs.Secret(tf.RefreshToken),
		Expiry: tf.Expiry, Obtained: tf.Obtained, Refreshed: tf.Refreshed,
		LastError: tf.LastError, LastErrorAt: tf.LastErrorAt,
	}, nil
}

// jsonErrorKind describes a decoding error without the input it quotes.
func jsonErrorKind(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %s has the wrong type", te.Field)
	}
	return "invalid JSON"
}

// Save writes t as the token of account name (t.Account is ignored), creating the
// folder with mode 0700. The file is replaced atomically and durably with mode 0600.
func (s *Store) Save(name string, t *Token) error {
	if err := checkName(name); err != nil {
		return err
	}
	tf := tokenFile{
		Version: tokenFileVersion, Account: name, Provider: t.Provider, ClientID: t.ClientID,
		Username: t.Username, Subject: t.Subject, Scopes: t.Scopes, TokenType: t.TokenType,
		AccessToken: t.AccessToken.Reveal(), RefreshToken: t.RefreshToken.Reveal(),
		Expiry: t.Expiry.UTC(), Obtained: t.Obtained.UTC(), Refreshed: t.Refreshed.UTC(),
		LastError: t.LastError, LastErrorAt: t.LastErrorAt.UTC(),
	}
	b, err := json.MarshalIndent(&tf, "", "  ")
	if err != nil {
		return fmt.Errorf("save token of %s: %w", name, err)
	}
	b = append(b, '\n')
	if err := durable.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("save token of %s: %w", name, err)
	}
	err = durable.WriteFile(s.dir, "."+name+".json.tmp", s.dir, name+".json", 0o600, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("save token of %s: %w", name, err)
	}
	return nil
}

// stamp identifies a version of a token file, so a Source notices that another
// process (mxdrop oauth login, another instance) replaced it.
type stamp struct {
	ok    bool
	mtime time.Time
	size  int64
	ino   uint64
}

func (s *Store) stamp(name string) stamp {
	fi, err := os.Stat(s.Path(name))
	if err != nil {
		return stamp{}
	}
	return stamp{ok: true, mtime: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
}

// lockAccount takes an exclusive lock on lockPath, waiting until it is free or ctx is
// done, and returns the function that releases it. Refreshes of one account in
// different processes (two instances, the daemon and mxdrop oauth login) are thereby
// serialised, so a rotated refresh token is never used twice.
func lockAccount(ctx context.Context, lockPath string) (func(), error) {
	f, err := durable.Lock(ctx, lockPath, 0o600)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}
