package pollers

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// The state file of a poller is a bbolt database, state_dir/pollers/<name>/state.db:
//
//	meta                     version "1", poller <name>, created <RFC 3339>
//	scopes/<scope>/          one per remote folder: "pop3", "imap:INBOX", "imap:Lists/go"
//	    validity             IMAP UIDVALIDITY the keys below belong to (decimal)
//	    complete             "1" once a cycle has gone through every message of the scope;
//	                         until then a message without an entry may have been
//	                         delivered by a lost state file and is imported as Recovered
//	    msgs/<key>           one Entry (JSON) per message seen: key is the UIDL or the
//	                         decimal UID
//	dups/<message-id>\x00<account or rcpt:address>
//	                         8-byte big-endian Unix time of the first delivery (or
//	                         bounce) of that Message-ID to that account (or recipient),
//	                         then the 32-byte content prints (see contentPrint) of the
//	                         messages of that Message-ID delivered there, at most
//	                         dupMaxPrints; a value without prints (written before they
//	                         were recorded) matches no message
//
// Every change of a batch is one transaction, and bbolt fsyncs each commit.
const stateVersion = "1"

var (
	bucketMeta   = []byte("meta")
	bucketScopes = []byte("scopes")
	bucketMsgs   = []byte("msgs")
	bucketDups   = []byte("dups")
	keyValidity  = []byte("validity")
	keyComplete  = []byte("complete")
)

// Status of a message in the state.
type Status string

const (
	// StatusInFlight: the message is being imported. Found after a crash, its delivery
	// may or may not have happened: it is imported again as Recovered.
	StatusInFlight Status = "inflight"
	// StatusDone: delivered, quarantined or suppressed as a duplicate, durably. The
	// server copy is deleted or kept as the keep policy says; never fetched again.
	StatusDone Status = "done"
	// StatusTooLarge: larger than max_message_size; left on the server, not fetched.
	StatusTooLarge Status = "too_large"
)

// Entry is what the state knows of one message on the server.
type Entry struct {
	Status Status `json:"s"`
	// First is when the poller first saw the message (Unix seconds); keep: days counts
	// from here.
	First int64 `json:"first"`
	// Done is when the message reached StatusDone (Unix seconds).
	Done int64 `json:"done,omitempty"`
	// MessageID is the message's Message-ID field, kept to recognise the message if the
	// server renumbers the folder (a new UIDVALIDITY).
	MessageID string `json:"mid,omitempty"`
	// Size is the size the server listed when the message was fetched.
	Size int64 `json:"size,omitempty"`
	// Header is the headerPrint of the message as delivered (empty in entries written
	// before it was recorded): the server copy is deleted on the state's word only
	// when its size and header print still match.
	Header string `json:"hdr,omitempty"`
	// Gen is the remoteMsg.Gen the message was delivered under.
	Gen string `json:"gen,omitempty"`
}

// ScopeState is one scope's part of the state.
type ScopeState struct {
	Exists   bool   // the scope has been seen before
	Validity uint32 // IMAP UIDVALIDITY; 0 for POP3
	Complete bool
	Entries  map[string]Entry
}

// ErrStateLocked is returned by OpenState when another process holds the state file.
var ErrStateLocked = errors.New("state file is in use by another process")

// State is a poller's persistent memory. It is safe for concurrent use.
type State struct {
	db   *bolt.DB
	path string
	// fault, when not nil, is asked before every Apply and fails it with its error
	// (tests of the failure paths; see Poller.stateFault).
	fault func(scope string, c Change) error
}

// StateProblem is what OpenState found wrong with an existing state: the file was lost
// or corrupt, and a new one was started. The caller reports it; nothing is lost, since
// every message without an entry is then imported as Recovered.
type StateProblem struct {
	Kind  string // "lost" | "corrupt"
	Path  string
	Moved string // where a corrupt file was moved
	Err   error  // the corruption found
}

