package postfixtest

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// templates are the harness-only parts of an instance's configuration; the parts a
// user installs come from testdata/postfix (see fragmentPath).
//
//go:embed templates/*
var templates embed.FS

// maxSocketPath bounds the one absolute socket path Postfix uses (postlog):
// sun_path holds 108 bytes with the terminating NUL, less on some systems.
const maxSocketPath = 100

// prepare creates the instance's folders with the owners Postfix expects: root for the
// configuration and the queue's top (Postfix creates and owns what is below), the
// delivery uid for the folders its delivery agents write.
func (s *Server) prepare() error {
	// Postfix daemons address each other relative to the queue directory, but the
	// postlog socket is passed around by its absolute path.
	if p := filepath.Join(s.queueDir, "public", "postlog"); len(p) > maxSocketPath {
		return fmt.Errorf("socket path %s is longer than %d bytes: set TMPDIR to a shorter folder", p, maxSocketPath)
	}
	if err := os.Mkdir(s.configDir, 0o755); err != nil {
		return err
	}
	if err := s.makeQueue(); err != nil {
		// Not fatal: the first `postfix start` runs post-install create-missing.
		s.t.Logf("postfixtest: %v; the first start creates the queue (slower)", err)
		if err := os.MkdirAll(s.queueDir, 0o755); err != nil {
			return err
		}
	} else {
		s.quick = true
	}
	switch s.opts.Mode {
	case ModeDrop, ModeDropPipe:
		spool := filepath.Join(s.root, "mail")
		s.dropDir = filepath.Join(spool, "drop")
		if err := mkdirOwned(spool); err != nil {
			return err
		}
		for _, d := range []string{s.dropDir, filepath.Join(s.dropDir, "tmp"), filepath.Join(s.dropDir, "new"), filepath.Join(s.dropDir, "cur")} {
			if err := mkdirOwned(d); err != nil {
				return err
			}
		}
	case ModeSink:
		s.sinkDir = filepath.Join(s.root, "sink")
		if err := mkdirOwned(s.sinkDir); err != nil {
			return err
		}
	}
	// The scripts pipe(8) runs, as copies: the repository's checkout need not be
	// readable by nobody.
	var script []byte
	var err error
	switch s.opts.Mode {
	case ModeDropPipe:
		var src string
		if src, err = fragmentPath("mxdrop-pipe-drop"); err == nil {
			script, err = os.ReadFile(src)
		}
	case ModeSink:
		script, err = fs.ReadFile(templates, "templates/sink-deliver")
	}
	if err != nil {
		return err
	}
	if script != nil {
		bin := filepath.Join(s.root, "bin")
		if err := os.Mkdir(bin, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(bin, "deliver"), script, 0o755); err != nil {
			return err
		}
	}
	if s.opts.RelayRecipientMap != "" {
		m, err := os.ReadFile(s.opts.RelayRecipientMap)
		if err != nil {
			return fmt.Errorf("read RelayRecipientMap: %w", err)
		}
		// postmap writes its .db beside the source: work on a copy, never in the
		// caller's folder (testdata is part of the repository).
		dst := filepath.Join(s.configDir, "mxdrop-recipients")
		if err := os.WriteFile(dst, m, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// makeQueue creates the queue_directory and data_directory trees as `post-install
// create-missing` does, from the same source: the "d" entries with flag "c" of
// $meta_directory/postfix-files (Postfix's installation manifest). It is an error when
// the manifest cannot be read or names none, or names an owner it does not know.
func (s *Server) makeQueue() error {
	manifest := filepath.Join(s.bin.metaDir, "postfix-files")
	b, err := os.ReadFile(manifest)
	if err != nil {
		return err
	}
	ids := map[string]int{"root": 0, "-": 0, "$mail_owner": s.bin.mailOwnerUID, "$setgid_group": s.bin.setgidGID}
	dirs := map[string]string{"$queue_directory": s.queueDir, "$data_directory": filepath.Join(s.root, "data")}
	made := 0
	for _, line := range strings.Split(string(b), "\n") {
		// name:type:owner:group:mode[:flags], e.g. $queue_directory/public:d:$mail_owner:$setgid_group:710:uc
		f := strings.Split(line, ":")
		if len(f) < 6 || f[1] != "d" || !strings.Contains(f[5], "c") {
			continue
		}
		top, sub, _ := strings.Cut(f[0], "/")
		dir, ok := dirs[top]
		if !ok {
			continue
		}
		uid, ok1 := ids[f[2]]
		gid, ok2 := ids[f[3]]
		mode, err := strconv.ParseUint(f[4], 8, 32)
		if !ok1 || !ok2 || err != nil {
			return fmt.Errorf("%s: cannot apply %q", manifest, line)
		}
		p := filepath.Join(dir, filepath.FromSlash(sub))
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
		if err := os.Chmod(p, os.FileMode(mode)); err != nil {
			return err
		}
		made++
	}
	if made == 0 {
		return fmt.Errorf("%s names no queue folders", manifest)
	}
	return nil
}

// writeConfig renders main.cf and master.cf for the current port.
func (s *Server) writeConfig() error {
	vars := map[string]string{
		"ROOT":        s.root,
		"QUEUE_DIR":   s.queueDir,
		"DATA_DIR":    filepath.Join(s.root, "data"),
		"MAILLOG":     s.maillog,
		"HOSTNAME":    s.opts.Hostname,
		"SMTPD_ADDR":  s.Addr(),
		"SINK_DIR":    s.sinkDir,
		"SINK_SCRIPT": filepath.Join(s.root, "bin", "deliver"),

		// The placeholders of testdata/postfix, as its comments explain them.
		"MXDROP_DOMAINS":      strings.Join(s.opts.Domains, ", "),
		"MXDROP_SPOOL":        filepath.Join(s.root, "mail"),
		"MXDROP_UID":          strconv.Itoa(DeliveryUID),
		"MXDROP_GID":          strconv.Itoa(DeliveryGID),
		"MXDROP_USER":         s.bin.deliveryUser,
		"MXDROP_RECIPIENTS":   filepath.Join(s.configDir, "mxdrop-recipients"),
		"MXDROP_PIPE_COMMAND": "/bin/sh " + filepath.Join(s.root, "bin", "deliver"), // /bin/sh: TMPDIR may be noexec
	}
	main := []string{"templates/main.cf", "main.cf.mxdrop"}
	master := []string{"templates/master.cf"}
	switch s.opts.Mode {
	case ModeDrop:
		vars["MXDROP_TRANSPORT"] = "mxdrop"
		master = append(master, "master.cf.mxdrop")
	case ModeDropPipe:
		vars["MXDROP_TRANSPORT"] = "mxdrop-pipe"
		master = append(master, "master.cf.mxdrop-pipe")
	case ModeSink:
		vars["MXDROP_TRANSPORT"] = "sink"
		main = append(main, "templates/sink.main.cf")
		master = append(master, "templates/sink.master.cf")
	}
	if s.opts.RelayRecipientMap != "" {
		main = append(main, "main.cf.recipients")
	}
	for name, parts := range map[string][]string{"main.cf": main, "master.cf": master} {
		var buf bytes.Buffer
		for _, p := range parts {
			text, err := render(p, vars)
			if err != nil {
				return err
			}
			fmt.Fprintf(&buf, "\n# ---- %s ----\n%s", p, text)
		}
		p := filepath.Join(s.configDir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return err
		}
		// QUIRK: Postfix re-reads main.cf every 300ms until its mtime is more than a
		// second old (a "hot" file may be half written: dict_load_file_xt), which
		// makes every command on a fresh main.cf take 1.5-2s. Date the files back.
		old := time.Now().Add(-time.Minute)
		if err := os.Chtimes(p, old, old); err != nil {
			return err
		}
	}
	if s.opts.RelayRecipientMap != "" {
		// postmap reads main.cf (default_database_type, ...), so it runs only now.
		dst := vars["MXDROP_RECIPIENTS"]
		if out, err := s.run(s.bin.postmap, "-c", s.configDir, "hash:"+dst); err != nil {
			return fmt.Errorf("postmap %s: %w: %s", dst, err, strings.TrimSpace(out))
		}
	}
	return nil
}

var placeholderRE = regexp.MustCompile(`@[A-Z][A-Z0-9_]*@`)

// render reads a template, "templates/..." from the package or a file name of
// testdata/postfix, and replaces its @NAME@ placeholders. A placeholder without a value
// is an error, so a template and the harness cannot drift apart silently.
func render(name string, vars map[string]string) (string, error) {
	var b []byte
	var err error
	if strings.HasPrefix(name, "templates/") {
		b, err = fs.ReadFile(templates, name)
	} else {
		var p string
		if p, err = fragmentPath(name); err == nil {
			b, err = os.ReadFile(p)
		}
	}
	if err != nil {
		return "", err
	}
	var missing []string
	out := placeholderRE.ReplaceAllStringFunc(string(b), func(ph string) string {
		v, ok := vars[strings.Trim(ph, "@")]
		if !ok {
			missing = append(missing, ph)
			return ph
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%s: no value for %s", name, strings.Join(missing, ", "))
	}
	return out, nil
}

// fragmentPath returns the path of a file of testdata/postfix. It is found beside this
// source file, or else by walking up from the working directory (go test runs in the
// package's folder) to the module root.
func fragmentPath(name string) (string, error) {
	var roots []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		roots = append(roots, filepath.Join(filepath.Dir(file), "..", ".."))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			roots = append(roots, d)
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	for _, r := range roots {
		p := filepath.Join(r, "testdata", "postfix", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("testdata/postfix/%s not found above %v", name, roots)
}

// mkdirOwned creates dir, mode 0700, owned by the delivery uid and gid.
func mkdirOwned(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	return os.Chown(dir, DeliveryUID, DeliveryGID)
}

// run runs a Postfix command with a small, fixed environment and a time limit, and
// returns its combined output.
func (s *Server) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Dir = s.root
	out, err := cmd.CombinedOutput()
	return string(out), err
}
