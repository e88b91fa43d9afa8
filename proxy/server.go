package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// MaxHeaderBytes bounds a request's head (request line and headers);
	// a longer one is answered 431.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's head.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a connection.
	IdleTimeout time.Duration
	// ErrorLog receives what the server cannot attribute to a request
	// (a handler's panic; HTTP/2 protocol errors).
	ErrorLog *log.Logger
}

// Server serves the connections a tlsconfig.Server listener accepts with a
// Handler: HTTP/2 connections through net/http, HTTP/1.1 connections
// itself. Cloudflare reaches origins over HTTP/1.1 by default and keeps
// those connections busy, so that path is the one to make cheap: one
// goroutine per connection, no background reader or cancellable context
// per request (net/http has both), and no read or write buffer held while
// a connection waits for its next request.
type Server struct {
	h    *Handler
	opts ServerOptions
	h2   *http.Server
	h2ln *chanListener

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*h1conn]struct{}
	shutting atomic.Bool
}

// NewServer returns a Server that answers every request with h.
func NewServer(h *Handler, opts ServerOptions) *Server {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	s := &Server{h: h, opts: opts, conns: map[*h1conn]struct{}{}, h2ln: newChanListener()}
	s.h2 = &http.Server{
		Handler:     h,
		ConnContext: ConnContext,
		// net/http reads up to MaxHeaderBytes+4096 before answering 431;
		// subtract the slack so the configured figure is the real bound.
		MaxHeaderBytes:    max(opts.MaxHeaderBytes-4096, 1024),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		ErrorLog:          opts.ErrorLog,
	}
	return s
}

// Serve accepts connections from l until it fails or the Server is shut
// down; then it returns http.ErrServerClosed. l must return *tls.Conn
// whose handshake is complete, as a tlsconfig.Server listener does.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = l
	s.h2ln.addr = l.Addr()
	s.mu.Unlock()
	go s.h2.Serve(s.h2ln)
	for {
		c, err := l.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			return err
		}
		tc, ok := c.(*tls.Conn)
		if !ok {
			c.Close() // only connections a tlsconfig.Server judged are served
			continue
		}
		cs := tc.ConnectionState()
		if cs.NegotiatedProtocol == "h2" {
			s.h2ln.hand(tc)
			continue
		}
		go s.serveH1(tc, cs)
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish, and returns when all connections are closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	h2err := make(chan error, 1)
	go func() { h2err <- s.h2.Shutdown(ctx) }()
	wait := time.Millisecond
	for s.closeIdle() > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
	return <-h2err
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.stop()
	err := s.h2.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.state.Store(connClosed)
		c.tc.Close()
	}
	s.mu.Unlock()
	return err
}

func (s *Server) stop() {
	s.mu.Lock()
	s.shutting.Store(true)
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	s.h2ln.Close()
}

// closeIdle closes the HTTP/1.1 connections waiting for a request and
// returns how many remain.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) ||
			(time.Since(c.born) > newConnGrace && c.state.CompareAndSwap(connNew, connClosed)) {
			c.tc.Close()
		}
	}
	return len(s.conns)
}

func (s *Server) track(c *h1conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *h1conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.ErrorLog != nil {
		s.opts.ErrorLog.Printf(format, args...)
	}
}

// chanListener hands HTTP/2 connections to the net/http server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// States of an HTTP/1.1 connection.
const (
	connNew      int32 = iota // no request yet: Shutdown closes it after newConnGrace
	connIdle                  // waiting for the next request: Shutdown closes it
	connActive                // reading a request or writing its response
	connClosed                // closed by Shutdown or Close
	connHijacked              // handed to a protocol upgrade; no longer tracked
)

// newConnGrace is how long Shutdown lets a new connection bring its first
// request (which may be on the wire already), as net/http does.
const newConnGrace = 5 * time.Second

