package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultName is the file name problems of the embedded default configuration carry.
const DefaultName = "default.yaml (embedded)"

// Load reads the configuration file at path and returns it expanded, defaulted,
// resolved and validated: ${ENV} references replaced, relative paths made absolute
// against the file's folder, *_file secrets read. An unreadable file is an error
// wrapping the os error; an invalid one is an *Error listing every problem as
// "path:line: key: message (hint)", with path as given here.
func Load(path string) (*Config, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parse(data, path, filepath.Dir(abs), os.LookupEnv)
	if err != nil {
		return nil, err
	}
	cfg.File = abs
	return cfg, nil
}

// MaxConfigSize bounds a configuration file. Real ones are a few KiB; parsing YAML
// costs many times its size in memory (a 117 MB file took 7.2 GB and 40 s), so a
// larger file is refused before it is parsed.
const MaxConfigSize = 4 << 20

// readConfig reads the file at path, at most MaxConfigSize bytes of it.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("read config: %s is larger than %d MiB; a configuration is a few KiB (is it the right file?)", path, MaxConfigSize>>20)
	}
	return data, nil
}

// Parse is Load for a configuration already in memory: name labels problems, and
// relative paths are resolved against dir (the current directory when dir is "").
// The returned Config's File is "".
func Parse(data []byte, name, dir string) (*Config, error) {
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("parse config: %w", err)
		}
		dir = wd
	}
	return parse(data, name, dir, os.LookupEnv)
}

// Default returns the embedded default configuration (configs/default.yaml): drop
// folder ./var/drop, every domain accepted, every recipient delivered to the one
// account catchall@localhost in ./var/mail/catchall, console logs. Its relative paths
// are resolved against the current working directory; File is "".
func Default() (*Config, error) {
	return Parse(defaultYAML, DefaultName, "")
}

// loader carries one load: where problems go and how the environment is read.
type loader struct {
	problems
	dir      string
	lookup   func(string) (string, bool)
	expanded map[*yaml.Node]bool // scalars already expanded
	// walked holds the result of checking an anchored node as a type: an anchor is
	// checked once however often it is used, so aliases cannot make the walk explode.
	walked map[walkKey]*yaml.Node
}

type walkKey struct {
	n *yaml.Node
	t reflect.Type
}

// parse runs the whole pipeline: YAML tree, env expansion and strict shape check,
// decode, defaults, paths, validation, secrets. Problems of every stage are collected;
// only a file that is not YAML at all stops it early.
func parse(data []byte, name, dir string, lookup func(string) (string, bool)) (*Config, error) {
	l := &loader{
		problems: problems{file: name, lines: map[string]int{}},
		dir:      dir,
		lookup:   lookup,
		expanded: map[*yaml.Node]bool{},
		walked:   map[walkKey]*yaml.Node{},
	}
	doc := l.document(data)
	if doc == nil {
		return nil, l.err()
	}
	cfg := &Config{}
	l.value(doc, reflect.TypeOf(cfg).Elem(), "")
	l.decode(doc, cfg)
	l.normalize(cfg)
	applyDefaults(cfg)
	l.resolvePaths(cfg)
	l.validate(cfg) // before readSecrets: it tells a password from one read from a file
	l.readSecrets(cfg)
	if err := l.err(); err != nil {
		return nil, err
	}
	if cfg.PollersAlwaysDelete {
		for i := range cfg.Pollers {
			cfg.Pollers[i].Keep, cfg.Pollers[i].KeepDays = "delete", 0
		}
	}
	return cfg, nil
}

// yamlLine finds the line in a yaml.v3 syntax error ("yaml: line 3: ..."); the library
// has no typed syntax error.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// document parses data into the root mapping node, or records why it cannot.
func (l *loader) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1} // an empty file
		}
		msg, line := err.Error(), 0
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = msg[len(m[0]):]
		} else {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		line = syntaxLine(data, msg, line)
		l.addAt(line, "", "the file must be YAML: check indentation and quoting", "%s", msg)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		l.addAt(extra.Line, "", "remove the --- separator and what follows", "the file holds more than one YAML document")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1}
	}
	if root.Kind != yaml.MappingNode {
		l.addAt(root.Line, "", "start with keys such as connectors: and accounts:", "the file must be a block of keys, not %s", kindName(root))
		return nil
	}
	return root
}

// syntaxLine finds the line of a YAML syntax error. QUIRK: yaml.v3 reports a parser
// error at its context mark (the start of the enclosing block, and 0-based), not where
// the problem is. The shortest prefix of the file that fails with the same message ends
// at the problem's line; when none does, the reported line stands.
func syntaxLine(data []byte, msg string, reported int) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	for n := max(reported, 1); n <= len(lines); n++ {
		var node yaml.Node
		err := yaml.Unmarshal(bytes.Join(lines[:n], nil), &node)
		if err != nil && strings.HasSuffix(err.Error(), ": "+msg) {
			return n
		}
	}
	return reported
}

