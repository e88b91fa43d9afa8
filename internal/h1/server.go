package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// Options configure a Server.
type Options struct {
	// Handler answers every request the server does not refuse itself.
	Handler http.Handler
	// MaxHeaderBytes bounds a request's head (request line and headers;
	// for HTTP/2 the header list as HPACK counts it); a longer one is
	// answered 431.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's head.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a connection,
	// each read of a request body and each write of a response.
	IdleTimeout time.Duration
	// ErrorLog receives what the server cannot attribute to a request
	// (a handler's panic; HTTP/2 protocol errors).
	ErrorLog *log.Logger
	// ConnContext, if set, derives the base context of a connection's
	// requests from its net.Conn, as http.Server.ConnContext does.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// Refused, if set, is told of each request the server answers itself
	// without calling Handler (400, 417, 431, 501, 505). It runs on the
	// connection's goroutine, after the answer was written.
	Refused func(Refusal)
}

// Refusal describes a request the server refused.
type Refusal struct {
	// Conn is the connection the request came on.
	Conn net.Conn
	// Ctx is the connection's context (see Options.ConnContext).
	Ctx context.Context
	// Status is the status the server answered.
	Status int
	// Reason says what was wrong, without quoting the client.
	Reason string
	// Request is what could be parsed of the request; nil when even the
	// head could not be. Its header and body are not to be used.
	Request *http.Request
}

// H2HeaderCeiling returns the largest HTTP/2 header field the server
// decodes for a MaxHeaderBytes of max: longer fields end the connection,
// header lists between max and the ceiling get 431. Four times max, at
// least 1 MiB, so that a single oversized header (a cookie jar, a token)
// is answered, while what one connection can make the decoder hold stays
// bounded.
func H2HeaderCeiling(limit int) int {
	return min(max(4*limit, 1<<20), 64<<20)
}

// Server serves the connections a listener accepts with a Handler:
// HTTP/2 connections (TLS with ALPN "h2") through net/http's HTTP/2
// server writing to an h2conn, HTTP/1.1 connections itself. Cloudflare reaches origins over HTTP/1.1 by default
// and keeps those connections busy, so that path is the one to make cheap:
// one goroutine per connection, no background reader or cancellable
// context per request (net/http has both), and no read or write buffer
// held while a connection waits for its next request.
type Server struct {
	opts Options
	// h2base holds the HTTP/2 server's limits and timeouts; h2 serves
	// each HTTP/2 connection with them (see serveH2). x/net deprecates its
	// Server for http.Server's own HTTP/2, but only its ServeConn serves a
	// connection of ours (h2conn): http.Server serves HTTP/2 over TLS on a
	// *tls.Conn alone. With Go 1.27 it drives net/http's server.
	h2base *http.Server
	//lint:ignore SA1019 ServeConn on our own net.Conn (see above)
	h2 *http2.Server

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*h1conn]struct{}
	h2conns  map[*h2conn]struct{}
	shutting atomic.Bool
	workers  *h2workers // run HTTP/2 handlers (see h2workers.go)
	// baseCtx is every HTTP/1.1 connection's first context. Its
	// ServerContextKey makes ReverseProxy abort (panic with
	// ErrAbortHandler) when copying a response body fails, as it does
	// under net/http; the connection is then closed without completing
	// the response, so a truncated body never looks whole.
	baseCtx context.Context
}