func (p *StateProblem) Error() string {
	switch p.Kind {
	case "lost":
		return fmt.Sprintf("state file %s is missing although this poller has run before; started a new one", p.Path)
	default:
		return fmt.Sprintf("state file %s is corrupt (%v); moved it to %s and started a new one", p.Path, p.Err, p.Moved)
	}
}

// stateTimeout bounds the wait for another process's lock on the state file.
var stateTimeout = 2 * time.Second

// OpenState opens (or creates) the state database at dir/state.db. dir/state.id marks
// that a state was created here, so a state file that disappears is told apart from a
// first run. A corrupt file (bad header, checksum or page structure) is moved aside to
// state.db.corrupt-<unix time> and a new state is started; the returned problem says
// so and the caller must report it. check runs bbolt's consistency check on the whole
// file (cheap for a state file; do it once per process). It fails with ErrStateLocked
// when another process holds the file.
func OpenState(dir string, poller string, now time.Time, check bool) (*State, *StateProblem, error) {
	if err := durable.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "state.db")
	marker := filepath.Join(dir, "state.id")
	var problem *StateProblem
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(marker); err == nil {
			problem = &StateProblem{Kind: "lost", Path: path}
		}
	}
	db, err := openBolt(path, check)
	if err != nil && isCorrupt(err) {
		moved := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
		if rerr := os.Rename(path, moved); rerr != nil {
			return nil, nil, fmt.Errorf("state file %s is corrupt (%v) and cannot be moved aside: %w", path, err, rerr)
		}
		problem = &StateProblem{Kind: "corrupt", Path: path, Moved: moved, Err: err}
		db, err = openBolt(path, false)
	}
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, nil, fmt.Errorf("open %s: %w", path, ErrStateLocked)
		}
		return nil, nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &State{db: db, path: path}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get([]byte("version")); v == nil {
			meta.Put([]byte("version"), []byte(stateVersion))
			meta.Put([]byte("poller"), []byte(poller))
			meta.Put([]byte("created"), []byte(now.UTC().Format(time.RFC3339)))
		} else if string(v) != stateVersion {
			return fmt.Errorf("state version %q is not %q", v, stateVersion)
		}
		if _, err := tx.CreateBucketIfNotExists(bucketScopes); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketDups)
		return err
	})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("initialise state %s: %w", path, err)
	}
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		werr := durable.WriteFile(dir, ".state.id.tmp", dir, "state.id", 0o640, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s %s\n", poller, now.UTC().Format(time.RFC3339))
			return err
		})
		if werr != nil {
			db.Close()
			return nil, nil, werr
		}
	}
	return s, problem, nil
}

