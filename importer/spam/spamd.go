package spam

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultSpamdTimeout bounds one spamd check when the configuration gives no
// spamd_timeout: connecting, sending the message and reading the answer together.
const DefaultSpamdTimeout = 30 * time.Second

// MaxSpamdSize is the largest message sent to spamd. A larger one is not sent and is
// judged by the built-in rules alone, as spamc does with its default -s 500 KB: spam is
// small, and SpamAssassin's time grows with the message.
const MaxSpamdSize = 500 << 10

// maxSpamdAnswer bounds the answer read from spamd.
const maxSpamdAnswer = 64 << 10

// SpamdError is the error Classify returns when spamd could not judge a message: it
// could not be reached, it did not answer within the timeout, or its answer was not
// the spamc protocol's. Its text is short and safe to show in the X-Spam-Status field
// of the delivered copy ("spamd unreachable"); the cause, with addresses and system
// error text, is in Err and in the log. errors.Is(err, context.DeadlineExceeded) holds
// for a timeout.
type SpamdError struct {
	Stage   string // connect | send | answer
	Timeout bool   // the deadline passed during Stage
	Err     error
}

func (e *SpamdError) Error() string {
	switch {
	case e.Timeout:
		return "spamd timed out"
	case errors.Is(e.Err, context.Canceled):
		return "spamd check interrupted"
	case e.Stage == "connect":
		return "spamd unreachable"
	case e.Stage == "send":
		return "spamd: sending the message failed"
	default:
		return "spamd: bad answer"
	}
}

func (e *SpamdError) Unwrap() error { return e.Err }

// spamdResult is spamd's judgement.
type spamdResult struct {
	spam            bool
	score, required float64
	symbols         []string // the SpamAssassin tests that hit
}

// reason formats the result for Verdict.Reason: "spamd 1004.2/5.0 GTUBE,MISSING_DATE".
// The list of tests is cut to keep the header field short.
func (r spamdResult) reason() string {
	var b strings.Builder
	b.WriteString("spamd ")
	b.WriteString(strconv.FormatFloat(r.score, 'f', 1, 64))
	b.WriteByte('/')
	b.WriteString(strconv.FormatFloat(r.required, 'f', 1, 64))
	for i, s := range r.symbols {
		if b.Len()+len(s) > 150 {
			b.WriteString(",...")
			break
		}
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(s)
	}
	return b.String()
}

// spamdClient speaks the spamc protocol (SpamAssassin's spamd/PROTOCOL, version 1.5) to
// one spamd over TCP.
type spamdClient struct {
	addr    string
	timeout time.Duration
}

