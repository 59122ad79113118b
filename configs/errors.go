package configs

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a configuration, located in its file.
type Problem struct {
	File string // the file as named to Load ("default.yaml (embedded)" for Default)
	Line int    // 1-based; 0 when the problem belongs to the file as a whole
	Path string // the key path: "connectors[0].settle"; "" for the whole file
	Msg  string // what is wrong, never containing a secret
	Hint string // what would be valid; may be ""
}

// String formats the problem as one line: "file:line: path: message (hint)", leaving
// out the parts that are empty.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Hint != "" {
		b.WriteString(" (")
		b.WriteString(p.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Error is what Load, Parse and Default return when the configuration is invalid: every
// problem found, in file order. Callers get at it with errors.As.
type Error struct {
	Problems []Problem
}

// Error gives one line per problem, as Problem.String formats it.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects Problems while a configuration is loaded.
type problems struct {
	file  string
	lines map[string]int // key path -> line of its key (or list item)
	list  []Problem
	// bad holds the key paths whose value was reported while reading the file and
	// dropped; validation says nothing more about them (no "is required" after "is
	// not a duration").
	bad map[string]bool
}

// add records a problem at path, located at the line of path or of its nearest parent
// that appears in the file, unless path or a parent was already reported as unreadable.
func (ps *problems) add(path, hint, format string, args ...any) {
	if ps.isBad(path) {
		return
	}
	ps.addAt(ps.lineOf(path), path, hint, format, args...)
}

// drop records a problem with the value at path as it is read from the file; the value
// is dropped, and validation skips path.
func (ps *problems) drop(line int, path, hint, format string, args ...any) {
	if ps.bad == nil {
		ps.bad = map[string]bool{}
	}
	ps.bad[path] = true
	ps.addAt(line, path, hint, format, args...)
}

// isBad reports whether path or one of its parents was dropped.
func (ps *problems) isBad(path string) bool {
	for p := path; ; p = parentPath(p) {
		if ps.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// parentPath returns the path of the block or list holding path ("" at the top).
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		return path[:strings.LastIndexByte(path, '[')]
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// addAt records a problem at an explicit line.
func (ps *problems) addAt(line int, path, hint, format string, args ...any) {
	ps.list = append(ps.list, Problem{File: ps.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// lineAt returns the line of the first of paths written in the file, or 0.
func (ps *problems) lineAt(paths ...string) int {
	for _, p := range paths {
		if l, ok := ps.lines[p]; ok {
			return l
		}
	}
	return 0
}

// addNear records a problem at path, located at path's line when it is written in the
// file, else at the line of near (the key that made path necessary), else at path's
// nearest written ancestor.
func (ps *problems) addNear(path, near, hint, format string, args ...any) {
	if ps.isBad(path) {
		return
	}
	line := ps.lineAt(path, near)
	if line == 0 {
		line = ps.lineOf(path)
	}
	ps.addAt(line, path, hint, format, args...)
}

// lineOf returns the line of path, or of its nearest ancestor written in the file: a
// key left out (a missing drop_folder) is reported at the line of its block.
func (ps *problems) lineOf(path string) int {
	for {
		if l, ok := ps.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// err returns nil, or an *Error with the problems in line order (problems of the whole
// file last) and without repeats (a YAML anchor merged twice reports once).
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	type key struct {
		line            int
		leaf, msg, hint string
	}
	seen := map[key]bool{}
	var out []Problem
	for _, p := range ps.list {
		leaf := p.Path[strings.LastIndexAny(p.Path, ".]")+1:]
		k := key{p.Line, leaf, p.Msg, p.Hint}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool {
		li, lj := out[i].Line, out[j].Line
		if li == 0 || lj == 0 {
			return lj == 0 && li != 0
		}
		return li < lj
	})
	return &Error{Problems: out}
}
