package watcher

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// claimPrefix begins every claim name. A claimed file is called
//
//	.mxdrop-claim.<tag>.<n>.<name>
//
// in the folder it arrived in: tag is its instance's instanceTag, n the first number
// that made the name free (a writer may reuse a name while the first file is claimed),
// and name the file's own name, which stays its identity (OriginalName). A dot-name is
// never offered as a message, and Maildir readers skip it too.
const claimPrefix = ".mxdrop-claim."

// tagLen is the length of an instance tag: 16 hex digits of a hash of the instance id,
// because ids hold the host name (dots, dashes) and would make names long.
const tagLen = 16

// instanceTag is the mark of instance id in its claim names.
func instanceTag(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:tagLen/2])
}

// claimName is the claim name of a file called name, for the instance tagged tag.
func claimName(tag string, n int, name string) string {
	return claimPrefix + tag + "." + strconv.Itoa(n) + "." + name
}

// maxClaimNameLen is the length of the longest claim name of a file called name (n
// below 1000, as claimAs tries).
func maxClaimNameLen(name string) int { return len(claimPrefix) + tagLen + len(".999.") + len(name) }

// parseClaimName splits a claim name into its instance tag and the file's own name; ok
// is false for any other name.
func parseClaimName(s string) (tag, name string, ok bool) {
	rest, ok := strings.CutPrefix(s, claimPrefix)
	if !ok || len(rest) < tagLen+4 || rest[tagLen] != '.' {
		return "", "", false
	}
	tag, rest = rest[:tagLen], rest[tagLen+1:]
	for _, r := range tag {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return "", "", false
		}
	}
	i := strings.IndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	for _, r := range rest[:i] {
		if r < '0' || r > '9' {
			return "", "", false
		}
	}
	return tag, rest[i+1:], true
}

// OriginalName returns the name a file had in the drop folder before it was claimed:
// the base name of path without its claim name's prefix. Identities, delivery names,
// the quarantine's and Imported/'s names and log lines all use it, so that whichever
// instance holds a file, under whatever claim name, it is the same message.
func OriginalName(path string) string {
	base := filepath.Base(path)
	if _, name, ok := parseClaimName(base); ok {
		return name
	}
	return base
}

// IsClaimName reports whether a drop folder entry's name is a claimed file's.
func IsClaimName(name string) bool {
	_, _, ok := parseClaimName(name)
	return ok
}

// orphanDead reports whether the claim names of tag, whose instance has no claims
// folder, may be adopted: at once on a local file system, where the listing is exact;
// on a share only once they have been seen orphaned for ttl.
func (o *leaseObserver) orphanDead(tag string, shared bool, ttl time.Duration) bool {
	if !shared {
		return true
	}
	since, ok := o.orphans[tag]
	if !ok {
		o.orphans[tag] = o.now()
		return false
	}
	return o.now().Sub(since) >= ttl
}

// forgetOrphans drops what the observer knows of orphaned tags no longer seen.
func (o *leaseObserver) forgetOrphans(seen map[string][]string) {
	for tag := range o.orphans {
		if _, still := seen[tag]; !still {
			delete(o.orphans, tag)
		}
	}
}

// ClaimedFiles returns the paths of the files claimed in drop folder drop by any
// instance, live or dead: the claim names in the folder and in its new/, and the files
// in claims folders. Only the listings are read; a folder that cannot be read adds
// nothing.
func ClaimedFiles(drop string) []string { return claimedBy(drop, "", true) }

// ClaimedBy returns the paths of the files instance id holds claimed in drop folder
// drop, as ClaimedFiles does for all.
func ClaimedBy(drop, id string) []string { return claimedBy(drop, id, false) }

func claimedBy(drop, id string, all bool) []string {
	var out []string
	want := instanceTag(id)
	byTag, _ := listClaimNames(drop)
	for tag, names := range byTag {
		if all || tag == want {
			out = append(out, names...)
		}
	}
	folders, _ := os.ReadDir(claimsRoot(drop))
	for _, f := range folders {
		if f.IsDir() && (all || f.Name() == id) {
			files, _ := listClaims(filepath.Join(claimsRoot(drop), f.Name()))
			out = append(out, files...)
		}
	}
	return out
}