// h1conn is one HTTP/1.1 connection. Between requests it holds no buffers:
// it waits for the first byte of the next request with a one-byte read,
// then borrows a reader and a writer from pools for that request.
type h1conn struct {
	srv    *Server
	tc     *tls.Conn
	ctx    context.Context
	remote string
	tls    tls.ConnectionState
	born   time.Time
	state  atomic.Int32
	// linger: close with a lingering close, since the client may still be
	// sending (a body we did not read, a head we refused).
	linger bool

	peek   [1]byte
	peeked bool
	lr     limitReader // under br: bounds the request head
	br     *bufio.Reader
	bw     *bufio.Writer
	out    connWriter // under bw: bounds every write
	body   bodyReader // the current request's body
	w      h1response // reused for every request
}

// Read feeds the byte that ended the idle wait, then the connection.
func (c *h1conn) Read(p []byte) (int, error) {
	if c.peeked && len(p) > 0 {
		c.peeked = false
		p[0] = c.peek[0]
		return 1, nil
	}
	return c.tc.Read(p)
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	headers = sync.Pool{New: func() any { return make(http.Header) }}
)

func (s *Server) serveH1(tc *tls.Conn, cs tls.ConnectionState) {
	c := &h1conn{srv: s, tc: tc, remote: tc.RemoteAddr().String(), tls: cs, born: time.Now()}
	c.lr.r = c
	c.out.c = c
	// ServerContextKey makes ReverseProxy abort (panic with
	// ErrAbortHandler) when copying a response body fails, as it does
	// under net/http; the connection is then closed without completing
	// the response, so a truncated body never looks whole.
	c.ctx = context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, s.h2), connKey{}, net.Conn(tc))
	if !s.track(c) {
		tc.Close()
		return
	}
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			s.logf("http: panic serving %s: %v\n%s", c.remote, p, debug.Stack())
		}
		if c.state.Load() != connHijacked {
			c.releaseBuffers()
			switch {
			case p != nil:
				// No close_notify: to a client reading a body that ends
				// with the connection (HTTP/1.0), a clean close would
				// make a cut-off body look whole.
				tc.NetConn().Close()
			case c.linger:
				lingerClose(tc)
			default:
				tc.Close()
			}
		}
		s.untrack(c)
	}()
	wait := s.opts.ReadHeaderTimeout
	for c.next(wait) && c.serveRequest() && !s.shutting.Load() {
		wait = s.opts.IdleTimeout
	}
}

// next waits up to wait for the next request to begin and reports whether
// one did.
func (c *h1conn) next(wait time.Duration) bool {
	c.releaseBuffers() // the reader stays if it holds a pipelined request
	if c.br == nil {
		if !c.state.CompareAndSwap(connActive, connIdle) && c.state.Load() != connNew {
			return false
		}
		c.tc.SetReadDeadline(deadline(wait))
		if n, _ := c.tc.Read(c.peek[:]); n == 0 {
			return false
		}
		c.peeked = true
	}
	if !c.state.CompareAndSwap(connIdle, connActive) && !c.state.CompareAndSwap(connNew, connActive) &&
		c.state.Load() != connActive {
		return false
	}
	c.tc.SetReadDeadline(deadline(c.srv.opts.ReadHeaderTimeout))
	return true
}

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// releaseBuffers returns the connection's buffers to their pools; the
// reader only when it holds nothing more to parse.
func (c *h1conn) releaseBuffers() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readers.Put(c.br)
		c.br = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		writers.Put(c.bw)
		c.bw = nil
	}
	if h := c.w.header; h != nil {
		clear(h)
		headers.Put(h)
		c.w.header = nil
	}
}

// maxDrain is how much of a request body the handler left unread is read
// (and discarded) to keep the connection for the next request.
const maxDrain = 256 << 10

