package dovecottest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// confTemplate is dovecot.conf. Everything is loopback-only and inside the server's folder.
// Notes on the less obvious settings:
//   - listen: the inet listeners name 127.0.0.1 too, so no service ever binds elsewhere.
//   - The static userdb asks the passdb whether a user exists; when not, the readers
//     userdb answers for readerUser (uid 65534, no password, so no login).
//   - stats-writer is 0666: the read-back doveadm runs unprivileged and would otherwise log
//     an error for every command.
//   - pop3_uidl_format %08Xu%08Xv: UID and UIDVALIDITY, stable across sessions and restarts.
var confTemplate = template.Must(template.New("dovecot.conf").Parse(`# written by dovecottest; removed with the test
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
instance_name = dovecottest-{{.Name}}
log_path = {{.Dir}}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "
listen = 127.0.0.1
protocols = {{if .NoListeners}}none{{else}}imap pop3{{if .LMTP}} lmtp{{end}}{{end}}
shutdown_clients = yes
verbose_proctitle = yes

ssl = yes
ssl_cert = <{{.Dir}}/ca.pem
ssl_key = <{{.Dir}}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no

auth_mechanisms = plain login
auth_verbose = yes
auth_verbose_passwords = no
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN {{.Dir}}/passwd
}
userdb {
  driver = static
  args = uid={{.UID}} gid={{.GID}} home={{.Dir}}/home/%u
}
userdb {
  driver = passwd-file
  args = {{.Dir}}/readers
}
first_valid_uid = {{.UID}}
first_valid_gid = {{.GID}}

mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv

# Repeated failed logins from one IP are delayed up to 15 s by anvil's auth penalty;
# tests of wrong passwords would crawl. Mode 0 turns the penalty off.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

service stats {
  unix_listener stats-writer {
    mode = 0666
  }
}
{{if not .NoListeners}}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{.IMAP}}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = {{.IMAPS}}
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = {{.POP3}}
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = {{.POP3S}}
    ssl = yes
  }
}
{{end}}
{{if .LMTP}}
recipient_delimiter = +
postmaster_address = postmaster@example.com
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{.LMTPPort}}
  }
}
{{end}}
{{.Extra}}
`))

func (s *Server) writeConfig(opts Options) error {
	var b bytes.Buffer
	err := confTemplate.Execute(&b, map[string]any{
		"Dir":         s.dir,
		"Name":        filepath.Base(s.dir),
		"NoListeners": s.noListeners,
		"UID":         MailUID,
		"GID":         MailGID,
		"IMAP":        s.imapPort,
		"IMAPS":       s.imapsPort,
		"POP3":        s.pop3Port,
		"POP3S":       s.pop3sPort,
		"LMTP":        s.lmtp && !s.noListeners,
		"LMTPPort":    s.lmtpPort,
		"Extra":       opts.ExtraConfig,
	})
	if err != nil {
		return fmt.Errorf("dovecot.conf: %w", err)
	}
	return os.WriteFile(s.conf, b.Bytes(), 0o644)
}