// decode decodes the checked tree into cfg with the yaml.v3 Decoder in strict mode.
// value has already reported every unknown key and ill-typed value and replaced it, so
// strict decoding cannot fail; if it ever does, that is reported rather than hidden.
// The tree is encoded again because only a Decoder, not Node.Decode, has KnownFields.
func (l *loader) decode(root *yaml.Node, cfg *Config) {
	out, err := yaml.Marshal(root)
	if err == nil {
		dec := yaml.NewDecoder(bytes.NewReader(out))
		dec.KnownFields(true)
		err = dec.Decode(cfg)
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		l.addAt(0, "", "please report this as a bug in mxdrop", "internal: decoding the checked configuration failed: %v", err)
	}
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// value checks node n against the Go type t it decodes into, at key path path: it
// expands ${ENV} in scalars, reports unknown and repeated keys, a block where a single
// value belongs and values the type cannot hold, and records the line of every key.
// It returns the node to keep: n, or a null node in place of a value that was reported,
// so that strict decoding of the cleaned tree succeeds and validation still runs.
func (l *loader) value(n *yaml.Node, t reflect.Type, path string) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		if l.value(n.Alias, t, path) != n.Alias {
			return nullNode(n)
		}
		return n
	}
	if n.Anchor != "" {
		k := walkKey{n, t}
		if r, ok := l.walked[k]; ok {
			return r
		}
		l.walked[k] = n // a cycle through this anchor stops here
		r := l.check(n, t, path)
		l.walked[k] = r
		return r
	}
	return l.check(n, t, path)
}

// check is value for a node that is not an alias.
func (l *loader) check(n *yaml.Node, t reflect.Type, path string) *yaml.Node {
	if isNull(n) {
		return n
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return l.scalar(n, t, path)
	}
	switch t.Kind() {
	case reflect.Pointer:
		return l.value(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			l.drop(n.Line, path, "write it as a block of keys, one per line below it, or {key: value}", "must be a block of keys, not %s", kindName(n))
			return nullNode(n)
		}
		l.mapping(n, t, path)
		return n
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			l.drop(n.Line, path, "write a list such as [a, b] or one \"- item\" per line", "must be a list, not %s", kindName(n))
			return nullNode(n)
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			l.setLine(p, item.Line)
			n.Content[i] = l.value(item, t.Elem(), p)
		}
		return n
	default:
		return l.scalar(n, t, path)
	}
}

// mapping checks the keys of a block against the fields of struct type t. Merge keys
// (<<: *anchor) are checked too; the block's own keys win over merged ones, as in YAML.
func (l *loader) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	seen := map[string]*yaml.Node{}
	var keep, merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			keep = append(keep, k, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			l.addAt(k.Line, path, "keys are plain names such as drop_folder", "a key must be a name, not %s", kindName(k))
			continue
		}
		p := joinPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			l.addAt(k.Line, p, "remove one of them", "is set twice (first at line %d)", first.Line)
			continue
		}
		seen[k.Value] = k
		ft, ok := fieldType(fields, k.Value)
		if !ok {
			l.addAt(k.Line, p, keysHint(fields, k.Value, path), "unknown key %q", k.Value)
			continue
		}
		l.setLine(p, k.Line)
		keep = append(keep, k, l.value(v, ft, p))
	}
	n.Content = keep
	for _, m := range merges {
		l.merge(m, t, path)
	}
}

// merge checks what a merge key brings in: a mapping, an alias of one, or a list of
// those.
func (l *loader) merge(m *yaml.Node, t reflect.Type, path string) {
	switch {
	case m.Kind == yaml.AliasNode && m.Alias != nil:
		l.merge(m.Alias, t, path)
	case m.Kind == yaml.MappingNode:
		k := walkKey{m, t}
		if _, ok := l.walked[k]; ok {
			// Checked already: only locate this block's merged keys.
			for i := 0; i+1 < len(m.Content); i += 2 {
				l.setLine(joinPath(path, m.Content[i].Value), m.Content[i].Line)
			}
			return
		}
		l.walked[k] = m
		l.mapping(m, t, path)
	case m.Kind == yaml.SequenceNode:
		for _, c := range m.Content {
			l.merge(c, t, path)
		}
	default:
		l.addAt(m.Line, path, "merge a block with <<: *anchor", "<< must name a block of keys, not %s", kindName(m))
	}
}

// scalar checks a single value of type t: it must be a scalar, its ${ENV} references
// must expand, and it must decode as t.
func (l *loader) scalar(n *yaml.Node, t reflect.Type, path string) *yaml.Node {
	if n.Kind != yaml.ScalarNode {
		l.drop(n.Line, path, typeHint(t), "must be a single value, not %s", kindName(n))
		return nullNode(n)
	}
	if !l.expand(n, t, path) {
		return nullNode(n)
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		l.drop(n.Line, path, typeHint(t), "%s", typeMsg(n.Value, t))
		return nullNode(n)
	}
	return n
}

