package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/mxdrop/mxdrop/importer/durable"
)

// FailedFolder is the name of the quarantine folder inside a drop folder.
const FailedFolder = "ImportFailed"

// Record is the machine-readable reason written beside a quarantined message as
// <name>.json.
type Record struct {
	Time       time.Time `json:"time"`
	Source     string    `json:"source"` // connector or poller name
	File       string    `json:"file"`   // the original file name or UID
	Outcome    Outcome   `json:"outcome"`
	Reason     string    `json:"reason"`
	Detail     string    `json:"detail"`
	MessageID  string    `json:"message_id,omitempty"`
	Sender     string    `json:"sender"`
	Size       int64     `json:"size"`
	Recipients []Failure `json:"recipients,omitempty"`
	Ignored    []string  `json:"ignored,omitempty"`
}

// NewRecord returns the quarantine record of a result.
func NewRecord(source, file string, res Result) Record {
	sender := "<>"
	if res.Envelope.SenderKnown && res.Envelope.Sender != "" {
		sender = res.Envelope.Sender
	} else if !res.Envelope.SenderKnown {
		sender = ""
	}
	return Record{
		Time: time.Now().UTC(), Source: source, File: file, Outcome: res.Outcome,
		Reason: res.Reason, Detail: res.Detail, MessageID: res.MessageID, Sender: sender,
		Size: res.Size, Recipients: res.Failed, Ignored: res.Ignored,
	}
}

// Quarantine moves the file src into folder (created when missing) under its base name,
// or a free variant of it, with rec as <name>.json beside it. The reason file is durable
// before the message is moved, so a quarantined message always has its reason. src must
// be on folder's file system. It returns the quarantined path.
func Quarantine(folder, src string, rec Record) (string, error) {
	if err := durable.MkdirAll(folder, 0o750); err != nil {
		return "", err
	}
	name, err := freeName(folder, filepath.Base(src))
	if err != nil {
		return "", err
	}
	if err := writeRecord(folder, name, rec); err != nil {
		return "", err
	}
	dst := filepath.Join(folder, name)
	if err := os.Rename(src, dst); err != nil {
		os.Remove(filepath.Join(folder, name+".json"))
		return "", fmt.Errorf("move into %s: %w", FailedFolder, err)
	}
	return dst, durable.SyncDir(folder)
}

// QuarantineStream writes a message read from r into folder as name (or a free variant)
// with rec beside it: the quarantine of a source that has no file (a poller).
func QuarantineStream(folder, name string, r io.Reader, rec Record) (string, error) {
	if err := durable.MkdirAll(folder, 0o750); err != nil {
		return "", err
	}
	name, err := freeName(folder, name)
	if err != nil {
		return "", err
	}
	if err := writeRecord(folder, name, rec); err != nil {
		return "", err
	}
	err = durable.WriteFile(folder, "."+name+".tmp", folder, name, 0o640, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
	if err != nil {
		os.Remove(filepath.Join(folder, name+".json")) // no reason without its message
		return "", err
	}
	return filepath.Join(folder, name), nil
}

func writeRecord(folder, name string, rec Record) error {
	return durable.WriteFile(folder, "."+name+".json.tmp", folder, name+".json", 0o640, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rec)
	})
}

// maxQuarantineName bounds a quarantined message's name, so that its longest companion
// ("."+name+".dsn.eml.tmp" beside a ".9999" variant) still fits NAME_MAX (255 bytes).
const maxQuarantineName = 200

// fitName returns name, or when it is longer than maxQuarantineName, a prefix of it and a
// short hash of the whole name: recognisable, and distinct for distinct long names. The
// prefix ends at a UTF-8 character boundary, so a name in UTF-8 stays valid UTF-8 (file
// managers, JSON logs). The reason record keeps the original name in its file field.
func fitName(name string) string {
	if len(name) <= maxQuarantineName {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	keep := maxQuarantineName - 17
	for keep > 0 && !utf8.RuneStart(name[keep]) {
		keep--
	}
	return name[:keep] + "-" + hex.EncodeToString(sum[:8])
}

// freeName returns name, or name.1, name.2 ... whichever does not exist in folder. A
// reason file without its message is the leftover of a quarantine interrupted by a
// crash; its name is reused and the reason file rewritten. But <n>.json may also be a
// quarantined message named so (its own reason is then <n>.json.json): n is not free then.
func freeName(folder, name string) (string, error) {
	name = fitName(name)
	absent := func(n string) bool {
		_, err := os.Lstat(filepath.Join(folder, n))
		return errors.Is(err, os.ErrNotExist)
	}
	for i := 0; i < 10000; i++ {
		n := name
		if i > 0 {
			n = name + "." + strconv.Itoa(i)
		}
		if absent(n) && (absent(n+".json") || absent(n+".json.json")) {
			return n, nil
		}
	}
	return "", fmt.Errorf("no free name for %s in %s", name, folder)
}