func openBolt(path string, check bool) (db *bolt.DB, err error) {
	// bbolt panics on some forms of page corruption; that is corruption too.
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", bolterrors.ErrInvalid, r)
		}
	}()
	db, err = bolt.Open(path, 0o640, &bolt.Options{Timeout: stateTimeout})
	if err != nil {
		return nil, err
	}
	if check {
		err = db.View(func(tx *bolt.Tx) error {
			for cerr := range tx.Check() {
				return fmt.Errorf("%w: %v", bolterrors.ErrInvalid, cerr)
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

func isCorrupt(err error) bool {
	return errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrInvalidMapping)
}

// Close closes the database.
func (s *State) Close() error { return s.db.Close() }

// Path is the state file's path.
func (s *State) Path() string { return s.path }

// Scope reads one scope.
func (s *State) Scope(name string) (ScopeState, error) {
	st := ScopeState{Entries: map[string]Entry{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketScopes).Bucket([]byte(name))
		if b == nil {
			return nil
		}
		st.Exists = true
		if v := b.Get(keyValidity); v != nil {
			n, err := strconv.ParseUint(string(v), 10, 32)
			if err != nil {
				return fmt.Errorf("scope %s: bad validity %q", name, v)
			}
			st.Validity = uint32(n)
		}
		st.Complete = string(b.Get(keyComplete)) == "1"
		msgs := b.Bucket(bucketMsgs)
		if msgs == nil {
			return nil
		}
		return msgs.ForEach(func(k, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("scope %s: entry %q: %w", name, k, err)
			}
			st.Entries[string(k)] = e
			return nil
		})
	})
	return st, err
}

// Change is one transaction's worth of changes to a scope.
type Change struct {
	Put    map[string]Entry
	Delete []string
	// Dups are dup keys (see DupKey) to record with the given Unix time, and
	// DupPrints the content print (hex, see contentPrint) of the message delivered
	// under each.
	Dups      map[string]int64
	DupPrints map[string]string
	// Complete, when not nil, sets or clears the scope's complete flag.
	Complete *bool
	// Reset replaces the scope: every entry is removed before Put, and the validity
	// is set to Validity.
	Reset    bool
	Validity uint32
}

// Apply makes c durable in one transaction, creating the scope when missing.
func (s *State) Apply(scope string, c Change) error {
	if s.fault != nil {
		if err := s.fault(scope, c); err != nil {
			return err
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		scopes := tx.Bucket(bucketScopes)
		b := scopes.Bucket([]byte(scope))
		if c.Reset && b != nil {
			if err := scopes.DeleteBucket([]byte(scope)); err != nil {
				return err
			}
			b = nil
		}
		if b == nil {
			var err error
			if b, err = scopes.CreateBucket([]byte(scope)); err != nil {
				return err
			}
			if err := b.Put(keyValidity, []byte(strconv.FormatUint(uint64(c.Validity), 10))); err != nil {
				return err
			}
		}
		msgs, err := b.CreateBucketIfNotExists(bucketMsgs)
		if err != nil {
			return err
		}
		for _, k := range c.Delete {
			if err := msgs.Delete([]byte(k)); err != nil {
				return err
			}
		}
		for k, e := range c.Put {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := msgs.Put([]byte(k), v); err != nil {
				return err
			}
		}
		if c.Complete != nil {
			v := "0"
			if *c.Complete {
				v = "1"
			}
			if err := b.Put(keyComplete, []byte(v)); err != nil {
				return err
			}
		}
		if len(c.Dups) > 0 {
			dups := tx.Bucket(bucketDups)
			for k, t := range c.Dups {
				pr, _ := hex.DecodeString(c.DupPrints[k])
				if len(pr) != sha256.Size {
					pr = nil
				}
				v := slices.Clone(dups.Get([]byte(k)))
				switch {
				case len(v) < 8:
					v = binary.BigEndian.AppendUint64(nil, uint64(t))
				case pr == nil || hasPrint(v, pr) || (len(v)-8)/sha256.Size >= dupMaxPrints:
					continue // the first delivery's time counts
				}
				if err := dups.Put([]byte(k), append(v, pr...)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// DupKey is the dups key of a Message-ID and a target: an account address, or
// "rcpt:" and a failed recipient's address.
func DupKey(messageID, target string) string { return messageID + "\x00" + target }

// dupMaxPrints bounds the content prints kept under one dup key: messages that share
// a Message-ID but differ are rare (a forgery, a broken sender), and a further one is
// delivered rather than suppressed.
const dupMaxPrints = 8

// hasPrint reports whether the dups value v holds the content print pr.
func hasPrint(v, pr []byte) bool {
	for p := v[8:]; len(p) >= sha256.Size; p = p[sha256.Size:] {
		if string(p[:sha256.Size]) == string(pr) {
			return true
		}
	}
	return false
}

// Seen reports whether the dup key was recorded at or after since for a message whose
// content print (hex) is content. A message with the same Message-ID but other content is
// not a duplicate.
func (s *State) Seen(key, content string, since time.Time) (bool, error) {
	pr, err := hex.DecodeString(content)
	if err != nil || len(pr) != sha256.Size {
		return false, nil
	}
	seen := false
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDups).Get([]byte(key))
		if len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) >= since.Unix() && hasPrint(v, pr) {
			seen = true
		}
		return nil
	})
	return seen, err
}

// PruneDups removes dup keys recorded before before, and returns how many.
func (s *State) PruneDups(before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDups)
		var old [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < before.Unix() {
				old = append(old, slices.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}