// aLongTimeAgo is a deadline in the past, to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// check sends the size bytes that open returns to spamd with the SYMBOLS command and
// returns its verdict. The timeout covers connecting, sending and the answer; ctx's
// end interrupts it too. Failures of spamd are *SpamdError; failures to read the
// message are other errors.
func (c spamdClient) check(ctx context.Context, open func() (io.ReadCloser, error), size int64) (spamdResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// Open the message first: a source that cannot be read is not spamd's failure.
	rc, err := open()
	if err != nil {
		return spamdResult{}, fmt.Errorf("open message: %w", err)
	}
	defer rc.Close()

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return spamdResult{}, spamdError(ctx, "connect", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	defer stop()

	// Request (PROTOCOL "SYMBOLS"): the verdict line of CHECK plus the names of the
	// tests that hit, which make a useful Reason.
	bw := bufio.NewWriterSize(conn, 32<<10)
	fmt.Fprintf(bw, "SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n", size)
	src := &errReader{r: rc}
	n, err := io.CopyN(bw, src, size)
	switch {
	case src.err != nil:
		return spamdResult{}, fmt.Errorf("read message: %w", src.err)
	case err == io.EOF:
		return spamdResult{}, fmt.Errorf("read message: %d bytes where %d were measured", n, size)
	case err != nil:
		return spamdResult{}, spamdError(ctx, "send", err)
	}
	if err := bw.Flush(); err != nil {
		return spamdResult{}, spamdError(ctx, "send", err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.CloseWrite() // nothing more comes; spamd reads Content-length bytes anyway
	}
	res, err := readAnswer(bufio.NewReader(io.LimitReader(conn, maxSpamdAnswer)))
	if err != nil {
		return spamdResult{}, spamdError(ctx, "answer", err)
	}
	return res, nil
}

// spamdError wraps err of stage, marking a timeout. When ctx has ended, its error is
// wrapped too, so errors.Is finds context.DeadlineExceeded or context.Canceled; a
// cancelled check is not a timeout, though its I/O was interrupted by one.
func spamdError(ctx context.Context, stage string, err error) error {
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	switch cerr := ctx.Err(); cerr {
	case context.Canceled: // the caller gave up; the I/O timeout is ours to interrupt it
		timeout = false
		err = fmt.Errorf("%w: %w", cerr, err)
	case context.DeadlineExceeded:
		timeout = true
		if !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
	case nil:
		if timeout {
			// The connection's deadline is ctx's, and may pass a moment before ctx
			// notices.
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
	}
	return &SpamdError{Stage: stage, Timeout: timeout, Err: err}
}

// errAnswer is a malformed answer.
type errAnswer string

func (e errAnswer) Error() string { return "malformed answer: " + string(e) }

// readAnswer reads spamd's answer to SYMBOLS:
//
//	SPAMD/1.1 0 EX_OK
//	Content-length: 103
//	Spam: True ; 1004.2 / 5.0
//
//	GTUBE,MISSING_DATE,...
//
// A status other than 0 (EX_OK), a missing or unreadable Spam header, or an answer
// that ends before its header does is an error. The list of tests is optional: CHECK
// answers have none, and a broken list costs only the Reason's detail.
func readAnswer(br *bufio.Reader) (spamdResult, error) {
	var res spamdResult
	line, err := answerLine(br)
	if err != nil {
		return res, err
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "SPAMD/") {
		return res, errAnswer(fmt.Sprintf("status line %.80q", line))
	}
	if code, err := strconv.Atoi(f[1]); err != nil {
		return res, errAnswer(fmt.Sprintf("status line %.80q", line))
	} else if code != 0 {
		return res, fmt.Errorf("spamd answered %.80q", line)
	}
	length, haveSpam := int64(-1), false
	for {
		line, err := answerLine(br)
		if err != nil {
			return res, err
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return res, errAnswer(fmt.Sprintf("header line %.80q", line))
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "spam":
			if res.spam, res.score, res.required, err = parseSpamHeader(value); err != nil {
				return res, err
			}
			haveSpam = true
		case "content-length":
			if length, err = strconv.ParseInt(value, 10, 64); err != nil || length < 0 {
				return res, errAnswer(fmt.Sprintf("Content-length %.40q", value))
			}
		}
	}
	if !haveSpam {
		return res, errAnswer("no Spam header")
	}
	var body io.Reader = br
	if length >= 0 {
		body = io.LimitReader(br, length)
	}
	b, _ := io.ReadAll(body)
	for _, s := range strings.Split(string(b), ",") {
		if s = strings.TrimSpace(s); s != "" {
			res.symbols = append(res.symbols, s)
		}
	}
	return res, nil
}

// answerLine reads one line of the answer's head without its line ending.
func answerLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err == io.EOF {
		return "", errAnswer("the answer ended early")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// parseSpamHeader parses "True ; 1004.2 / 5.0" (True/False; Yes/No in old spamds).
func parseSpamHeader(v string) (spam bool, score, required float64, err error) {
	bad := errAnswer(fmt.Sprintf("Spam header %.80q", v))
	flag, scores, ok := strings.Cut(v, ";")
	if !ok {
		return false, 0, 0, bad
	}
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "true", "yes":
		spam = true
	case "false", "no":
	default:
		return false, 0, 0, bad
	}
	s, r, ok := strings.Cut(scores, "/")
	if !ok {
		return false, 0, 0, bad
	}
	if score, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
		return false, 0, 0, bad
	}
	if required, err = strconv.ParseFloat(strings.TrimSpace(r), 64); err != nil {
		return false, 0, 0, bad
	}
	return spam, score, required, nil
}

// errReader records the error of its reader other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// messageSize returns the size of the message open returns: from Stat when it is a
// regular file, else by reading it, at most MaxSpamdSize+1 bytes (a larger message is
// not sent to spamd, so its exact size does not matter).
func messageSize(open func() (io.ReadCloser, error)) (int64, error) {
	rc, err := open()
	if err != nil {
		return 0, fmt.Errorf("open message: %w", err)
	}
	defer rc.Close()
	if st, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
		if fi, err := st.Stat(); err == nil && fi.Mode().IsRegular() {
			return fi.Size(), nil
		}
	}
	n, err := io.Copy(io.Discard, io.LimitReader(rc, MaxSpamdSize+1))
	if err != nil {
		return 0, fmt.Errorf("read message: %w", err)
	}
	return n, nil
}