// serveRequest reads one request, answers it, and reports whether the
// connection may carry another.
func (c *h1conn) serveRequest() bool {
	s := c.srv
	if c.br == nil {
		c.br = readers.Get().(*bufio.Reader)
		c.br.Reset(&c.lr)
	}
	c.bw = writers.Get().(*bufio.Writer)
	c.bw.Reset(&c.out)
	c.w.header = headers.Get().(http.Header)
	c.lr.n = int64(s.opts.MaxHeaderBytes)
	req, err := http.ReadRequest(c.br)
	hitLimit := c.lr.n == 0
	c.lr.n = -1
	if err != nil {
		var ne net.Error
		switch {
		case hitLimit:
			c.refuse(http.StatusRequestHeaderFieldsTooLarge, "")
		case err == io.EOF || errors.As(err, &ne):
			// The client closed the connection or stalled mid-head.
		default:
			// The parser's message may quote what the client sent:
			// not echoed back, as under net/http.
			c.refuse(http.StatusBadRequest, "")
		}
		return false
	}
	if msg := checkRequest(req); msg != "" {
		status := http.StatusBadRequest
		if req.ProtoMajor != 1 {
			status = http.StatusHTTPVersionNotSupported
		}
		c.refuse(status, msg)
		return false
	}
	// The head's deadline stays: nothing reads from the connection
	// before the next request's wait sets its own, except the body
	// reader and a hijack, which set theirs.
	expect := false
	if e, ok := req.Header["Expect"]; ok {
		if len(e) != 1 || !strings.EqualFold(e[0], "100-continue") {
			c.refuse(http.StatusExpectationFailed, "")
			return false
		}
		// Answer "100 Continue" ourselves when the body is first read,
		// as net/http does; the app gets a plain request with a body.
		delete(req.Header, "Expect")
		expect = req.ProtoAtLeast(1, 1)
	}
	if req.Body != http.NoBody {
		c.body = bodyReader{c: c, r: req.Body, expect: expect}
		req.Body = &c.body
	}
	req.RemoteAddr = c.remote
	req.TLS = &c.tls
	req = req.WithContext(c.ctx)

	w := &c.w
	w.reset(c, req)
	s.h.ServeHTTP(w, req)
	if c.state.Load() == connHijacked {
		return false
	}
	if !w.finish() {
		return false
	}
	if req.Body != http.NoBody {
		if w.closeAfter {
			c.linger = !c.body.eof // no use reading what the next request will not follow
			return false
		}
		if !c.drainBody() {
			c.linger = true
			return false
		}
	}
	return !w.closeAfter
}

// drainBody reads what the handler left of the request body, within
// maxDrain and drainTimeout, so the connection can carry the next request.
func (c *h1conn) drainBody() bool {
	b := &c.body
	if b.eof {
		return true
	}
	if b.expect {
		return false // the client was never told to send it; it may yet
	}
	b.deadline = time.Now().Add(drainTimeout)
	n, err := io.CopyN(io.Discard, bodyDrain{b}, maxDrain+1)
	return n <= maxDrain && (err == io.EOF || b.eof)
}

// bodyDrain reads a body the handler may have closed.
type bodyDrain struct{ b *bodyReader }

func (d bodyDrain) Read(p []byte) (int, error) { return d.b.read(p) }

// drainTimeout bounds the wait for an unread body to arrive.
const drainTimeout = 5 * time.Second

