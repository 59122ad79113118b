package spam

import (
	"fmt"
	"html"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// maxWordBytes bounds one word of text (after case folding, in UTF-8). A longer run of
// letters is not a word anyone lists (base64 debris, a URL's path) and can never match;
// a table entry with a longer word is refused.
const maxWordBytes = 128

// maxPhraseWords bounds the number of words in one table entry.
const maxPhraseWords = 16

// wordTable is the compiled word table: entries indexed by their last word, so that the
// text is scanned once, word by word, whatever the size of the table. It is immutable.
type wordTable struct {
	byLast map[string][]phrase
	// lastKey has a bit for the length and first byte of every last word: most words
	// of a text are ruled out by it without hashing them.
	lastKey   [maxWordBytes + 1][4]uint64
	maxWords  int // the longest entry, in words
	nEntries  int
	hasPhrase bool
}

// phrase is one table entry: its words, folded, and the entry as configured.
type phrase struct {
	words []string
	entry string
}

// newWordTable returns an empty table; add fills it.
func newWordTable() *wordTable {
	return &wordTable{byLast: map[string][]phrase{}}
}

// add adds one entry, split into words the way text is (see runeClass). It fails on an
// entry without a word, with too many words or with an overlong word, naming the entry,
// so that the caller can say where it came from. A repeated entry is ignored.
func (t *wordTable) add(entry string) error {
	words := splitWords(entry)
	if len(words) == 0 {
		return fmt.Errorf("%q has no letters or digits", entry)
	}
	if len(words) > maxPhraseWords {
		return fmt.Errorf("%q has more than %d words", entry, maxPhraseWords)
	}
	for _, w := range words {
		if len(w) > maxWordBytes {
			return fmt.Errorf("%q has a word longer than %d bytes", entry, maxWordBytes)
		}
	}
	last := words[len(words)-1]
	for _, p := range t.byLast[last] {
		if equalWords(p.words, words) {
			return nil
		}
	}
	t.byLast[last] = append(t.byLast[last], phrase{words: words, entry: entry})
	t.lastKey[len(last)][last[0]>>6] |= 1 << (last[0] & 63)
	t.maxWords = max(t.maxWords, len(words))
	t.hasPhrase = t.hasPhrase || len(words) > 1
	t.nEntries++
	return nil
}

func (t *wordTable) empty() bool { return t == nil || t.nEntries == 0 }

func equalWords(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// splitWords returns the folded words of s as the text scanner sees them.
func splitWords(s string) []string {
	var words []string
	var cur []byte
	flush := func() {
		if len(cur) > 0 {
			words = append(words, string(cur))
			cur = cur[:0]
		}
	}
	for _, r := range s {
		switch runeClass(r) {
		case runeWord:
			cur = utf8.AppendRune(cur, foldRune(r))
		case runeIgnored:
		default:
			flush()
		}
	}
	flush()
	return words
}

// Rune classes of the word scanner.
const (
	runeSep     = iota // ends a word
	runeWord           // part of a word
	runeIgnored        // neither: format characters such as SOFT HYPHEN and ZERO WIDTH SPACE
)

// asciiClass is runeClass for ASCII.
var asciiClass = func() (t [128]uint8) {
	for c := range t {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			t[c] = runeWord
		}
	}
	return t
}()

// runeClass says what r is to the word scanner. A word is a run of letters, digits and
// combining marks, so "viagra" is not found in "viagras" or "aviagra", but is found in
// "viagra's" and "VIAGRA!". Format characters (Unicode category Cf: soft hyphens,
// zero-width spaces and joiners) are skipped, not taken as separators: they are
// invisible when the text is shown, and "via\u00adgra" is a common way to hide a word.
func runeClass(r rune) int {
	if r < utf8.RuneSelf {
		return int(asciiClass[r])
	}
	switch {
	case unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsMark(r):
		return runeWord
	case unicode.Is(unicode.Cf, r):
		return runeIgnored
	}
	return runeSep
}

// foldRune returns r case-folded: lower case of the upper case, which maps the
// variants of one letter to one form (VIAGRA, Viagra, final and medial sigma, KELVIN
// SIGN and k). QUIRK: simple case mappings only, so "STRASSE" does not match "straße";
// and text is not normalised, so a decomposed "é" (e and a combining accent) does not
// match a precomposed one.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if r >= 'A' && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	return unicode.ToLower(unicode.ToUpper(r))
}

// textScanner finds table entries in text fed to it in pieces. Its memory does not
// depend on the text: the current word (at most maxWordBytes) and the words before it
// that a phrase of the table may need. In HTML mode, tags, comments, and script and
// style elements are removed and character references decoded first (crudely: no
// DOM, but the way a browser shows the text, so that "via<b>gra</b>" is a word).
type textScanner struct {
	t *wordTable

	// The current word, folded. Fixed storage: the scanner is written to for every
	// byte of text, and a slice header stored per byte costs a GC write barrier.
	word  [maxWordBytes + utf8.UTFMax]byte
	nword int
	long  bool // the current word exceeded maxWordBytes: it cannot match

	// prev holds the previous words for phrases, most recent at prev[(head-1) mod n];
	// nprev counts the valid ones. An overlong word is kept with n -1: it matches nothing.
	prev  []prevWord
	head  int
	nprev int

	carry [utf8.UTFMax]byte // an incomplete UTF-8 sequence at the end of the last piece
	ncary int

	hit string // the entry found, "" if none

	html htmlState
}