// NewServer returns a Server; opts.Handler must be set.
func NewServer(opts Options) *Server {
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	s := &Server{opts: opts, conns: map[*h1conn]struct{}{}, h2conns: map[*h2conn]struct{}{}, workers: newH2workers()}
	s.h2base = &http.Server{
		// The HPACK decoder refuses (GOAWAY) any field longer than the
		// header list limit: let it decode up to the ceiling and answer
		// lists over MaxHeaderBytes 431 in h2Handler. net/http adds a
		// little slack of its own to this figure.
		MaxHeaderBytes:    H2HeaderCeiling(opts.MaxHeaderBytes),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		ErrorLog:          opts.ErrorLog,
	}
	s.baseCtx = context.WithValue(context.Background(), http.ServerContextKey, s.h2base)
	s.h2 = &http2.Server{} //lint:ignore SA1019 see Server.h2base
	//lint:ignore SA1019 see Server.h2base
	if err := http2.ConfigureServer(s.h2base, s.h2); err != nil {
		// Only a TLS configuration without HTTP/2's ciphers fails, and
		// h2base has none.
		panic("h1: configuring the HTTP/2 server: " + err.Error())
	}
	return s
}

// Serve accepts connections from l until it fails or the Server is shut
// down; then it returns http.ErrServerClosed. A TLS connection (a
// *tls.Conn, or a listener's own type wrapping one: see tlsConn) must have
// completed its handshake; one that negotiated "h2" is served HTTP/2,
// every other connection HTTP/1.1. Handlers and hooks see the connection
// l returned, whichever protocol serves it.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = l
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			return err
		}
		var cs *tls.ConnectionState
		if tc, ok := c.(tlsConn); ok {
			st := tc.ConnectionState()
			if st.NegotiatedProtocol == "h2" {
				go s.serveH2(tc)
				continue
			}
			cs = &st
		}
		go s.ServeConn(c, cs)
	}
}