// bodyReader is the request body as the handler sees it: each read waits
// at most IdleTimeout for the client, the first one sends "100 Continue"
// when the client asked for it, and the end is noted so the response can
// say whether the connection survives. Close only ends the handler's
// reading: what is left is the server's to drain, within its bounds.
type bodyReader struct {
	c        *h1conn
	r        io.ReadCloser
	n        int64 // bytes read
	eof      bool
	closed   bool
	expect   bool      // "100 Continue" is owed before the first read
	deadline time.Time // for draining: one deadline for all reads
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

func (b *bodyReader) read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	c := b.c
	if b.expect {
		if c.w.wroteHeader {
			return 0, io.EOF // answered already: the client need not send it
		}
		b.expect = false
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.bw.Flush(); err != nil {
			return 0, err
		}
	}
	switch t := c.srv.opts.IdleTimeout; {
	case !b.deadline.IsZero():
		c.tc.SetReadDeadline(b.deadline)
	case t > 0:
		c.tc.SetReadDeadline(time.Now().Add(t))
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *bodyReader) Close() error {
	b.closed = true
	return nil
}

// unreadLeft reports whether closing the connection after the response
// leaves client data unread: a body not read to its end that is too large
// to drain, or that the client was never asked to send.
func (b *bodyReader) unreadLeft(req *http.Request) bool {
	if req.Body == http.NoBody || b.eof {
		return false
	}
	return b.expect || req.ContentLength < 0 || req.ContentLength-b.n > maxDrain
}

// connWriter writes to the client; each write must complete within
// IdleTimeout, so a client that stops reading cannot hold the handler,
// and its upstream connection, forever.
type connWriter struct{ c *h1conn }

func (w *connWriter) Write(p []byte) (int, error) {
	if t := w.c.srv.opts.IdleTimeout; t > 0 {
		w.c.tc.SetWriteDeadline(time.Now().Add(t))
	}
	return w.c.tc.Write(p)
}

// lingerClose closes a connection the client may still be sending on
// (a body we did not read, a head we refused) without losing the
// response: close_notify, then the listener's lingering close of the
// socket (tlsconfig's LingerClose), so the client reads the answer rather
// than a reset.
func lingerClose(tc *tls.Conn) {
	tc.CloseWrite() // close_notify; crypto/tls bounds the write itself
	if l, ok := tc.NetConn().(interface{ LingerClose() }); ok {
		l.LingerClose()
		return
	}
	tc.Close()
}

// checkRequest applies the checks net/http's server makes after parsing a
// request, and returns what is wrong ("" for nothing).
func checkRequest(req *http.Request) string {
	if req.ProtoMajor != 1 {
		return "unsupported protocol version"
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != "CONNECT" {
		return "missing required Host header"
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return "malformed Host header"
	}
	// Values need no second look: net/textproto refuses invalid bytes in
	// them while parsing. Names it lets through with a space (for old
	// clients), which net/http's server refuses, and so do we.
	for k := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return "invalid header name"
		}
	}
	return ""
}

// refuse answers a request that never reaches the handler, and the
// connection is closed after it.
func (c *h1conn) refuse(status int, msg string) {
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	if msg != "" {
		text += ": " + msg
	}
	bw := c.bw
	bw.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(text)) + "\r\n\r\n" + text)
	bw.Flush()
	c.linger = true
}

// h1response is the http.ResponseWriter of an HTTP/1.1 request. Headers
// are written with the first body byte (or at the end); the body is framed
// by the Content-Length the handler set, or chunked when it set none.
type h1response struct {
	c      *h1conn
	req    *http.Request
	header http.Header // from a pool, for the request's duration

	wroteHeader bool
	status      int
	length      int64 // declared Content-Length; -1: none
	written     int64
	chunked     bool
	bodyless    bool
	closeAfter  bool
	trailers    []string // names announced in "Trailer"
}

// framingOf1xx are headers an informational response must not carry.
var framingOf1xx = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

var (
	connClose     = []string{"close"}
	connKeepAlive = []string{"keep-alive"}
	teChunked     = []string{"chunked"}
)

func (w *h1response) reset(c *h1conn, req *http.Request) {
	h := w.header
	clear(h)
	*w = h1response{c: c, req: req, header: h, length: -1, closeAfter: req.Close}
}

func (w *h1response) Header() http.Header { return w.header }