type prevWord struct {
	b [maxWordBytes]byte
	n int
}

// htmlState is the crude HTML-to-text state of a textScanner.
type htmlState struct {
	on     bool
	state  int
	name   [32]byte // tag name so far, lower case; or entity name
	nname  int
	quote  rune   // quote character inside a tag
	skipTo string // "/script" or "/style" while inside such an element
	dashes int    // consecutive '-' in a comment
}

func (h *htmlState) addName(c byte) {
	if h.nname < len(h.name) {
		h.name[h.nname] = c
		h.nname++
	}
}

const (
	htmlText = iota
	htmlTagOpen
	htmlTagName
	htmlTagRest
	htmlComment
	htmlEntity
)

func newTextScanner(t *wordTable) *textScanner {
	s := &textScanner{t: t}
	if t.hasPhrase {
		s.prev = make([]prevWord, t.maxWords-1)
	}
	return s
}

// reset starts a new text (a subject, a part) in plain (html false) or HTML mode.
func (s *textScanner) reset(html bool) {
	s.hit = ""
	s.nword, s.long = 0, false
	s.nprev, s.head = 0, 0
	s.ncary = 0
	s.html = htmlState{on: html}
}

// write feeds the next piece of text. Bytes that are not UTF-8 separate words.
func (s *textScanner) write(p []byte) {
	if s.ncary > 0 {
		// Finish the sequence left over from the last piece, with the first bytes of p.
		var tmp [2 * utf8.UTFMax]byte
		k := copy(tmp[:], s.carry[:s.ncary])
		k += copy(tmp[k:], p[:min(len(p), utf8.UTFMax)])
		i := 0
		for i < s.ncary {
			if !utf8.FullRune(tmp[i:k]) {
				// p is shorter than the rest of the sequence: all of it is carried.
				s.ncary = copy(s.carry[:], tmp[i:k])
				return
			}
			r, size := utf8.DecodeRune(tmp[i:k])
			s.rune(r)
			i += size
		}
		p = p[i-s.ncary:]
		s.ncary = 0
	}
	for i := 0; i < len(p) && s.hit == ""; {
		c := p[i]
		if c < utf8.RuneSelf {
			switch {
			case s.html.on && (asciiClass[c] != runeWord || s.html.state != htmlText || s.html.skipTo != ""):
				s.rune(rune(c))
			case asciiClass[c] == runeWord:
				// The common case, inlined: an ASCII letter or digit of text.
				if !s.long {
					if c >= 'A' && c <= 'Z' {
						c += 'a' - 'A'
					}
					s.word[s.nword] = c
					if s.nword++; s.nword > maxWordBytes {
						s.long = true
					}
				}
			default:
				s.endWord()
			}
			i++
			continue
		}
		if !utf8.FullRune(p[i:]) {
			s.ncary = copy(s.carry[:], p[i:])
			return
		}
		r, size := utf8.DecodeRune(p[i:])
		s.rune(r)
		i += size
	}
}

// writeString is write for a string.
func (s *textScanner) writeString(text string) { s.write([]byte(text)) }

// end finishes the current text and reports the entry found, "" if none.
func (s *textScanner) end() string {
	if s.ncary > 0 {
		s.ncary = 0
		s.wordRune(utf8.RuneError)
	}
	if s.html.on && s.html.state == htmlEntity {
		s.flushEntity(false)
	}
	s.endWord()
	return s.hit
}