// ServeConn serves HTTP/1.1 on c until it closes, and closes it; cs is the
// TLS state requests report (nil: none). Serve calls it for each
// connection it does not hand to HTTP/2.
func (s *Server) ServeConn(c net.Conn, cs *tls.ConnectionState) {
	s.serveH1(c, cs)
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish, and returns when all connections are closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	wait := time.Millisecond
	for s.closeIdle()+s.h2count() > 0 {
		// GOAWAY to every HTTP/2 connection (once each; again on each
		// round for one accepted while the first went out); each closes
		// once its streams are done.
		s.h2base.Shutdown(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
	s.workers.close()
	return nil
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.stop()
	s.mu.Lock()
	for c := range s.conns {
		c.state.Store(connClosed)
		c.nc.Close()
	}
	for c := range s.h2conns {
		c.closeNow()
	}
	s.mu.Unlock()
	s.workers.close()
	return nil
}

func (s *Server) stop() {
	s.mu.Lock()
	s.shutting.Store(true)
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
}

// closeIdle closes the HTTP/1.1 connections waiting for a request and
// returns how many remain.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) ||
			(time.Since(c.born) > newConnGrace && c.state.CompareAndSwap(connNew, connClosed)) {
			c.nc.Close()
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

// tlsConn is what the engine needs of a TLS connection: its state and
// the socket under it (to abort without close_notify). A *tls.Conn is
// one; a listener may return its own type wrapping one.
type tlsConn interface {
	net.Conn
	ConnectionState() tls.ConnectionState
	NetConn() net.Conn
}

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

// WatchDelay is how long a request read whole may wait for its answer
// before the server starts watching its client for a disconnect (which
// cancels the connection's context). Most requests are answered sooner
// and never cost a watching goroutine.
const WatchDelay = 100 * time.Millisecond

// h1conn is one HTTP/1.1 connection. Between requests it holds no buffers:
// it waits for the first byte of the next request with a one-byte read,
// then borrows a reader and a writer from pools for that request.
type h1conn struct {
	srv    *Server
	nc     net.Conn
	ctx    *connCtx
	remote string
	tls    *tls.ConnectionState
	born   time.Time
	state  atomic.Int32
	// linger: close with a lingering close, since the client may still be
	// sending (a body we did not read, a head we refused).
	linger bool

	peek   [1]byte
	peeked bool
	// The idle hand-off (see serve): whether a request has been served,
	// and, for the goroutine that resumes a handed-off wait (which never
	// hands off again), the wait's end.
	served, resuming bool
	idleUntil        time.Time
	waitErr          error // how resume's wait ended

	lr   headReader // under br: bounds and records the request head
	br   *bufio.Reader
	bw   *bufio.Writer
	out  connWriter  // under bw: bounds every write
	body *bodyReader // the current request's body; nil: none
	w    h1response  // reused for every request

	// Watching the client while a request waits for its answer. watchMu
	// guards arming and disarming: a transport may read the request body
	// (and so arm the watch) in a goroutine of its own.
	watchMu    sync.Mutex
	watchTimer *time.Timer // created on first use, reused until the idle hand-off
	watchArmed bool
	answered   bool          // the final answer began: no more watching
	watchStop  atomic.Bool   // set by unwatch before it interrupts the read
	watchDone  chan struct{} // the watcher's read has ended
	watchByte  [1]byte
	watchGot   bool // the watcher read a byte of the next request
	gone       bool // the watcher saw the client go away
}

// Read feeds the byte that ended the idle wait (or that the watcher
// read), then the connection.
func (c *h1conn) Read(p []byte) (int, error) {
	if c.peeked && len(p) > 0 {
		c.peeked = false
		p[0] = c.peek[0]
		return 1, nil
	}
	return c.nc.Read(p)
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	headers = sync.Pool{New: func() any { return make(http.Header) }}
)

func (s *Server) serveH1(nc net.Conn, cs *tls.ConnectionState) {
	c := &h1conn{srv: s, nc: nc, remote: nc.RemoteAddr().String(), tls: cs, born: time.Now()}
	c.lr.r = c
	c.lr.n = -1
	c.out.c = c
	ctx := s.baseCtx
	if s.opts.ConnContext != nil {
		ctx = s.opts.ConnContext(ctx, nc)
	}
	// One cancellable context per connection, not per request: it is
	// cancelled when the client went away, which ends the connection, or
	// when the connection ends.
	c.ctx = newConnCtx(ctx)
	if !s.track(c) {
		nc.Close()
		return
	}
	c.serve(s.opts.ReadHeaderTimeout)
}

// idleHandoff is how long a connection waits for its next request on the
// goroutine that served the last one. Serving grew that goroutine's stack
// to 8 KiB; a connection idle for longer waits on a new goroutine, whose
// stack stays at Go's smallest, 2 KiB, while it waits (see resume), and
// the grown one goes back to serve other connections. Idle keep-alive
// connections are most of what a busy origin holds (Cloudflare keeps them
// open), and the stack was a quarter of each one's memory.
const idleHandoff = 100 * time.Millisecond

// serve runs the connection's request loop, waiting up to wait for the
// first request, until the connection ends, or until it has waited
// idleHandoff for its next request: then it continues in a new goroutine
// (the same loop, the rest of the idle timeout) and returns.
func (c *h1conn) serve(wait time.Duration) {
	s, nc := c.srv, c.nc
	handedOff := false
	defer func() {
		if handedOff {
			return // the new goroutine owns the connection
		}
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			s.logf("http: panic serving %s: %v\n%s", c.remote, p, debug.Stack())
		}
		c.unwatch()
		c.ctx.cancel() // the connection is done: so are its requests
		if c.state.Load() != connHijacked {
			c.releaseBuffers()
			switch {
			case p != nil:
				// No close_notify: to a client reading a body that ends
				// with the connection (HTTP/1.0), a clean close would
				// make a cut-off body look whole.
				if tc, ok := nc.(tlsConn); ok {
					tc.NetConn().Close()
				} else {
					nc.Close()
				}
			case c.linger:
				lingerClose(nc)
			default:
				nc.Close()
			}
		}
		s.untrack(c)
	}()
	for {
		ok, handoff := c.next(wait)
		if handoff {
			handedOff = true
			go c.resume()
			return
		}
		if !ok || !c.serveRequest() || s.shutting.Load() {
			return
		}
		wait = s.opts.IdleTimeout
		c.served = true
	}
}

// readWaiter is a connection that can wait for the client's next bytes
// without reading them, in less stack than a read takes
// (tlsconfig.Conn). WaitReadable returns nil when a read may proceed, or
// the error (a timeout, a close) that ends the wait.
type readWaiter interface{ WaitReadable() error }

// resume continues a handed-off idle wait on the new goroutine: first on a
// shallow stack where the connection offers one (so that the goroutine,
// parked for most of a keep-alive connection's life, stays at its first,
// smallest stack), then in serve, which reads on.
func (c *h1conn) resume() {
	// The watch's timer and channel are made again if another request
	// comes; a connection that idles holds neither.
	c.watchMu.Lock()
	if !c.watchArmed {
		c.watchTimer, c.watchDone = nil, nil
	}
	c.watchMu.Unlock()
	c.nc.SetReadDeadline(c.idleUntil) // the rest of the idle timeout
	if w, ok := c.nc.(readWaiter); ok {
		c.waitErr = w.WaitReadable()
	}
	c.serve(0)
}

// next waits up to wait for the next request to begin and reports whether
// one did; or, on a connection that has served a request, that it has
// waited idleHandoff and the rest of the wait belongs to a new goroutine
// (see serve). After a hand-off, next continues the wait it began.
func (c *h1conn) next(wait time.Duration) (ok, handoff bool) {
	c.releaseBuffers() // the reader stays if it holds a pipelined request
	if c.br == nil && !c.peeked {
		until, early := c.idleUntil, false
		if c.resuming {
			c.resuming = false
			if c.waitErr != nil || c.state.Load() != connIdle {
				return false, false // the wait ended, or Shutdown closed it
			}
		} else {
			if !c.state.CompareAndSwap(connActive, connIdle) && c.state.Load() != connNew {
				return false, false
			}
			// One clock read per idle wait, on the keep-alive path.
			now := time.Now()
			until = time.Time{}
			if wait > 0 {
				until = now.Add(wait)
			}
			first := until
			if early = c.served && (wait <= 0 || wait > 2*idleHandoff); early {
				first = now.Add(idleHandoff)
			}
			c.nc.SetReadDeadline(first) // resume set it after a hand-off
			if c.served {
				// As in Transport.exchange: the answer has only just
				// gone out, so a read now would find nothing (EAGAIN)
				// and park. After the other ready connections have run,
				// a busy client's next request has usually arrived.
				runtime.Gosched()
			}
		}
		if n, err := c.nc.Read(c.peek[:]); n == 0 {
			if ne, isNet := err.(net.Error); early && isNet && ne.Timeout() {
				// A timeout is not sticky in crypto/tls: the new
				// goroutine reads on.
				c.idleUntil, c.resuming = until, true
				return false, true
			}
			return false, false
		}
		c.peeked = true
	}
	if !c.state.CompareAndSwap(connIdle, connActive) && !c.state.CompareAndSwap(connNew, connActive) &&
		c.state.Load() != connActive {
		return false, false
	}
	c.nc.SetReadDeadline(deadline(c.srv.opts.ReadHeaderTimeout))
	return true, false
}

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// releaseBuffers returns the connection's buffers to their pools (the
// reader only when it holds nothing more to parse) and lets go of the last
// request, so that a connection waiting for its next one holds neither.
func (c *h1conn) releaseBuffers() {
	c.w.req, c.w.trailers, c.body = nil, nil, nil
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
	c.lr.start(c.br, int64(s.opts.MaxHeaderBytes))
	req, err := http.ReadRequest(c.br)
	hitLimit := c.lr.n == 0
	readErr := c.lr.err
	facts := scanHead(c.lr.stop(c.br))
	c.lr.release()
	if err != nil {
		switch {
		case hitLimit:
			c.refuse(nil, http.StatusRequestHeaderFieldsTooLarge, "request head too large")
		case readErr != nil:
			// The client closed the connection or stalled mid-head.
		case facts.unknownCoding():
			c.refuse(nil, http.StatusNotImplemented, "unsupported transfer coding")
		default:
			// The parser's message may quote what the client sent:
			// not echoed back, as under net/http.
			c.refuse(nil, http.StatusBadRequest, "malformed request")
		}
		return false
	}
	if status, msg := checkRequest(req, &facts); status != 0 {
		c.refuse(req, status, msg)
		return false
	}
	if req.Method == "OPTIONS" && req.RequestURI == "*" {
		// About the server, not a resource: answered here, as net/http does.
		c.bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		if c.bw.Flush() != nil || req.Close || req.Body != http.NoBody {
			c.linger = req.Body != http.NoBody
			return false
		}
		return true
	}
	// The head's deadline stays: nothing reads from the connection
	// before the next request's wait sets its own, except the body
	// reader, the watcher and a hijack, which set theirs.
	expect := false
	if e, ok := req.Header["Expect"]; ok {
		if len(e) != 1 || !strings.EqualFold(e[0], "100-continue") {
			c.refuse(req, http.StatusExpectationFailed, "unsupported expectation")
			return false
		}
		// Answer "100 Continue" ourselves when the body is first read,
		// as net/http does; the app gets a plain request with a body.
		delete(req.Header, "Expect")
		expect = req.ProtoAtLeast(1, 1)
	}
	c.body = nil
	if req.Body != http.NoBody {
		c.body = &bodyReader{c: c, r: req.Body, expect: expect}
		req.Body = c.body
	}
	req.RemoteAddr = c.remote
	req.TLS = c.tls
	req = req.WithContext(c.ctx)

	w := &c.w
	w.reset(c, req)
	c.answered = false // no other goroutine has the request yet
	if req.Body == http.NoBody {
		c.watch() // the request is whole: it waits for its answer from now on
	}
	s.opts.Handler.ServeHTTP(w, req)
	c.unwatch()
	if c.state.Load() == connHijacked {
		return false
	}
	if !w.finish() || c.gone {
		return false
	}
	if req.Body != http.NoBody {
		if w.closeAfter {
			c.body.mu.Lock()
			c.linger = !c.body.eof // no use reading what the next request will not follow
			c.body.mu.Unlock()
			return false
		}
		if !c.drainBody() {
			c.linger = true
			return false
		}
	}
	return !w.closeAfter
}

// watch starts watching the client, WatchDelay from now, while the
// request waits for its answer: if the client goes away, the connection's
// context is cancelled, and with it what the handler does for it. Not
// when the client has pipelined a request already: its bytes are the
// next request's, and a client that sent one is not gone.
func (c *h1conn) watch() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watchArmed || c.answered || (c.br != nil && c.br.Buffered() > 0) || c.peeked {
		return
	}
	c.watchArmed = true
	c.watchStop.Store(false)
	if c.watchTimer == nil {
		c.watchDone = make(chan struct{}, 1)
		c.watchTimer = time.AfterFunc(WatchDelay, c.watchClient)
		return
	}
	c.watchTimer.Reset(WatchDelay)
}

// watchClient runs in the timer's goroutine: it reads from the connection
// until unwatch interrupts it, the client sends a byte (kept for the next
// request) or the client goes away.
func (c *h1conn) watchClient() {
	c.nc.SetReadDeadline(time.Time{})
	if !c.watchStop.Load() {
		n, err := c.nc.Read(c.watchByte[:])
		switch {
		case n > 0:
			c.watchGot = true
		case !isTimeout(err):
			c.gone = true
			c.ctx.cancel()
		}
	}
	c.watchDone <- struct{}{}
}

// unwatch stops watching the client, waiting for the watcher if it has
// begun to read.
func (c *h1conn) unwatch() { c.stopWatching(false) }

// stopWatching is unwatch; answered: for good, for this request.
func (c *h1conn) stopWatching(answered bool) {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if answered {
		c.answered = true
	}
	if !c.watchArmed {
		return
	}
	c.watchArmed = false
	if c.watchTimer.Stop() {
		return // it never ran
	}
	c.watchStop.Store(true)
	c.nc.SetReadDeadline(time.Unix(1, 0))
	<-c.watchDone
	if c.watchGot {
		c.watchGot = false
		c.peek[0] = c.watchByte[0]
		c.peeked = true
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// drainBody reads what the handler left of the request body, within
// maxDrain and drainTimeout, so the connection can carry the next request.
func (c *h1conn) drainBody() bool {
	b := c.body
	b.readMu.Lock() // waits for a read still in progress in another goroutine
	b.mu.Lock()
	eof, expect := b.eof, b.expect
	b.mu.Unlock()
	b.deadline = time.Now().Add(drainTimeout)
	b.readMu.Unlock()
	if eof {
		return true
	}
	if expect {
		return false // the client was never told to send it; it may yet
	}
	n, err := io.CopyN(io.Discard, bodyDrain{b}, maxDrain+1)
	b.mu.Lock()
	defer b.mu.Unlock()
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
// say whether the connection survives (and the client be watched). Close
// only ends the handler's reading: what is left is the server's to drain,
// within its bounds.
//
// A transport may read the body in a goroutine of its own (an HTTP/2
// client does), even after RoundTrip returned: reads are serialised, the
// state the response depends on is guarded, and each request with a body
// has a bodyReader of its own, so a late read never meets the next
// request's.
type bodyReader struct {
	c      *h1conn
	r      io.ReadCloser
	closed atomic.Bool

	readMu   sync.Mutex // held through a read
	deadline time.Time  // for draining: one deadline for all reads (under readMu)

	mu     sync.Mutex // guards what follows, and orders "100 Continue" before the response
	n      int64      // bytes read
	eof    bool
	expect bool // "100 Continue" is owed before the first read
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	n, draining, err := b.readDraining(p)
	if err == io.EOF && !draining {
		b.c.watch() // read whole: from now on the request waits for its answer
	}
	return n, err
}

func (b *bodyReader) read(p []byte) (int, error) {
	n, _, err := b.readDraining(p)
	return n, err
}

// readDraining reads, and reports whether the server is draining.
func (b *bodyReader) readDraining(p []byte) (int, bool, error) {
	b.readMu.Lock()
	defer b.readMu.Unlock()
	draining := !b.deadline.IsZero()
	c := b.c
	b.mu.Lock()
	if b.eof {
		b.mu.Unlock()
		return 0, draining, io.EOF
	}
	if b.expect {
		if c.w.wroteHeader {
			b.mu.Unlock()
			return 0, draining, io.EOF // answered already: the client need not send it
		}
		b.expect = false
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.bw.Flush(); err != nil {
			b.mu.Unlock()
			return 0, draining, err
		}
	}
	b.mu.Unlock()
	switch t := c.srv.opts.IdleTimeout; {
	case draining:
		c.nc.SetReadDeadline(b.deadline)
	case t > 0:
		c.nc.SetReadDeadline(time.Now().Add(t))
	}
	n, err := b.r.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	b.mu.Unlock()
	return n, draining, err
}

func (b *bodyReader) Close() error {
	b.closed.Store(true)
	return nil
}

// unreadLeft reports whether closing the connection after the response
// leaves client data unread: a body not read to its end that is too large
// to drain, or that the client was never asked to send. b.mu is held.
func (b *bodyReader) unreadLeft(req *http.Request) bool {
	if b.eof {
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
		w.c.nc.SetWriteDeadline(time.Now().Add(t))
	}
	return w.c.nc.Write(p)
}

// lingerClose closes a connection the client may still be sending on
// (a body we did not read, a head we refused) without losing the
// response: close_notify, then the lingering close of the socket under
// it when it has one (a LingerClose method, as the accepting listener may
// provide), so the client reads the answer rather than a reset. A
// connection with its own LingerClose does both itself.
func lingerClose(nc net.Conn) {
	if l, ok := nc.(interface{ LingerClose() }); ok {
		l.LingerClose()
		return
	}
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		tc.CloseWrite() // close_notify; crypto/tls bounds the write itself
		raw = tc.NetConn()
	}
	if l, ok := raw.(interface{ LingerClose() }); ok {
		l.LingerClose()
		return
	}
	nc.Close()
}

// checkRequest applies the checks net/http's server makes after parsing a
// request, and those nginx makes beyond them; it returns the status to
// refuse the request with (0: none) and why.
func checkRequest(req *http.Request, f *headFacts) (int, string) {
	if req.ProtoMajor != 1 {
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version"
	}
	if msg := f.framingError(req.ProtoMinor); msg != "" {
		// RFC 9112 6.3: a server MUST close the connection after such a
		// request; nginx answers 400.
		return http.StatusBadRequest, msg
	}
	if f.unknownCoding() {
		return http.StatusNotImplemented, "unsupported transfer coding"
	}
	if !validMethod(req.Method) {
		return http.StatusBadRequest, "malformed method"
	}
	if msg := checkTarget(req); msg != "" {
		return http.StatusBadRequest, msg
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		return http.StatusBadRequest, "missing required Host header"
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return http.StatusBadRequest, "malformed Host header"
	}
	// Values need no second look: net/textproto refuses invalid bytes in
	// them while parsing. Names it lets through with a space (for old
	// clients), which net/http's server refuses, and so do we.
	if badFieldName(req.Header) != "" {
		return http.StatusBadRequest, "invalid header name"
	}
	return 0, ""
}

// validMethod applies nginx's rule: upper-case letters, '-' and '_'.
// (RFC 9110 allows any token; every registered method fits the rule.)
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if c := m[i]; (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false
		}
	}
	return m != ""
}

// checkTarget returns what is wrong with the request-target ("" for
// nothing): only origin-form, absolute-form with an http or https scheme
// and a host but no userinfo, and "*" for OPTIONS are served; CONNECT
// (authority-form) is not a proxy's to serve here.
func checkTarget(req *http.Request) string {
	u := req.URL
	switch {
	case req.Method == "CONNECT":
		return "CONNECT is not served"
	case req.RequestURI == "*":
		if req.Method != "OPTIONS" {
			return "asterisk-form outside OPTIONS"
		}
	case strings.HasPrefix(req.RequestURI, "/"):
	case u.Scheme != "":
		// Absolute-form: its host is the request's (net/http made it
		// req.Host, ignoring any Host field, as RFC 9112 3.2.2 says).
		if !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https") {
			return "unsupported scheme in request-target"
		}
		if u.User != nil || u.Host == "" || u.Opaque != "" {
			return "malformed absolute-form request-target"
		}
	default:
		return "malformed request-target"
	}
	return ""
}