func (w *h1response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("proxy: invalid WriteHeader code " + strconv.Itoa(code))
	}
	bw := w.c.bw
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once; the final response follows.
		if w.req.ProtoAtLeast(1, 1) {
			writeStatusLine(bw, code)
			writeFields(bw, w.header, framingOf1xx)
			bw.WriteString("\r\n")
			bw.Flush()
		}
		return
	}
	w.wroteHeader, w.status = true, code
	h := w.header
	delete(h, "Transfer-Encoding")
	w.bodyless = w.req.Method == "HEAD" || code == http.StatusNoContent || code == http.StatusNotModified || code == http.StatusSwitchingProtocols
	if code == http.StatusNoContent {
		delete(h, "Content-Length")
	} else if v := h["Content-Length"]; len(v) > 0 {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if len(v) != 1 || err != nil || n < 0 {
			delete(h, "Content-Length")
		} else {
			w.length = n
		}
	}
	if t := h["Trailer"]; len(t) > 0 && !w.bodyless && w.req.ProtoAtLeast(1, 1) {
		for _, v := range t {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
				}
			}
		}
		delete(h, "Content-Length") // trailers need the chunked framing
		w.length = -1
	}
	if !w.bodyless && w.length < 0 {
		if w.req.ProtoAtLeast(1, 1) {
			w.chunked = true
			h["Transfer-Encoding"] = teChunked
		} else {
			w.closeAfter = true // HTTP/1.0: the end of the body is the end of the connection
		}
	}
	if w.c.srv.shutting.Load() || w.c.body.unreadLeft(w.req) {
		w.closeAfter = true
	}
	switch {
	case w.closeAfter:
		h["Connection"] = connClose
	case !w.req.ProtoAtLeast(1, 1):
		h["Connection"] = connKeepAlive // HTTP/1.0 that asked for keep-alive
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	writeStatusLine(bw, code)
	writeFields(bw, h, nil)
	bw.WriteString("\r\n")
}

func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
}

func (w *h1response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.bodyless {
		return 0, http.ErrBodyNotAllowed
	}
	var tooLong error
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		p, tooLong = p[:w.length-w.written], http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, tooLong
	}
	bw := w.c.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	w.written += int64(n)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err == nil {
		err = tooLong
	}
	return n, err
}

// FlushError sends what is buffered to the client (http.ResponseController).
func (w *h1response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.c.bw.Flush()
}

// Flush implements http.Flusher.
func (w *h1response) Flush() { w.FlushError() }

// Hijack hands the connection to a protocol upgrade (ReverseProxy, for a
// 101 answer). The connection reads what the client sent beyond the
// request first; it is no longer the Server's to close.
func (w *h1response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.wroteHeader {
		return nil, nil, errors.New("proxy: hijack after the response was written")
	}
	c := w.c
	s := c.srv
	s.mu.Lock()
	ok := c.state.CompareAndSwap(connActive, connHijacked)
	if ok {
		delete(s.conns, c)
	}
	s.mu.Unlock()
	if !ok {
		return nil, nil, net.ErrClosed
	}
	c.tc.SetDeadline(time.Time{})
	hc := &hijackedConn{Conn: c.tc, br: c.br}
	// The connection's own writer sets a deadline on every write; the
	// tunnel's writes must not inherit one. It holds nothing yet: the
	// response has not begun.
	c.bw.Reset(nil)
	writers.Put(c.bw)
	c.bw = nil
	return hc, bufio.NewReadWriter(c.br, bufio.NewWriterSize(hc, 4<<10)), nil
}

// hijackedConn is a hijacked connection that first returns the bytes
// already buffered from it.
type hijackedConn struct {
	*tls.Conn
	br *bufio.Reader
}

func (h *hijackedConn) Read(p []byte) (int, error) {
	if h.br.Buffered() > 0 {
		return h.br.Read(p)
	}
	return h.Conn.Read(p)
}

// finish completes the response after the handler returned and reports
// whether it reached the client whole.
func (w *h1response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				writeField(bw, k, headerValue(v))
			}
		}
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
				for _, v := range vv {
					writeField(bw, name, headerValue(v))
				}
			}
		}
		bw.WriteString("\r\n")
	}
	if w.length >= 0 && !w.bodyless && w.written < w.length {
		w.closeAfter = true // short body: only closing tells the client
	}
	return bw.Flush() == nil
}