// rune takes one rune of text, through the HTML filter when it is on.
func (s *textScanner) rune(r rune) {
	if !s.html.on {
		s.wordRune(r)
		return
	}
	h := &s.html
	switch h.state {
	case htmlText:
		switch {
		case r == '<':
			h.state, h.nname = htmlTagOpen, 0
		case r == '&' && h.skipTo == "":
			h.state, h.nname = htmlEntity, 0
		case h.skipTo == "":
			s.wordRune(r)
		}
	case htmlTagOpen:
		// "a < b" is text; a tag starts with a letter, '/', '!' or '?'.
		switch {
		case r == '!' || r == '?' || r == '/' || r < utf8.RuneSelf && asciiClass[r] == runeWord:
			h.state = htmlTagName
			h.addName(byte(unicode.ToLower(r)))
		default:
			h.state = htmlText
			if h.skipTo == "" {
				s.wordRune('<')
			}
			s.rune(r)
		}
	case htmlTagName:
		if string(h.name[:h.nname]) == "!--" {
			h.state, h.dashes = htmlComment, 0
			s.rune(r)
			return
		}
		switch {
		case r == '>':
			s.endTag()
		case r == ' ' || r == '\t' || r == '\r' || r == '\n' || r == '/' && h.nname > 1:
			h.state = htmlTagRest
		default:
			if h.nname < 16 && r < utf8.RuneSelf {
				h.addName(byte(unicode.ToLower(r)))
			}
		}
	case htmlTagRest:
		switch {
		case h.quote != 0:
			if r == h.quote {
				h.quote = 0
			}
		case r == '"' || r == '\'':
			h.quote = r
		case r == '>':
			s.endTag()
		}
	case htmlComment:
		switch {
		case r == '>' && h.dashes >= 2:
			h.state = htmlText
		case r == '-':
			h.dashes++
		default:
			h.dashes = 0
		}
	case htmlEntity:
		switch {
		case r == ';':
			s.flushEntity(true)
		case h.nname < len(h.name) && (r == '#' || r < utf8.RuneSelf && asciiClass[r] == runeWord):
			h.addName(byte(r))
		default:
			s.flushEntity(false)
			s.rune(r)
		}
	}
}

// blockTags are the elements a browser shows on a line of their own: their tags
// separate words. Other tags (b, span, font, a) do not: "via<b>gra</b>" shows "viagra".
var blockTags = map[string]bool{
	"address": true, "article": true, "aside": true, "blockquote": true, "br": true,
	"caption": true, "dd": true, "div": true, "dl": true, "dt": true, "fieldset": true,
	"figure": true, "footer": true, "form": true, "h1": true, "h2": true, "h3": true,
	"h4": true, "h5": true, "h6": true, "header": true, "hr": true, "img": true,
	"li": true, "main": true, "nav": true, "ol": true, "p": true, "pre": true,
	"section": true, "table": true, "tbody": true, "td": true, "tfoot": true,
	"th": true, "thead": true, "title": true, "tr": true, "ul": true,
	"head": true, "body": true, "html": true, "option": true, "button": true,
}

func (s *textScanner) endTag() {
	h := &s.html
	h.state, h.quote = htmlText, 0
	name := string(h.name[:h.nname])
	if h.skipTo != "" {
		if name == h.skipTo {
			h.skipTo = ""
		}
		return
	}
	switch name {
	case "script", "style":
		h.skipTo = "/" + name
		return
	}
	if blockTags[trimSlash(name)] {
		s.wordRune(' ')
	}
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

// flushEntity decodes the character reference collected in h.name ("&name;" when
// terminated, "&name" otherwise) and feeds the result as text.
func (s *textScanner) flushEntity(terminated bool) {
	h := &s.html
	h.state = htmlText
	ref := "&" + string(h.name[:h.nname])
	if terminated {
		ref += ";"
	}
	for _, r := range html.UnescapeString(ref) {
		s.wordRune(r)
	}
}

// wordRune takes one rune of plain text.
func (s *textScanner) wordRune(r rune) {
	switch runeClass(r) {
	case runeWord:
		if s.long {
			return
		}
		if r < utf8.RuneSelf {
			if r >= 'A' && r <= 'Z' {
				r += 'a' - 'A'
			}
			s.word[s.nword] = byte(r)
			s.nword++
		} else {
			s.nword += utf8.EncodeRune(s.word[s.nword:], foldRune(r))
		}
		if s.nword > maxWordBytes {
			s.long = true
		}
	case runeIgnored:
	default:
		s.endWord()
	}
}

// endWord looks the finished word up and remembers it for phrases.
func (s *textScanner) endWord() {
	if s.nword == 0 && !s.long {
		return
	}
	if c := s.word[0]; !s.long && s.hit == "" && s.t.lastKey[s.nword][c>>6]&(1<<(c&63)) != 0 {
		for _, p := range s.t.byLast[string(s.word[:s.nword])] {
			if s.precededBy(p.words[:len(p.words)-1]) {
				s.hit = p.entry
				break
			}
		}
	}
	if s.prev != nil {
		slot := &s.prev[s.head]
		if s.long {
			slot.n = -1
		} else {
			slot.n = copy(slot.b[:], s.word[:s.nword])
		}
		s.head = (s.head + 1) % len(s.prev)
		s.nprev = min(s.nprev+1, len(s.prev))
	}
	s.nword, s.long = 0, false
}

// precededBy reports whether the words before the current one are words.
func (s *textScanner) precededBy(words []string) bool {
	if len(words) > s.nprev {
		return false
	}
	for i := range words {
		// words[len-1] is the word just before the current one.
		w := &s.prev[(s.head-1-i+2*len(s.prev))%len(s.prev)]
		if w.n < 0 || string(w.b[:w.n]) != words[len(words)-1-i] {
			return false
		}
	}
	return true
}

// quoteEntry quotes a table entry for a Reason: 7-bit, as header fields are.
func quoteEntry(e string) string { return strconv.QuoteToASCII(e) }