// refuse answers a request that never reaches the handler, and the
// connection is closed after it. req is what was parsed (nil: nothing).
func (c *h1conn) refuse(req *http.Request, status int, reason string) {
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	bw := c.bw
	bw.WriteString("HTTP/1.1 " + text + "\r\n")
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(text)+1) + "\r\n\r\n" + text + "\n")
	bw.Flush()
	c.linger = true
	if f := c.srv.opts.Refused; f != nil {
		if req != nil {
			req.RemoteAddr = c.remote
			req.TLS = c.tls
			req.Body = http.NoBody
		}
		f(Refusal{Conn: c.nc, Ctx: c.ctx, Status: status, Reason: reason, Request: req})
	}
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
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	bw := w.c.bw
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once; the final response follows.
		if w.req.ProtoAtLeast(1, 1) {
			if b := w.c.body; b != nil {
				b.mu.Lock() // not in the middle of a "100 Continue"
				defer b.mu.Unlock()
			}
			writeStatusLine(bw, code)
			writeFields(bw, w.header, framingOf1xx)
			bw.WriteString("\r\n")
			bw.Flush()
		}
		return
	}
	w.c.stopWatching(true)
	unreadLeft := false
	if b := w.c.body; b != nil {
		b.mu.Lock() // "100 Continue" goes before this or never
		w.wroteHeader = true
		unreadLeft = b.unreadLeft(w.req)
		b.mu.Unlock()
	} else {
		w.wroteHeader = true
	}
	w.status = code
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
				if k = strings.TrimSpace(k); k != "" && httpguts.ValidHeaderFieldName(k) {
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
	if w.c.srv.shutting.Load() || unreadLeft || hasClose(h["Connection"]) {
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

// hasClose reports a "close" among Connection values the handler set, as
// net/http honours it.
func hasClose(v []string) bool {
	for _, s := range v {
		for _, tok := range strings.Split(s, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "close") {
				return true
			}
		}
	}
	return false
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
		return nil, nil, errors.New("h1: hijack after the response was written")
	}
	c := w.c
	c.stopWatching(true)
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
	c.nc.SetDeadline(time.Time{})
	if ka, ok := c.nc.(interface{ KeepAlive() error }); ok {
		// A listener may leave TCP keep-alive off (aopguard's does): HTTP
		// ends idle connections itself, but a tunnel can idle for hours
		// and needs the probes to notice a peer that vanished.
		ka.KeepAlive()
	}
	if c.br == nil {
		c.br = readers.Get().(*bufio.Reader)
		c.br.Reset(&c.lr)
	}
	hc := &hijackedConn{Conn: c.nc, r: c.br}
	// The connection's own writer sets a deadline on every write; the
	// tunnel's writes must not inherit one. It holds nothing yet: the
	// response has not begun.
	c.bw.Reset(nil)
	writers.Put(c.bw)
	c.bw = nil
	return hc, bufio.NewReadWriter(c.br, bufio.NewWriterSize(hc, 4<<10)), nil
}

