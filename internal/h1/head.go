package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// headReader sits under the bufio.Reader a head is parsed from. It bounds
// the head (n bytes; n < 0: unlimited; at 0 it reports EOF, which the
// parser turns into an error), keeps a copy of what is read while
// recording, so the raw head can be checked for what net/http's parser
// normalises away, and remembers the last read error, which tells a
// client that went away from one that sent something malformed.
type headReader struct {
	r         io.Reader
	n         int64
	recording bool
	rec       []byte
	recp      *[]byte // rec's pooled buffer, between start and release
	err       error
}

// records holds recording buffers, so that a connection waiting for its
// next request holds none.
var records = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func (l *headReader) Read(p []byte) (int, error) {
	if l.n == 0 {
		return 0, io.EOF
	}
	if l.n > 0 && int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	if l.n > 0 {
		l.n -= int64(n)
	}
	if l.recording {
		l.rec = append(l.rec, p[:n]...)
	}
	if err != nil {
		l.err = err
	}
	return n, err
}

// start begins a head: at most limit bytes (< 0: unlimited), recorded
// from what br already holds on.
func (l *headReader) start(br *bufio.Reader, limit int64) {
	l.n, l.err, l.recording = limit, nil, true
	if l.recp == nil {
		l.recp = records.Get().(*[]byte)
		l.rec = *l.recp
	}
	buffered, _ := br.Peek(br.Buffered())
	l.rec = append(l.rec[:0], buffered...)
}

// stop ends a head and returns its raw bytes (what br consumed since
// start), valid until the next start.
func (l *headReader) stop(br *bufio.Reader) []byte {
	l.n, l.recording = -1, false
	return l.rec[:max(len(l.rec)-br.Buffered(), 0)]
}

// maxKeptRecord bounds the recording buffers kept for reuse; a larger
// one (a huge head) is dropped.
const maxKeptRecord = 16 << 10

// release returns the recording buffer to the pool (after stop).
func (l *headReader) release() {
	if l.recp == nil {
		return
	}
	if cap(l.rec) <= maxKeptRecord {
		*l.recp = l.rec[:0]
		records.Put(l.recp)
	}
	l.recp, l.rec = nil, nil
}

// headFacts is what a raw head says about its own framing, read from the
// bytes rather than from the parsed message, which net/http normalises:
// it drops a Content-Length beside Transfer-Encoding, merges equal
// Content-Length fields and joins folded lines.
type headFacts struct {
	contentLength    int    // Content-Length field lines
	transferEncoding int    // Transfer-Encoding field lines
	coding           string // the first Transfer-Encoding value, trimmed
	folded           bool   // a line folded onto the previous one (obs-fold)
}

// scanHead reads the field lines of a raw head (start line first; empty
// lines before it are skipped, as parsers may).
func scanHead(head []byte) headFacts {
	var f headFacts
	lines := head
	start := true
	for len(lines) > 0 {
		line := lines
		if i := bytes.IndexByte(lines, '\n'); i >= 0 {
			line, lines = lines[:i], lines[i+1:]
		} else {
			lines = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if start {
			if len(line) > 0 {
				start = false
			}
			continue
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			f.folded = true
			continue
		}
		name, value, _ := bytes.Cut(line, []byte{':'})
		switch {
		case asciiFold(name, "content-length"):
			f.contentLength++
		case asciiFold(name, "transfer-encoding"):
			if f.transferEncoding == 0 {
				f.coding = string(bytes.Trim(value, " \t"))
			}
			f.transferEncoding++
		}
	}
	return f
}

// framingError returns what is wrong with a message's framing fields
// ("" for nothing), for a request or a response of HTTP/1.minor.
func (f *headFacts) framingError(minor int) string {
	switch {
	case f.folded:
		return "folded header line"
	case f.contentLength > 1:
		return "more than one Content-Length"
	case f.transferEncoding > 1:
		return "more than one Transfer-Encoding"
	case f.transferEncoding == 1 && f.contentLength > 0:
		return "Content-Length with Transfer-Encoding"
	case f.transferEncoding == 1 && minor == 0:
		return "Transfer-Encoding in HTTP/1.0"
	}
	return ""
}

// unknownCoding reports a Transfer-Encoding other than "chunked" (501).
func (f *headFacts) unknownCoding() bool {
	return f.transferEncoding == 1 && !strings.EqualFold(f.coding, "chunked")
}

func asciiFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		if b[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// badFieldName returns the first header name that is not a token ("" for
// none). net/textproto lets a name with a space before the colon through
// (for old clients), uncanonicalised.
func badFieldName(h http.Header) string {
	for k := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return k
		}
	}
	return ""
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// writeFields writes the fields of h not in skip, in map order (field
// order carries no meaning; http.Header.Write sorts, which cost more than
// the rest of it). A name that is not a token is dropped; line breaks in
// a value are replaced so a field can never become two.
func writeFields(bw *bufio.Writer, h http.Header, skip map[string]bool) {
	for k, vv := range h {
		if skip[k] || strings.HasPrefix(k, http.TrailerPrefix) {
			continue // a "Trailer:" key is a trailer set early, not a header
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, headerValue(v))
		}
	}
}

// headerValue keeps a value on its line. Two IndexByte scans, not
// ContainsAny: values such as a forwarded certificate run to kilobytes,
// and IndexByte is vectorised where ContainsAny loops byte by byte.
func headerValue(v string) string {
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
		return lineBreaks.Replace(v)
	}
	return v
}

var lineBreaks = strings.NewReplacer("\r", " ", "\n", " ")