// expand replaces ${NAME} references in a scalar with the environment's values. An
// expanded plain value is typed again by its new content, so "port: ${SMTP_PORT}"
// reads as a number, except for string fields, which always get the text.
func (l *loader) expand(n *yaml.Node, t reflect.Type, path string) bool {
	if l.expanded[n] {
		return true
	}
	l.expanded[n] = true
	if !strings.Contains(n.Value, "$") {
		return true
	}
	out, err := expandEnv(n.Value, l.lookup)
	if err != nil {
		l.drop(n.Line, path, err.hint, "%s", err.msg)
		return false
	}
	if out == n.Value {
		return true
	}
	n.Value = out
	if n.Style&yaml.TaggedStyle != 0 {
		return true
	}
	if t.Kind() == reflect.String {
		n.Tag = "!!str"
	} else {
		n.Tag, n.Style = "", 0
	}
	return true
}

// envError is an ${ENV} reference that cannot be expanded.
type envError struct{ msg, hint string }

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandEnv expands ${NAME} references in s with lookup. "$${" stands for a literal
// "${"; a "$" not followed by "{" is kept as it is. An unset variable is an error (a set
// but empty one expands to ""), so a missing secret cannot silently become "".
func expandEnv(s string, lookup func(string) (string, bool)) (string, *envError) {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", &envError{"${ without a closing }", "write ${NAME}, or $${ for a literal ${"}
			}
			name := s[i+2 : i+end]
			if !envName.MatchString(name) {
				return "", &envError{fmt.Sprintf("${%s} is not an environment variable reference", name), "a name is letters, digits and _; write $${ for a literal ${"}
			}
			v, ok := lookup(name)
			if !ok {
				return "", &envError{fmt.Sprintf("environment variable %s is not set", name), "set it in mxdrop's environment, e.g. Environment= in the systemd unit"}
			}
			b.WriteString(v)
			i += end + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), nil
}

// setLine records the line of a key path; the first record wins, so a block's own key
// is located where it is written, not at a merged anchor.
func (l *loader) setLine(path string, line int) {
	if _, ok := l.lines[path]; !ok {
		l.lines[path] = line
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// nullNode stands in for a reported value.
func nullNode(at *yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null", Line: at.Line, Column: at.Column}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a block of keys"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return "a single value" // not quoted: it could be a secret in the wrong place
	}
	return "empty"
}

// field is a key of a YAML block and the Go type it decodes into.
type field struct {
	name string
	typ  reflect.Type
}

// yamlFields lists the keys of struct type t in declaration order, as yaml.v3 names
// them.
func yamlFields(t reflect.Type) []field {
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fs = append(fs, field{name, f.Type})
	}
	return fs
}

func fieldType(fs []field, name string) (reflect.Type, bool) {
	for _, f := range fs {
		if f.name == name {
			return f.typ, true
		}
	}
	return nil, false
}

// keysHint lists the valid keys of a block, with the closest one first when the
// unknown key looks like a typo of it.
func keysHint(fs []field, key, path string) string {
	names := make([]string, len(fs))
	best, bestDist := "", 3
	for i, f := range fs {
		names[i] = f.name
		if d := editDistance(strings.ToLower(key), f.name); d < bestDist {
			best, bestDist = f.name, d
		}
	}
	where := "here"
	if path != "" {
		where = "in " + path
	}
	h := fmt.Sprintf("valid keys %s: %s", where, strings.Join(names, ", "))
	if best != "" {
		h = fmt.Sprintf("did you mean %s? %s", best, h)
	}
	return h
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	durationType = reflect.TypeOf(Duration(0))
	sizeType     = reflect.TypeOf(Size(0))
)

// typeMsg says why value does not fit type t. It never quotes a Secret's value.
func typeMsg(value string, t reflect.Type) string {
	switch {
	case t == durationType:
		return fmt.Sprintf("%q is not a duration", value)
	case t == sizeType:
		return fmt.Sprintf("%q is not a size", value)
	case t.Kind() == reflect.Bool:
		return fmt.Sprintf("%q is not true or false", value)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return fmt.Sprintf("%q is not a whole number", value)
	case t == reflect.TypeOf(Secret("")):
		return "the value cannot be read as text"
	}
	return fmt.Sprintf("%q cannot be read as %s", value, t)
}

// typeHint says how a value of type t is written.
func typeHint(t reflect.Type) string {
	switch {
	case t == durationType:
		return "use Go syntax such as 500ms, 30s, 5m"
	case t == sizeType:
		return "write bytes, or a number with K, M or G (1024-based) such as 2G"
	case t.Kind() == reflect.Bool:
		return "write true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "write a number such as 25"
	case t.Kind() == reflect.String:
		return "write a single text value; quote it if it contains : or #"
	}
	return ""
}