// hijackedConn is a hijacked connection that first returns the bytes
// already buffered from it (and a byte peeked).
type hijackedConn struct {
	net.Conn
	r *bufio.Reader
}

func (h *hijackedConn) Read(p []byte) (int, error) { return h.r.Read(p) }

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

// connContextKey holds an HTTP/2 request's net.Conn, for Refused.
type connContextKey struct{}

// h2Handler applies to HTTP/2 requests the limits net/http's server
// cannot apply without tearing the connection down, then calls Handler.
type h2Handler struct{ s *Server }

func (h h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	status, reason := 0, ""
	switch {
	case headerListSize(r) > s.opts.MaxHeaderBytes:
		status, reason = http.StatusRequestHeaderFieldsTooLarge, "request header list too large"
	case r.Method == "CONNECT":
		status, reason = http.StatusBadRequest, "CONNECT is not served"
	}
	if status == 0 {
		s.workers.serve(s.opts.Handler, w, r)
		return
	}
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, text+"\n")
	if f := s.opts.Refused; f != nil {
		c, _ := r.Context().Value(connContextKey{}).(net.Conn)
		f(Refusal{Conn: c, Ctx: r.Context(), Status: status, Reason: reason, Request: r})
	}
}

// headerListSize is a request's header list size as HTTP/2 counts it
// (RFC 9113 6.5.2): each field's name and value plus 32, the
// pseudo-header fields included.
func headerListSize(r *http.Request) int {
	n := len(":method") + len(r.Method) + len(":path") + len(r.RequestURI) +
		len(":authority") + len(r.Host) + len(":scheme") + len("https") + 4*32
	for k, vv := range r.Header {
		for _, v := range vv {
			n += len(k) + len(v) + 32
		}
	}
	return n
}
